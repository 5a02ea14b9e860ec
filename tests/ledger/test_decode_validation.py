"""Decoded ledger and finance values are checked as constructed ones are (issue 15).

Each value below is built the way a hostile peer would send it: the fields set directly,
bypassing the constructor, then encoded. Decoding must refuse it with ``SerializationError``
naming the class, never hand a flow an unchecked value.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from fibers import SerializationError
from fibers._wire import decode, encode
from finance import Amount, Cash, Issued
from ledger import SecureHash, StateRef, TimeWindow
from tests.ledger._helpers import ALICE, NOON


def forged(cls: type, **fields: Any) -> bytes:
    """The encoding of a ``cls`` with ``fields``, its constructor never run."""
    instance = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(instance, name, value)
    return encode(instance)


HASH = SecureHash.sha256(b"tx")
TOKEN = Issued(ALICE, b"\x01", "USD")

BAD_VALUES: dict[str, tuple[bytes, str]] = {
    "hash too short": (forged(SecureHash, bytes=b"\x00" * 31), "SecureHash"),
    "hash too long": (forged(SecureHash, bytes=b"\x00" * 33), "SecureHash"),
    "hash not bytes": (forged(SecureHash, bytes="00" * 32), "SecureHash"),
    "time window reversed": (
        forged(TimeWindow, from_time=NOON, until_time=NOON - timedelta(hours=1)), "TimeWindow"),
    "time window empty": (forged(TimeWindow, from_time=None, until_time=None), "TimeWindow"),
    "time window naive": (
        forged(TimeWindow, from_time=NOON.replace(tzinfo=None), until_time=None), "TimeWindow"),
    "state ref index -1": (forged(StateRef, txhash=HASH, index=-1), "StateRef"),
    "state ref index over 32 bits": (forged(StateRef, txhash=HASH, index=2**32), "StateRef"),
    "state ref hash as str": (forged(StateRef, txhash=str(HASH), index=0), "StateRef"),
    "amount negative": (forged(Amount, quantity=-1, token="USD"), "Amount"),
    "amount not int": (forged(Amount, quantity=1.5, token="USD"), "Amount"),
    "issued empty product": (
        forged(Issued, issuer=ALICE, reference=b"\x01", product=""), "Issued"),
    "cash owner not a party": (
        forged(Cash.State, amount=Amount(5, TOKEN), owner="Alice"), "Cash"),
    "cash in a bare currency": (forged(Cash.State, amount=Amount(5, "USD"), owner=ALICE), "Cash"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_decoded_value_with_bad_fields_is_refused(case: str) -> None:
    data, class_name = BAD_VALUES[case]
    with pytest.raises(SerializationError, match=rf"{class_name}.* with invalid fields"):
        decode(data)


def test_a_bad_value_nested_in_a_good_one_is_refused() -> None:
    bad_ref = object.__new__(StateRef)
    object.__setattr__(bad_ref, "txhash", HASH)
    object.__setattr__(bad_ref, "index", -1)
    with pytest.raises(SerializationError, match="StateRef"):
        decode(encode((1, [bad_ref])))


def test_an_index_of_more_than_4300_digits_is_reported_not_crashed_on() -> None:
    # Python refuses to print an int of more than 4,300 digits: the report must still work.
    huge = 10**5000
    with pytest.raises(SerializationError) as caught:
        decode(forged(StateRef, txhash=HASH, index=huge))
    message = str(caught.value)
    assert f"an int of {huge.bit_length()} bits" in message
    assert "StateRef" in message
    with pytest.raises(ValueError, match="an int of 16610 bits"):
        StateRef(HASH, huge)
    with pytest.raises(SerializationError, match="Amount"):
        decode(forged(Amount, quantity=-huge, token="USD"))


def test_good_values_still_decode_to_equal_values() -> None:
    values = [HASH, StateRef(HASH, 2**32 - 1), TimeWindow.between(NOON, NOON + timedelta(1)),
              Amount(5, TOKEN), Cash.State(Amount(5, TOKEN), ALICE)]
    for value in values:
        assert decode(encode(value)) == value
        assert dataclasses.is_dataclass(value)
