"""Every ledger type crosses the wire intact, and canonically (``encode(decode(b)) == b``)."""

from __future__ import annotations

import pickle
import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers._wire import decode, encode
from ledger import (
    Command,
    ContractRejection,
    FilteredTransaction,
    InvalidNotary,
    MalformedTransactionException,
    SecureHash,
    SignatureInvalidException,
    SignaturesMissingException,
    SignedTransaction,
    StateAndRef,
    StateRef,
    TimeWindow,
    TransactionResolutionException,
    TransactionState,
    TransactionVerificationException,
    UniqueIdentifier,
    UnknownContract,
    sign,
)
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    DUMMY,
    NOON,
    NOTARY,
    SALT,
    DummyContract,
    DummyState,
    Ledger,
    issue,
    move,
)

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=60)
TXHASH = SecureHash.sha256(b"tx")
REF = StateRef(TXHASH, 1)


def _signed_move() -> tuple[Ledger, SignedTransaction]:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 3, salt=SALT))
    builder = move([source.tx.out_ref(0)], BOB, salt=SALT)
    builder.set_time_window(TimeWindow.between(NOON, NOON + timedelta(hours=1)))
    return ledger, builder.sign_with(ALICE_KEY)


def _values() -> list[object]:
    ledger, stx = _signed_move()
    ltx = stx.to_ledger_transaction(ledger.resolve)
    wtx = stx.tx
    return [
        TXHASH, sign(ALICE_KEY, b"data"), REF, UniqueIdentifier("x", uuid.UUID(int=5)),
        DummyState(ALICE, 5), TransactionState(DummyState(ALICE, 5), DUMMY, NOTARY),
        StateAndRef(TransactionState(DummyState(ALICE, 5), DUMMY, NOTARY), REF),
        Command(DummyContract.Move(), (ALICE.owning_key, BOB.owning_key)),
        TimeWindow.between(NOON, NOON + timedelta(hours=1)), TimeWindow.until_only(NOON),
        wtx, stx, ltx, wtx.filtered({"inputs", "notary", "time_window"}),
    ]


@pytest.mark.parametrize("value", _values(), ids=lambda v: type(v).__name__)
def test_ledger_values_round_trip_canonically(value: object) -> None:
    data = encode(value)
    back = decode(data)
    assert back == value
    assert type(back) is type(value)
    assert encode(back) == data


def test_a_decoded_transaction_has_the_same_id_and_still_verifies() -> None:
    ledger, stx = _signed_move()
    back = decode(encode(stx))
    assert isinstance(back, SignedTransaction)
    assert back.id == stx.id
    back.verify_signatures(except_keys={NOTARY.owning_key})
    back.verify(ledger.resolve, except_keys={NOTARY.owning_key})


def test_signed_transactions_survive_a_checkpoint_with_their_ids() -> None:
    _, stx = _signed_move()
    assert stx.id is not None  # cached before pickling
    back = pickle.loads(pickle.dumps(stx))
    assert back == stx
    assert back.id == stx.id


def test_a_decoded_filtered_transaction_verifies() -> None:
    _, stx = _signed_move()
    back = decode(encode(stx.tx.filtered({"inputs", "notary"})))
    assert isinstance(back, FilteredTransaction)
    assert back.verify()


def _exceptions() -> list[TransactionVerificationException]:
    return [
        ContractRejection(TXHASH, DUMMY, "Failed requirement: x"),
        UnknownContract(TXHASH, "nowhere:Nothing"),
        InvalidNotary(TXHASH, "output 0 differs"),
        TransactionResolutionException(TXHASH, REF),
        SignaturesMissingException([ALICE.owning_key], ["Alice (key 00…)"], TXHASH),
        SignatureInvalidException(TXHASH, ALICE.owning_key, "Alice"),
        MalformedTransactionException(TXHASH, "no notary"),
    ]


@pytest.mark.parametrize("exc", _exceptions(), ids=lambda e: type(e).__name__)
def test_verification_errors_cross_the_wire_and_checkpoints_intact(
    exc: TransactionVerificationException,
) -> None:
    for back in (decode(encode(exc)), pickle.loads(pickle.dumps(exc))):
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert vars(back) == vars(exc)
        assert isinstance(back, TransactionVerificationException)
        assert back.tx_id == TXHASH


@FAST
@given(st.lists(st.integers(0, 2**70), min_size=1, max_size=5),
       st.binary(min_size=32, max_size=32))
def test_issued_transactions_round_trip_with_their_ids(magics: list[int], salt: bytes) -> None:
    if not any(salt):
        salt = SALT
    stx = issue(ALICE, *magics, salt=salt)
    back = decode(encode(stx))
    assert isinstance(back, SignedTransaction)
    assert back == stx
    assert back.id == stx.id
