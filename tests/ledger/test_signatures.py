"""Signed transactions: valid, missing, wrong-key and tampered signatures."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from fibers._wire import decode, encode
from ledger import (
    DigitalSignature,
    SignatureInvalidException,
    SignaturesMissingException,
    SignedTransaction,
    sign,
)
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    BOB_KEY,
    NOTARY,
    NOTARY_KEY,
    DummyState,
    Ledger,
    issue,
    key_from_seed,
    move,
)


def _move_to_bob() -> SignedTransaction:
    ledger = Ledger()
    source = ledger.record(issue(ALICE, 4))
    return move([source.tx.out_ref(0)], BOB).sign_with(ALICE_KEY)


def test_a_fully_signed_transaction_verifies() -> None:
    stx = _move_to_bob()
    stx = stx.with_additional_signature(sign(NOTARY_KEY, stx.id.bytes))
    stx.verify_required_signatures()
    assert stx.missing_signers == frozenset()


def test_a_signature_over_another_transaction_is_invalid() -> None:
    other = _move_to_bob()  # same content, another random salt: another id
    stx = _move_to_bob().with_additional_signature(sign(NOTARY_KEY, other.id.bytes))
    with pytest.raises(SignatureInvalidException, match="Notary"):
        stx.verify_required_signatures()


def test_a_missing_signature_names_the_key_and_its_party() -> None:
    stx = _move_to_bob()
    assert stx.missing_signers == {NOTARY.owning_key}
    with pytest.raises(SignaturesMissingException) as caught:
        stx.verify_required_signatures()
    key = NOTARY.owning_key
    assert caught.value.missing_keys == {key}
    assert caught.value.descriptions == (f"Notary (key {key[:4].hex()}…)",)
    assert caught.value.tx_id == stx.id
    assert str(caught.value) == (f"transaction {stx.id} is missing signatures by Notary "
                                 f"(key {key[:4].hex()}…)")


def test_keys_of_unknown_parties_are_named_by_prefix_or_by_the_given_names() -> None:
    stranger = key_from_seed(99)
    raw = sign(stranger, b"").by
    stx = issue(ALICE, 1)
    tx = dataclasses.replace(stx.tx, commands=(dataclasses.replace(
        stx.tx.commands[0], signers=(ALICE.owning_key, raw)),))
    unsigned = SignedTransaction(tx, (sign(ALICE_KEY, tx.id.bytes),))
    with pytest.raises(SignaturesMissingException, match=f"by key {raw[:4].hex()}…$"):
        unsigned.verify_signatures()
    with pytest.raises(SignaturesMissingException, match=rf"by Carol \(key {raw[:4].hex()}…\)$"):
        unsigned.verify_signatures(key_names={raw: "Carol"})


def test_except_keys_are_not_required() -> None:
    _move_to_bob().verify_signatures(except_keys={NOTARY.owning_key})


def test_a_signature_by_the_wrong_key_leaves_the_right_one_missing() -> None:
    stx = _move_to_bob()
    by_bob = SignedTransaction(stx.tx, (sign(BOB_KEY, stx.id.bytes),))
    with pytest.raises(SignaturesMissingException) as caught:
        by_bob.verify_signatures(except_keys={NOTARY.owning_key})
    assert caught.value.missing_keys == {ALICE.owning_key}
    assert "Alice" not in caught.value.descriptions[0]  # Alice is no output's participant here


def test_a_signature_claimed_for_another_key_is_invalid_and_named() -> None:
    stx = _move_to_bob()
    forged = DigitalSignature(ALICE.owning_key, sign(BOB_KEY, stx.id.bytes).bytes)
    with pytest.raises(SignatureInvalidException, match=r"signature by key .* does not verify"
                       ) as caught:
        SignedTransaction(stx.tx, (forged,)).verify_signatures()
    assert caught.value.key == ALICE.owning_key


def test_a_malformed_key_in_a_signature_is_an_invalid_signature() -> None:
    stx = _move_to_bob()
    bogus = DigitalSignature(b"short", sign(ALICE_KEY, stx.id.bytes).bytes)
    with pytest.raises(SignatureInvalidException):
        stx.with_additional_signature(bogus).verify_signatures()


def test_changing_a_component_changes_the_id_so_old_signatures_fail() -> None:
    stx = _move_to_bob()
    richer = dataclasses.replace(stx.tx.outputs[0], data=DummyState(BOB, 400))
    tampered = SignedTransaction(dataclasses.replace(stx.tx, outputs=(richer,)), stx.sigs)
    assert tampered.id != stx.id
    with pytest.raises(SignatureInvalidException, match="changed after it was signed"):
        tampered.verify_signatures(except_keys={NOTARY.owning_key})


def test_tampered_wire_bytes_fail_signature_checks() -> None:
    stx = _move_to_bob()
    data = encode(stx)
    original, forged = encode(DummyState(BOB, 4)), encode(DummyState(BOB, 5))
    assert data.count(original) == 1
    tampered = decode(data.replace(original, forged))
    assert isinstance(tampered, SignedTransaction)
    assert tampered.tx.outputs[0].data == DummyState(BOB, 5)
    with pytest.raises(SignatureInvalidException):
        tampered.verify_signatures(except_keys={NOTARY.owning_key})


def test_signers_sign_the_id_bytes() -> None:
    stx = _move_to_bob()
    builder = move([issue(ALICE, 1).tx.out_ref(0)], BOB)
    signed = builder.to_signed_transaction([functools.partial(sign, ALICE_KEY)])
    assert signed.sigs[0].is_valid(signed.id.bytes)
    assert stx.with_additional_signature(stx.sigs[0]) is stx


def test_adding_signatures_keeps_order_and_drops_duplicates() -> None:
    stx = _move_to_bob()
    notary_sig = sign(NOTARY_KEY, stx.id.bytes)
    more = stx.with_additional_signatures([notary_sig, notary_sig, stx.sigs[0]])
    assert more.sigs == (stx.sigs[0], notary_sig)


def test_already_checked_signatures_skip_the_crypto_but_still_count() -> None:
    stx = _move_to_bob()
    forged = DigitalSignature(NOTARY.owning_key, bytes(64))
    with_forged = stx.with_additional_signature(forged)
    with pytest.raises(SignatureInvalidException):
        with_forged.verify_required_signatures()
    # Vouched for by the caller: not verified, yet it satisfies the notary's requirement.
    with_forged.verify_signatures(already_checked={forged})
    # Vouching for one signature does not vouch for the others, nor for missing ones.
    stx.verify_signatures(except_keys={NOTARY.owning_key}, already_checked=set(stx.sigs))
    with pytest.raises(SignaturesMissingException):
        stx.verify_signatures(already_checked=set(stx.sigs))
    tampered = dataclasses.replace(stx.sigs[0], bytes=bytes(64))
    bad = SignedTransaction(stx.tx, (tampered, forged))
    with pytest.raises(SignatureInvalidException):
        bad.verify_signatures(already_checked={forged})
