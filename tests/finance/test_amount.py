"""Amounts: whole minor units of one token; arithmetic, comparison, splitting and parsing, and
refusals that name what was wrong."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finance import (
    CURRENCY_DECIMALS,
    Amount,
    Issued,
    PartyAndReference,
    TokenMismatchError,
    currency_decimals,
    dollars,
    euros,
    pounds,
    sum_of,
)
from tests.finance._helpers import BANK, OTHER_BANK, REF, usd
from tests.ledger._helpers import ALICE

FAST = settings(derandomize=True, database=None, deadline=None, max_examples=200)
currencies = st.sampled_from(sorted(CURRENCY_DECIMALS))
quantities = st.integers(0, 10**30)


def test_quantity_is_minor_units_of_the_token() -> None:
    assert dollars(10) == Amount(1000, "USD")
    assert euros("2.50") == Amount(250, "EUR")
    assert pounds(Decimal("3")) == Amount(300, "GBP")
    assert Amount.of("1500", "JPY") == Amount(1500, "JPY")
    assert Amount.zero("USD") == Amount(0, "USD")
    assert dollars("10.50").to_decimal() == Decimal("10.50")


@pytest.mark.parametrize("quantity", [True, 1.0, "1", None])
def test_a_quantity_must_be_an_int(quantity: Any) -> None:
    with pytest.raises(TypeError, match="must be an int number of minor units"):
        Amount(quantity, "USD")


def test_a_quantity_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="cannot be negative, got -1"):
        Amount(-1, "USD")


def test_a_token_must_be_hashable_and_a_str_token_a_known_currency() -> None:
    with pytest.raises(TypeError, match="must be hashable"):
        Amount(1, ["USD"])  # type: ignore[type-var]
    with pytest.raises(ValueError, match=r"unknown currency code 'XYZ'.*use Issued"):
        Amount(1, "XYZ")
    assert str(Amount(3, ("shares", "ACME"))) == "3 ('shares', 'ACME')"


def test_adding_and_subtracting_keep_the_token() -> None:
    assert dollars(10) + dollars("0.01") == Amount(1001, "USD")
    assert dollars(10) - dollars(4) == dollars(6)
    assert dollars(10) - dollars(10) == Amount.zero("USD")


def test_subtracting_more_than_there_is_names_both_amounts() -> None:
    with pytest.raises(ValueError, match=r"cannot subtract 5\.00 USD from 4\.00 USD: an amount "
                                         "cannot be negative"):
        dollars(4) - dollars(5)


def test_comparisons_order_by_quantity() -> None:
    assert dollars(1) < dollars(2) <= dollars(2) < dollars(3)
    assert dollars(3) > dollars(2) >= dollars(2)
    assert max([dollars(1), dollars(5), dollars(2)]) == dollars(5)
    assert dollars(1) != euros(1)


OPERATIONS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("add", operator.add), ("subtract", operator.sub), ("compare", operator.lt),
    ("compare", operator.le), ("compare", operator.gt), ("compare", operator.ge),
]


@pytest.mark.parametrize(("verb", "op"), OPERATIONS)
def test_mixed_tokens_are_refused_naming_both(verb: str, op: Callable[[Any, Any], Any]) -> None:
    with pytest.raises(TokenMismatchError, match=f"cannot {verb} amounts of different tokens: "
                                                 "USD and EUR$") as info:
        op(dollars(1), euros(1))
    assert (info.value.left, info.value.right) == ("USD", "EUR")


def test_mixing_issuers_is_refused_with_a_hint_to_drop_the_issuer() -> None:
    with pytest.raises(TokenMismatchError) as info:
        usd(1) + usd(1, issuer=OTHER_BANK)
    assert str(info.value).startswith(
        "cannot add amounts of different tokens: USD issued by Bank A (ref 01) and USD issued "
        "by Bank B (ref 01) (the same currency from different issuers")
    assert "without_issuer()" in str(info.value)
    assert usd(1).without_issuer() + usd(1, issuer=OTHER_BANK).without_issuer() == dollars(2)


def test_arithmetic_with_other_types_is_not_supported() -> None:
    with pytest.raises(TypeError):
        dollars(1) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        assert dollars(1) < 1  # type: ignore[operator]


def test_sum_of_adds_one_token_and_needs_a_token_when_empty() -> None:
    assert sum_of([dollars(1), dollars(2)]) == dollars(3)
    assert sum_of([], token="USD") == Amount.zero("USD")
    assert sum_of([dollars(1)], token="USD") == dollars(1)
    with pytest.raises(ValueError, match="needs token="):
        sum_of([])
    with pytest.raises(TokenMismatchError, match="USD and EUR"):
        sum_of([dollars(1), euros(1)])
    with pytest.raises(TokenMismatchError, match="GBP and USD"):
        sum_of([dollars(1)], token="GBP")


def test_split_distributes_the_remainder_over_the_first_parts() -> None:
    assert dollars("0.10").split(3) == [Amount(4, "USD"), Amount(3, "USD"), Amount(3, "USD")]
    assert dollars(1).split(1) == [dollars(1)]
    assert Amount(1, "USD").split(3) == [Amount(1, "USD"), Amount(0, "USD"), Amount(0, "USD")]
    with pytest.raises(ValueError, match=r"cannot split 1\.00 USD into 0 parts"):
        dollars(1).split(0)


@pytest.mark.parametrize(("text", "expected"), [
    ("1000.00 USD", Amount(100000, "USD")), ("100 USD", Amount(10000, "USD")),
    ("1,000.00 USD", Amount(100000, "USD")), ("0.5 EUR", Amount(50, "EUR")),
    ("1.500 GBP", Amount(150, "GBP")), ("  7 JPY ", Amount(7, "JPY")),
    ("1,234,567 JPY", Amount(1234567, "JPY")),
])
def test_parse_reads_a_number_and_a_currency_code(text: str, expected: Amount[str]) -> None:
    assert Amount.parse(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("1.001 USD", "1.001 USD has too many decimal places: USD has 2"),
    ("1.5 JPY", "1.5 JPY has too many decimal places: JPY has 0"),
    ("10 XYZ", "unknown currency code 'XYZ'"),
    ("10 usd", r"unknown currency code 'usd' \(did you mean 'USD'\?\)"),
    ("-1 USD", "cannot parse '-1 USD' as an amount"),
    ("1,00 USD", "cannot parse"), ("USD 10", "cannot parse"), ("10USD", "cannot parse"),
    ("1e3 USD", "cannot parse"), ("", "cannot parse"),
])
def test_parse_refuses_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Amount.parse(text)


def test_of_refuses_floats_negatives_and_non_numbers() -> None:
    with pytest.raises(TypeError, match="write floats as strings"):
        Amount.of(1.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be negative"):
        dollars("-0.01")
    with pytest.raises(ValueError, match="is not a decimal number"):
        dollars("ten")
    with pytest.raises(ValueError, match="not a finite amount"):
        dollars("Infinity")
    assert dollars("-0") == Amount.zero("USD")
    assert currency_decimals("JPY") == 0


def test_str_writes_major_units_with_separators() -> None:
    assert str(Amount(100000, "USD")) == "1,000.00 USD"
    assert str(Amount(5, "USD")) == "0.05 USD"
    assert str(Amount(1234567, "JPY")) == "1,234,567 JPY"
    assert str(usd("5.5")) == "5.50 USD issued by Bank A (ref 01)"
    assert str(dollars(5).issued_by(BANK, b"")) == "5.00 USD issued by Bank A"


def test_issued_amounts_carry_their_issuer_and_reference() -> None:
    issued = dollars(3).issued_by(BANK, REF)
    assert issued.token == Issued(BANK, REF, "USD")
    assert issued.token.issuance == PartyAndReference(BANK, REF)
    assert issued.decimal_places == 2
    assert issued.without_issuer() == dollars(3)
    assert issued != dollars(3).issued_by(BANK, b"\x02")
    with pytest.raises(ValueError, match="unknown currency code 'XYZ'"):
        Issued(BANK, REF, "XYZ")
    with pytest.raises(ValueError, match="at most 64 bytes"):
        Issued(BANK, bytes(65), "USD")
    with pytest.raises(ValueError, match="expected a Party"):
        PartyAndReference("Bank A", REF)  # type: ignore[arg-type]
    assert str(PartyAndReference(ALICE, b"\xab")) == "Alice (ref ab)"


@FAST
@given(quantities, currencies)
def test_str_then_parse_is_the_identity(quantity: int, code: str) -> None:
    amount = Amount(quantity, code)
    assert Amount.parse(str(amount)) == amount
    assert Amount.of(amount.to_decimal(), code) == amount


@FAST
@given(quantities, st.integers(1, 50))
def test_split_parts_sum_to_the_whole_and_differ_by_at_most_one(quantity: int, n: int) -> None:
    parts = Amount(quantity, "EUR").split(n)
    assert len(parts) == n
    assert sum_of(parts) == Amount(quantity, "EUR")
    assert max(parts).quantity - min(parts).quantity <= 1
    assert parts == sorted(parts, reverse=True)


@FAST
@given(quantities, quantities)
def test_arithmetic_and_order_follow_the_quantities(a: int, b: int) -> None:
    x, y = Amount(a, "GBP"), Amount(b, "GBP")
    assert (x + y) - y == x
    assert (x < y, x <= y, x > y, x >= y, x == y) == (a < b, a <= b, a > b, a >= b, a == b)
    if a >= b:
        assert (x - y).quantity == a - b
    else:
        with pytest.raises(ValueError, match="cannot be negative"):
            x - y
