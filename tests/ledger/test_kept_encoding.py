"""A transaction is walked once: its id, structure check and wire encoding are kept on the
instance. What a peer sends is still judged by its own content alone."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from fibers import _wire
from fibers.wire import decode, encode
from ledger import (
    ContractRejection,
    LedgerTransaction,
    SignatureInvalidException,
    SignedTransaction,
    WireTransaction,
)
from ledger._crypto import sign
from ledger._merkle import group_hash
from ledger._resolution import checked_transaction
from tests.ledger._helpers import (
    ALICE,
    BOB,
    NOTARY,
    DummyState,
    Ledger,
    issue,
    key_of,
    move,
)


def received(stx: SignedTransaction, data: bytes | None = None) -> SignedTransaction:
    """``stx`` as a peer's copy of it arrives: decoded from (perhaps altered) bytes."""
    value = decode(encode(stx) if data is None else data)
    assert isinstance(value, SignedTransaction)
    return value


def reference_group_hashes(wtx: WireTransaction) -> tuple[bytes, ...]:
    """The group hashes as ``ledger._merkle`` defines them, each component encoded alone."""
    groups = (wtx.inputs, wtx.outputs, wtx.commands,
              () if wtx.notary is None else (wtx.notary,),
              () if wtx.time_window is None else (wtx.time_window,))
    return tuple(group_hash(wtx._nonces(g, len(c)), c).bytes for g, c in enumerate(groups))


def test_the_id_from_the_kept_encoding_is_the_id_of_the_components() -> None:
    stx = issue(ALICE, 3, 4, 5)
    copy = received(stx)
    for wtx in (stx.tx, copy.tx):
        assert tuple(h.bytes for h in wtx.group_hashes) == reference_group_hashes(wtx)
    assert copy.id == stx.id
    assert encode(copy) == encode(stx)


def test_a_tampered_copy_gets_its_own_id_and_the_signatures_refuse_it() -> None:
    stx = issue(ALICE, 12)
    stx.verify_signatures()  # the original's id and encoding are kept from here on
    data = encode(stx)
    assert data.count(b"\xa5magic\x0c") == 1
    forged = received(stx, data.replace(b"\xa5magic\x0c", b"\xa5magic\x0d"))
    assert forged.tx.outputs[0].data.magic == 13  # type: ignore[attr-defined]
    assert forged.sigs == stx.sigs
    assert forged.id != stx.id
    with pytest.raises(SignatureInvalidException):
        forged.verify_signatures()
    assert encode(forged) != data  # it keeps its own bytes, not the original's


def test_a_signed_copy_shares_the_transaction_and_its_kept_encoding() -> None:
    stx = issue(ALICE, 1)
    before = encode(stx)
    signed = stx.with_additional_signature(sign(key_of(BOB), stx.id.bytes))
    assert signed.tx is stx.tx
    assert encode(signed) != before
    assert decode(encode(signed)) == signed
    assert received(signed).id == stx.id


def test_a_restored_transaction_has_the_same_id_and_bytes_without_pickling_them() -> None:
    stx = checked_transaction(received(issue(ALICE, 7)))
    data = encode(stx)
    pickled = pickle.dumps(stx)
    assert encode(stx.tx) not in pickled
    restored = pickle.loads(pickled)
    assert _wire._KEPT not in vars(restored) and _wire._KEPT not in vars(restored.tx)
    assert restored == stx and restored.id == stx.id and encode(restored) == data
    # What is computed on it does not change its pickle (content addressing relies on it).
    fresh = received(stx).tx
    before = pickle.dumps(fresh)
    assert fresh.id == stx.id and fresh.structure_problem() is None and encode(fresh)
    assert pickle.dumps(fresh) == before


def test_a_structure_problem_is_found_on_each_instance() -> None:
    stx = issue(ALICE, 1)
    assert stx.tx.structure_problem() is None
    salt = bytes(32)
    hostile = object.__new__(WireTransaction)
    for field in dataclasses.fields(WireTransaction):
        object.__setattr__(hostile, field.name, getattr(stx.tx, field.name))
    object.__setattr__(hostile, "privacy_salt", salt)
    assert "privacy_salt" in (hostile.structure_problem() or "")


def test_contracts_run_once_per_transaction_and_input_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node verifying the same transaction twice against the same input states (a seller's
    checks, then finality) runs the contracts once; other input states are judged anew."""
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 5))
    stx = move([source.tx.out_ref(0)], BOB).sign_with(key_of(ALICE))
    runs: list[LedgerTransaction] = []
    real_verify = LedgerTransaction.verify

    def counted(ltx: LedgerTransaction) -> None:
        runs.append(ltx)
        real_verify(ltx)

    monkeypatch.setattr(LedgerTransaction, "verify", counted)
    first = stx.tx.verified(ledger.resolve)
    assert stx.tx.verified(ledger.resolve) == first
    stx.verify(ledger.resolve, {NOTARY.owning_key})
    assert len(runs) == 1
    # An equal transaction decoded from the wire is another instance: it is verified itself.
    received(stx).tx.verified(ledger.resolve)
    assert len(runs) == 2
    # The same transaction against another state at its input: the contract refuses it.
    forged = dataclasses.replace(source.tx.outputs[0], data=DummyState(ALICE, 6))
    with pytest.raises(ContractRejection, match="conserves magic"):
        stx.tx.verified(lambda ref: forged)
    assert len(runs) == 3
    assert stx.tx.verified(ledger.resolve) == first  # still accepted for the real input
    assert len(runs) == 3
