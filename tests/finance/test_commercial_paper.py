"""The CommercialPaper contract: issue before maturity, move between owners, redeem at
maturity against cash of the face value."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import cast

import pytest

from finance import Cash, CommercialPaper
from ledger import StateAndRef, TimeWindow, TransactionBuilder
from tests.finance._helpers import (
    BANK,
    MATURITY,
    OTHER_BANK,
    CashRef,
    issue_cash,
    paper,
    rejection,
    signed,
    usd,
    verified,
)
from tests.ledger._helpers import ALICE, BOB, NOON, NOTARY, Ledger

PaperRef = StateAndRef[CommercialPaper.State]
PAPER = "paper of Bank B (ref 63702d31) for 1,000.00 USD issued by Bank A (ref 01) maturing " \
        "2024-02-01T12:00:00+00:00"
BEFORE = TimeWindow.until_only(MATURITY)
AFTER = TimeWindow.from_only(MATURITY)


def _issue(state: CommercialPaper.State, window: TimeWindow | None = BEFORE,
           signer: bytes = OTHER_BANK.owning_key) -> TransactionBuilder:
    builder = TransactionBuilder(NOTARY).add_output_state(state, CommercialPaper)
    builder.add_command(CommercialPaper.Issue(), signer)
    if window is not None:
        builder.set_time_window(window)
    return builder


def _issued(ledger: Ledger) -> PaperRef:
    """Alice's paper, issued and recorded."""
    stx = ledger.record(signed(_issue(paper(ALICE))))
    stx.verify(ledger.resolve)
    return cast(PaperRef, stx.tx.out_ref(0))


def _redeem(cp: PaperRef, cash: list[CashRef], window: TimeWindow | None = AFTER,
            pay: str = "1000") -> TransactionBuilder:
    """The issuer pays the paper's owner ``pay`` dollars out of ``cash`` and redeems it."""
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_command(CommercialPaper.Redeem(), cp.state.data.owner.owning_key)
    for sar in cash:
        builder.add_input_state(sar)
    total = sum(sar.state.data.amount.quantity for sar in cash)
    builder.add_output_state(Cash.State(usd(pay), cp.state.data.owner), Cash)
    if total > usd(pay).quantity:
        change = dataclasses.replace(usd(pay), quantity=total - usd(pay).quantity)
        builder.add_output_state(Cash.State(change, OTHER_BANK), Cash)
    builder.add_command(Cash.Move(), OTHER_BANK.owning_key)
    if window is not None:
        builder.set_time_window(window)
    return builder


def test_a_paper_is_held_by_its_owner_and_keeps_its_terms_when_moved() -> None:
    cp = paper()
    assert cp.participants == [ALICE]
    command, moved = cp.with_new_owner(BOB)
    assert command == CommercialPaper.Move()
    assert moved.owner == BOB
    assert moved.terms == cp.terms
    assert str(cp) == PAPER


def test_maturity_is_aware_and_kept_in_utc() -> None:
    east = timezone(timedelta(hours=2))
    cp = dataclasses.replace(paper(), maturity=MATURITY.astimezone(east))
    assert cp.maturity.tzinfo is not None and cp.maturity.utcoffset() == timedelta(0)
    assert cp == paper()
    with pytest.raises(ValueError, match="maturity must be a timezone-aware datetime"):
        dataclasses.replace(paper(), maturity=datetime(2030, 1, 1))


def test_the_issuer_issues_paper_before_it_matures() -> None:
    ltx = verified(_issue(paper()), Ledger())
    assert ltx.outputs_of_type(CommercialPaper.State) == [paper()]
    within = TimeWindow.between(NOON, NOON + timedelta(hours=1))
    assert verified(_issue(paper(), window=within), Ledger()).time_window == within


@pytest.mark.parametrize(("builder", "reason"), [
    (_issue(paper(), window=None), "an Issue of commercial paper needs a time window with an end "
                                   "(until_time) no later than the paper's maturity"),
    (_issue(paper(), window=TimeWindow.from_only(NOON)), "an Issue of commercial paper needs a "
                                                          "time window with an end"),
    (_issue(paper(), window=TimeWindow.until_only(MATURITY + timedelta(seconds=1))),
     f"{PAPER} must be issued before it matures, but the time window ends at "
     "2024-02-01T12:00:01+00:00"),
    (_issue(paper(), signer=ALICE.owning_key), f"the issuer Bank B must sign the Issue of {PAPER}"),
    (_issue(paper(face_value=usd(0))), "the face value of paper of Bank B (ref 63702d31) for "
                                       "0.00 USD issued by Bank A (ref 01)"),
], ids=["no window", "open-ended window", "after maturity", "not by issuer", "zero face value"])
def test_an_issue_is_refused_naming_the_rule(builder: TransactionBuilder, reason: str) -> None:
    assert rejection(builder, Ledger()).startswith(f"Failed requirement: {reason}")


def test_an_issue_consumes_no_paper() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    builder = _issue(paper(BOB)).add_input_state(cp)
    assert rejection(builder, ledger) == (
        "Failed requirement: an Issue creates commercial paper and consumes none: move or "
        "redeem existing paper in a transaction of its own")


