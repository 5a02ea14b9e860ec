"""Operator text to flow arguments: parsing ``name: value, ...``, conversion by annotated type,
and errors that name the argument and the flow's signature."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cli._convert import (
    FlowArgumentError,
    UnknownNameError,
    convert,
    parse_arguments,
    type_name,
)
from cli._convert_flows import (
    build_flow,
    find_flow,
    find_state_type,
    signature_text,
    startable_flows,
)
from fibers import FlowLogic, Party, startable_by_rpc, suspendable
from finance import Amount, Cash, CashIssueFlow, CashPaymentFlow, CommercialPaper, SellerStarter
from ledger import SecureHash, StateAndRef, StateRef

BANK = Party("BankB", b"\x02" * 32)
NOTARY = Party("Notary", b"\x03" * 32)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TX = "ab" * 32


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


class FakeContext:
    """Parties BankB and Notary; one vault state at ab...ab(0); the clock at NOW."""

    def __init__(self) -> None:
        self.state = object()

    def party(self, name: str) -> Party:
        for party in (BANK, NOTARY):
            if party.name == name:
                return party
        raise UnknownNameError(f"no party called {name!r} on the network (known: BankB, "
                               "Notary)")

    def state_and_ref(self, text: str) -> StateAndRef[Any]:
        if text.startswith("abab") and text.endswith("(0)"):
            return self.state  # type: ignore[return-value]
        raise UnknownNameError(f"no unconsumed state {text} in the vault of BankA")

    def state_type(self, name: str) -> type:
        return find_state_type(name)

    def now(self) -> datetime:
        return NOW


@startable_by_rpc
class Everything(FlowLogic[None]):
    """A flow whose constructor takes one of each kind of argument the shell converts."""

    def __init__(  # noqa: PLR0917 (flows take their arguments positionally, like this one)
        self, count: int, ratio: float, ok: bool, blob: bytes, when: datetime,
        wait: timedelta, who: Party, many: list[Party], maybe: int | None, colour: Colour,
        *, note: str = "none",
    ) -> None:
        self.values = dict(count=count, ratio=ratio, ok=ok, blob=blob, when=when, wait=wait,
                           who=who, many=many, maybe=maybe, colour=colour, note=note)

    @suspendable
    def call(self) -> None:
        return None


def test_arguments_are_name_value_pairs_split_at_commas_before_a_name() -> None:
    assert parse_arguments('amount: 1,000.00 USD, note: "a, b: c", who: [A, B], '
                           "when: 2026-03-01T12:00:00, name: O'Brien") == {
        "amount": "1,000.00 USD", "note": '"a, b: c"', "who": "[A, B]",
        "when": "2026-03-01T12:00:00", "name": "O'Brien"}
    assert parse_arguments("") == {}


@pytest.mark.parametrize(("text", "problem"), [
    ("amount 100 USD", "cannot read 'amount 100 USD' as an argument: write name: value"),
    ("a: 1, a: 2", "argument 'a' is given twice"),
    ('a: "open', "unclosed quote"),
])
def test_malformed_argument_text_says_how_to_write_it(text: str, problem: str) -> None:
    with pytest.raises(FlowArgumentError, match=problem):
        parse_arguments(text)


def test_every_supported_type_converts() -> None:
    flow = build_flow(Everything, {
        "count": "1_000", "ratio": "2.5", "ok": "yes", "blob": "0xcafe", "when": "now+30d",
        "wait": "2h", "who": "BankB", "many": "[BankB, Notary]", "maybe": "none",
        "colour": "green", "note": '"hello, world"'}, FakeContext())
    assert isinstance(flow, Everything)
    assert flow.values == dict(
        count=1000, ratio=2.5, ok=True, blob=b"\xca\xfe", when=NOW + timedelta(days=30),
        wait=timedelta(hours=2), who=BANK, many=[BANK, NOTARY], maybe=None,
        colour=Colour.GREEN, note="hello, world")


@pytest.mark.parametrize(("text", "expected"), [
    ("01", b"\x01"), ("0x0102", b"\x01\x02"), ("ref-1", b"ref-1"), ('"01"', b"01"),
    ("abc", b"abc"),  # odd number of hex digits: text
])
def test_bytes_are_hex_when_they_look_like_it_and_utf8_otherwise(
    text: str, expected: bytes
) -> None:
    assert convert(text, bytes, FakeContext()) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("2026-03-01T12:00:00+01:00", datetime(2026, 3, 1, 11, tzinfo=UTC)),
    ("now", NOW),
    ("now-2h", NOW - timedelta(hours=2)),
])
def test_times_are_iso_8601_in_utc_or_relative_to_the_nodes_clock(
    text: str, expected: datetime
) -> None:
    assert convert(text, datetime, FakeContext()) == expected


def test_amounts_parties_states_and_types_come_from_their_own_parsers() -> None:
    context = FakeContext()
    assert convert("100 USD", Amount[Any], context) == Amount.parse("100.00 USD")
    assert convert("BankB", Party, context) == BANK
    assert convert("abab(0)", StateAndRef[Any], context) is context.state
    assert convert(f"{TX}(3)", StateRef, context) == StateRef(SecureHash.parse(TX), 3)
    assert convert("Cash", type, context) is Cash.State
    assert convert("CommercialPaper.State", type[Any], context) is CommercialPaper.State


def test_signatures_show_short_type_names() -> None:
    assert signature_text(CashPaymentFlow) == "CashPaymentFlow(amount: Amount, recipient: Party)"
    assert signature_text(SellerStarter) == (
        "SellerStarter(other_party: Party, asset_to_sell: StateAndRef, price: Amount, "
        "acceptable_issuers: Iterable[Party] | None = None)")
    assert type_name(list[Party]) == "list[Party]"
    assert type_name(int | None) == "int | None"


def test_a_missing_argument_names_the_signature() -> None:
    with pytest.raises(FlowArgumentError) as error:
        build_flow(CashPaymentFlow, {"amount": "10 USD"}, FakeContext())
    assert str(error.value) == ("missing argument 'recipient': expected "
                                "CashPaymentFlow(amount: Amount, recipient: Party)")


def test_an_unknown_argument_suggests_the_closest_and_names_the_signature() -> None:
    with pytest.raises(FlowArgumentError) as error:
        build_flow(CashPaymentFlow, {"amount": "10 USD", "recipent": "BankB"}, FakeContext())
    assert str(error.value) == (
        "CashPaymentFlow has no argument 'recipent' (did you mean 'recipient'?): expected "
        "CashPaymentFlow(amount: Amount, recipient: Party)")


def test_a_value_that_does_not_convert_names_the_argument_and_the_signature() -> None:
    with pytest.raises(FlowArgumentError) as error:
        build_flow(CashPaymentFlow, {"amount": "ten dollars", "recipient": "BankB"},
                   FakeContext())
    message = str(error.value)
    assert message.startswith("argument 'amount': cannot parse 'ten dollars' as an amount")
    assert message.endswith("; expected CashPaymentFlow(amount: Amount, recipient: Party)")


def test_an_unknown_party_lists_the_known_ones() -> None:
    with pytest.raises(FlowArgumentError) as error:
        build_flow(CashPaymentFlow, {"amount": "10 USD", "recipient": "BankZ"}, FakeContext())
    assert str(error.value) == (
        "argument 'recipient': no party called 'BankZ' on the network (known: BankB, Notary); "
        "expected CashPaymentFlow(amount: Amount, recipient: Party)")


def test_a_constructor_that_refuses_its_values_is_reported_with_its_exception() -> None:
    with pytest.raises(FlowArgumentError) as error:
        build_flow(CashIssueFlow, {"amount": "0 USD", "issuer_ref": "01", "notary": "Notary"},
                   FakeContext())
    assert str(error.value) == (
        "CashIssueFlow refused its arguments: ValueError: cannot issue 0.00 USD: the amount "
        "must be positive; expected CashIssueFlow(amount: Amount, issuer_ref: bytes, "
        "notary: Party)")
    assert isinstance(error.value.__cause__, ValueError)


def test_flows_are_found_by_short_or_qualified_name_among_startable_ones() -> None:
    assert find_flow("CashIssueFlow") is CashIssueFlow
    assert find_flow("finance.CashIssueFlow") is CashIssueFlow
    assert find_flow("finance._cash_flows:CashIssueFlow") is CashIssueFlow
    assert find_flow("cashissueflow") is CashIssueFlow
    assert CashIssueFlow in startable_flows()
    assert Everything in startable_flows()


def test_an_unknown_flow_suggests_the_closest_names() -> None:
    with pytest.raises(UnknownNameError) as error:
        find_flow("CashIsueFlow")
    assert str(error.value).startswith(
        "no startable flow called 'CashIsueFlow'; did you mean CashIssueFlow")


def test_a_flow_that_is_not_startable_by_rpc_is_not_found() -> None:
    from finance import TwoPartyTradeFlow

    with pytest.raises(UnknownNameError, match="no startable flow called"):
        find_flow("TwoPartyTradeFlow.Seller", [f for f in startable_flows()
                                               if f is not TwoPartyTradeFlow.Seller])


def test_a_short_name_shared_by_two_flows_is_ambiguous() -> None:
    first = type("Twin", (FlowLogic,), {"__module__": "pkg_a"})
    second = type("Twin", (FlowLogic,), {"__module__": "pkg_b"})
    with pytest.raises(UnknownNameError, match=r"'Twin' is ambiguous: it names pkg_a.Twin, "
                                               r"pkg_b.Twin; give the qualified name"):
        find_flow("Twin", [first, second])
    assert find_flow("pkg_b.Twin", [first, second]) is second


def test_state_types_are_found_by_class_or_contract_name() -> None:
    assert find_state_type("Cash.State") is Cash.State
    assert find_state_type("cash") is Cash.State
    with pytest.raises(UnknownNameError, match="no state type called 'Csh'; did you mean"):
        find_state_type("Csh")
