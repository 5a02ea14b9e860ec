"""Hashes and Ed25519 signatures."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import DigitalSignature, SecureHash, public_key_bytes, sign, verify
from tests.ledger._helpers import ALICE, ALICE_KEY, BOB, key_from_seed

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=100)


def test_sha256_matches_hashlib_and_prints_as_hex() -> None:
    digest = SecureHash.sha256(b"fibers")
    assert digest.bytes == hashlib.sha256(b"fibers").digest()
    assert str(digest) == hashlib.sha256(b"fibers").hexdigest()
    assert repr(digest) == f"SecureHash({digest.bytes[:6].hex()}…)"


@FAST
@given(st.binary(min_size=32, max_size=32))
def test_parse_inverts_str_in_either_case(raw: bytes) -> None:
    digest = SecureHash(raw)
    assert SecureHash.parse(str(digest)) == digest
    assert SecureHash.parse(str(digest).upper()) == digest


@pytest.mark.parametrize("text", ["", "abc", "zz" * 32, "00" * 31, "00" * 33, " " + "00" * 32])
def test_parse_refuses_anything_but_64_hex_digits(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        SecureHash.parse(text)


def test_a_hash_is_exactly_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecureHash(b"short")


def test_hashes_order_by_their_bytes() -> None:
    low, high = SecureHash(bytes(32)), SecureHash(b"\x01" + bytes(31))
    assert sorted([high, low]) == [low, high]


def test_public_keys_are_raw_32_bytes_like_party_owning_key() -> None:
    assert public_key_bytes(ALICE_KEY) == ALICE.owning_key
    assert len(ALICE.owning_key) == 32


def test_a_signature_verifies_for_its_data_and_key_only() -> None:
    sig = sign(ALICE_KEY, b"data")
    assert sig.by == ALICE.owning_key
    assert verify(ALICE.owning_key, sig.bytes, b"data")
    assert sig.is_valid(b"data")
    assert not verify(ALICE.owning_key, sig.bytes, b"other data")
    assert not verify(BOB.owning_key, sig.bytes, b"data")


def test_signatures_are_deterministic() -> None:
    assert sign(key_from_seed(9), b"x") == sign(key_from_seed(9), b"x")


@pytest.mark.parametrize("bad", [b"", b"\x00" * 64, b"\x00" * 63, b"\xff" * 65])
def test_a_malformed_signature_is_invalid_not_an_error(bad: bytes) -> None:
    assert not verify(ALICE.owning_key, bad, b"data")
    assert not DigitalSignature(ALICE.owning_key, bad).is_valid(b"data")


@pytest.mark.parametrize("key", [b"", b"\x01" * 31, b"\x01" * 33])
def test_a_malformed_public_key_is_a_clear_value_error(key: bytes) -> None:
    sig = sign(ALICE_KEY, b"data")
    with pytest.raises(ValueError, match="32 raw bytes"):
        verify(key, sig.bytes, b"data")


def test_keys_loaded_once_still_verify_only_their_own_signatures() -> None:
    """Key objects are kept per raw key (``ledger._crypto._loaded_key``): a key loaded before
    verifies exactly as a fresh one, and never another key's signature."""
    keys = [key_from_seed(seed) for seed in range(20, 26)]
    sigs = [sign(key, b"tx id") for key in keys]
    for _ in range(2):  # the second round uses the loaded keys
        for i, key in enumerate(keys):
            for j, sig in enumerate(sigs):
                assert verify(public_key_bytes(key), sig.bytes, b"tx id") is (i == j)
            assert not verify(public_key_bytes(key), sigs[i].bytes, b"another tx id")