def test_the_owner_moves_paper_to_a_buyer() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    command, moved = cp.state.data.with_new_owner(BOB)
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_output_state(moved, CommercialPaper).add_command(command, ALICE.owning_key)
    assert verified(builder, ledger).outputs_of_type(CommercialPaper.State) == [paper(BOB)]


def test_a_move_needs_the_owners_signature() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_output_state(paper(BOB), CommercialPaper)
    builder.add_command(CommercialPaper.Move(), BOB.owning_key)
    assert rejection(builder, ledger) == (
        f"Failed requirement: the owner Alice must sign the Move of {PAPER}")


def test_a_move_cannot_change_the_terms() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_output_state(paper(BOB, face_value=usd(2000)), CommercialPaper)
    builder.add_command(CommercialPaper.Move(), ALICE.owning_key)
    assert rejection(builder, ledger) == (
        f"Failed requirement: a Move changes only the owner of {PAPER}: it consumes 1 and "
        "creates 0 with those terms")


def test_exactly_one_paper_command() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_output_state(paper(BOB), CommercialPaper)
    builder.add_command(CommercialPaper.Move(), ALICE.owning_key)
    builder.add_command(CommercialPaper.Redeem(), ALICE.owning_key)
    assert rejection(builder, ledger) == (
        "Failed requirement: a transaction with commercial paper has exactly one "
        "CommercialPaper command (Issue, Move or Redeem), not 2")


def test_matured_paper_is_redeemed_against_its_face_value_in_cash() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    cash = issue_cash(ledger, OTHER_BANK, usd(600), usd(600))
    ltx = verified(_redeem(cp, cash), ledger)
    assert not ltx.outputs_of_type(CommercialPaper.State)
    assert Cash.State(usd(1000), ALICE) in ltx.outputs_of_type(Cash.State)


def test_redeeming_before_maturity_is_refused() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    cash = issue_cash(ledger, OTHER_BANK, usd(1000))
    early = TimeWindow.from_only(MATURITY - timedelta(seconds=1))
    assert rejection(_redeem(cp, cash, window=early), ledger) == (
        f"Failed requirement: {PAPER} must have matured before it is redeemed, but the time "
        "window starts at 2024-02-01T11:59:59+00:00")
    assert rejection(_redeem(cp, cash, window=None), ledger) == (
        "Failed requirement: a Redeem of commercial paper needs a time window with a start "
        "(from_time) at or after the paper's maturity")


def test_redeeming_without_full_payment_is_refused() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    cash = issue_cash(ledger, OTHER_BANK, usd(1000))
    assert rejection(_redeem(cp, cash, pay="999.99"), ledger) == (
        "Failed requirement: the owner Alice must receive the face value (1,000.00 USD issued by "
        "Bank A (ref 01)) in cash when redeeming, but receives 999.99 USD issued by Bank A "
        "(ref 01)")


def test_redeeming_against_another_issuers_cash_is_refused() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    builder = TransactionBuilder(NOTARY).add_input_state(cp)
    builder.add_command(CommercialPaper.Redeem(), ALICE.owning_key)
    [cash] = issue_cash(ledger, OTHER_BANK, usd(1000, issuer=OTHER_BANK))
    builder.add_input_state(cash).add_command(Cash.Move(), OTHER_BANK.owning_key)
    builder.add_output_state(Cash.State(usd(1000, issuer=OTHER_BANK), ALICE), Cash)
    builder.set_time_window(AFTER)
    assert rejection(builder, ledger).endswith("but receives 0.00 USD issued by Bank A (ref 01)")


def test_the_owner_paying_itself_does_not_count_as_payment() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    [own] = issue_cash(ledger, ALICE, usd(1000))
    builder = TransactionBuilder(NOTARY).add_input_state(cp).add_input_state(own)
    builder.add_command(CommercialPaper.Redeem(), ALICE.owning_key)
    builder.add_output_state(Cash.State(usd(1000), ALICE), Cash)
    builder.add_command(Cash.Move(), ALICE.owning_key).set_time_window(AFTER)
    assert rejection(builder, ledger).endswith("but receives 0.00 USD issued by Bank A (ref 01)")


def test_redeemed_paper_is_destroyed_and_signed_for_by_its_owner() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    cash = issue_cash(ledger, OTHER_BANK, usd(1000))
    kept = _redeem(cp, cash).add_output_state(paper(BOB), CommercialPaper)
    assert rejection(kept, ledger) == (
        f"Failed requirement: redeemed paper is destroyed, but {PAPER} is an output")
    unsigned = TransactionBuilder(NOTARY).add_input_state(cp).set_time_window(AFTER)
    unsigned.add_command(CommercialPaper.Redeem(), BANK.owning_key)
    assert rejection(unsigned, ledger) == (
        f"Failed requirement: the owner Alice must sign the Redeem of {PAPER}")


def test_a_redeem_creates_no_paper() -> None:
    ledger = Ledger()
    cp = _issued(ledger)
    cash = issue_cash(ledger, OTHER_BANK, usd(1000))
    builder = _redeem(cp, cash).add_output_state(paper(BOB, face_value=usd(5)), CommercialPaper)
    assert rejection(builder, ledger).startswith(
        "Failed requirement: a Redeem creates no paper, but paper of Bank B (ref 63702d31) for "
        "5.00 USD")
