"""Every finance state, command, token and error crosses the wire intact and canonically."""

from __future__ import annotations

import pickle

import pytest

from fibers._wire import decode, encode
from finance import (
    Amount,
    Cash,
    CommercialPaper,
    InsufficientBalanceException,
    Issued,
    PartyAndReference,
    TokenMismatchError,
    dollars,
)
from ledger import Command
from tests.finance._helpers import BANK, REF, paper, usd
from tests.ledger._helpers import ALICE


def _values() -> list[object]:
    return [
        dollars("1000.00"), Amount(7, "JPY"), usd(5), Issued(BANK, REF, "USD"),
        PartyAndReference(BANK, b""), Cash.State(usd(5), ALICE), Cash.Issue(), Cash.Move(),
        Cash.Exit(usd(1)), paper(), CommercialPaper.Issue(), CommercialPaper.Move(),
        CommercialPaper.Redeem(), Command(Cash.Exit(usd(1)), (BANK.owning_key,)),
    ]


@pytest.mark.parametrize("value", _values(), ids=lambda v: type(v).__qualname__)
def test_finance_values_round_trip_canonically(value: object) -> None:
    data = encode(value)
    back = decode(data)
    assert back == value
    assert type(back) is type(value)
    assert encode(back) == data


def test_equal_maturities_in_other_zones_have_equal_bytes() -> None:
    from datetime import timedelta, timezone

    cp = paper()
    shifted = CommercialPaper.State(cp.issuance, cp.owner, cp.face_value,
                                    cp.maturity.astimezone(timezone(timedelta(hours=-5))))
    assert encode(shifted) == encode(cp)


def test_insufficient_balance_crosses_the_wire_and_checkpoints_intact() -> None:
    exc = InsufficientBalanceException(usd(8), usd(7))
    for back in (decode(encode(exc)), pickle.loads(pickle.dumps(exc))):
        assert type(back) is InsufficientBalanceException
        assert str(back) == str(exc)
        assert (back.needed, back.available) == (usd(8), usd(7))


def test_token_mismatch_survives_a_checkpoint() -> None:
    exc = TokenMismatchError("add", "USD", "EUR")
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.left, back.right) == (str(exc), "USD", "EUR")
