"""The trade survives the buyer's node restarting after any message, and shows its progress with
the finality steps under "committing" on both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import ProgressTracker, Step
from finance import Cash, CommercialPaper, SellerStarter, TwoPartyTradeFlow
from ledger import FinalityFlow, SignedTransaction
from tests.finance.test_trade import (
    PRICE,
    Trade,
    assert_clean,
    cash_of,
    trade_network,
)

ISSUED_CASH = 100000  # trade_network's default: 1,000.00 USD for the buyer


def _message_count(base: Path) -> int:
    trade = trade_network(base)
    handle = trade.start()
    count = trade.network.run_network()
    handle.result.result(timeout=0)
    trade.network.stop_nodes()
    return count


def _assert_settled(trade: Trade, final: SignedTransaction, where: str) -> None:
    seller, buyer, notary = trade.seller, trade.buyer, trade.notary
    assert_clean(seller, buyer, notary)
    assert buyer.services.validated_transactions.get(final.id) == final, where
    # The same kind of transaction: the paper and one cash state in; the paper to the buyer,
    # the price to the seller and the change to the buyer out.
    assert len(final.tx.inputs) == 2 and len(final.tx.outputs) == 3, where
    [bought] = buyer.services.vault.query(CommercialPaper.State)
    assert bought.ref.txhash == final.id and bought.state.data.owner == buyer.party, where
    assert seller.services.vault.query(CommercialPaper.State) == [], where
    assert cash_of(seller) == [(PRICE.quantity, "Seller")], where
    assert cash_of(buyer) == [(ISSUED_CASH - PRICE.quantity, "Buyer")], where
    uniqueness = notary.services.uniqueness
    assert all(uniqueness.consumed_by(ref) == final.id for ref in final.tx.inputs), where
    for node in (seller, buyer):
        recorded = [stx.id for stx in node.services.validated_transactions.all()]
        assert recorded.count(final.id) == 1 and recorded[-1] == final.id, (where, node.party)


@pytest.mark.parametrize("victim", ["Buyer", "Seller"])
def test_the_trade_survives_a_restart_after_every_message(tmp_path: Path, victim: str) -> None:
    count = _message_count(tmp_path / "reference")
    # Offer, two resolutions, notarisation and broadcast all happened (29 frames since acks
    # ride on messages).
    assert count > 25
    for after in range(count + 1):
        where = f"{victim} restarted after {after} of {count} messages"
        trade = trade_network(tmp_path / f"run-{after}")
        handle = trade.start()
        trade.network.run_network(max_messages=after)
        if victim == "Buyer":
            trade.restart_buyer()
        else:
            trade.seller = trade.network.restart_node(trade.seller)
            if not handle.result.done():
                handle = trade.seller.handle(handle.id)
        trade.network.run_network()
        assert handle.result.done(), where
        _assert_settled(trade, handle.result.result(timeout=0), where)
        trade.network.stop_nodes()


def test_the_trade_survives_restarting_the_buyer_at_every_message_of_one_run(
        tmp_path: Path) -> None:
    count = _message_count(tmp_path / "reference")
    trade = trade_network(tmp_path / "n")
    handle = trade.start()
    # Each restart re-sends what the buyer had not seen acknowledged, so restarting after
    # every message forever would never let the network drain: stop after 2 x count.
    for _ in range(2 * count):
        if not trade.network.run_network(max_messages=1):
            break
        trade.restart_buyer()
    trade.network.run_network()
    _assert_settled(trade, handle.result.result(timeout=0), "restarted at every message")
    trade.network.stop_nodes()


def _under(tracker: ProgressTracker, step: Step) -> list[tuple[int, Step]]:
    """The steps nested under ``step`` in the flattened tree, depths relative to it."""
    steps = tracker.all_steps
    index = next(i for i, (_, s) in enumerate(steps) if s == step)
    depth = steps[index][0]
    nested: list[tuple[int, Step]] = []
    for child_depth, child in steps[index + 1:]:
        if child_depth <= depth:
            break
        nested.append((child_depth - depth, child))
    return nested


def _tracked_trade(tmp_path: Path) -> tuple[Trade, SellerStarter, list[str]]:
    trade = trade_network(tmp_path / "n")
    [paper] = trade.seller.services.vault.query(CommercialPaper.State)
    starter = SellerStarter(trade.buyer.party, paper, PRICE)
    handle = trade.seller.start_tracked_flow(starter)
    labels: list[str] = []
    handle.progress.subscribe(labels.append)
    trade.network.run_network()
    handle.result.result(timeout=0)
    return trade, starter, labels


def test_the_sellers_progress_shows_finality_under_committing(tmp_path: Path) -> None:
    trade, starter, labels = _tracked_trade(tmp_path)
    seller = TwoPartyTradeFlow.Seller
    tracker = starter.progress_tracker
    assert tracker is not None and tracker.current_step == ProgressTracker.DONE
    assert _under(tracker, SellerStarter.SELLING)[:4] == [
        (1, seller.RECEIVING), (1, seller.VERIFYING), (1, seller.SIGNING), (1, seller.COMMITTING)]
    nested = _under(tracker, seller.COMMITTING)
    assert [step for depth, step in nested if depth == 1] == [
        FinalityFlow.VERIFYING, FinalityFlow.NOTARISING, FinalityFlow.RECORDING,
        FinalityFlow.BROADCASTING]
    assert (2, "Requesting signature by notary service") in [
        (depth, step.label) for depth, step in nested]
    ours = [seller.RECEIVING, seller.VERIFYING, seller.SIGNING, seller.COMMITTING]
    assert [label for label in labels if label in {s.label for s in ours}] == [
        s.label for s in ours]
    assert labels[-1] == "Done"
    trade.network.stop_nodes()


def test_the_buyers_progress_shows_finality_under_committing(tmp_path: Path) -> None:
    trade, _, _ = _tracked_trade(tmp_path)
    buyer = TwoPartyTradeFlow.Buyer
    [flow] = trade.buyers
    tracker = flow.progress_tracker
    assert tracker is not None and tracker.current_step == ProgressTracker.DONE
    assert [step for depth, step in tracker.all_steps if depth == 0] == [
        ProgressTracker.STARTING, buyer.RECEIVING, buyer.VERIFYING, buyer.SIGNING, buyer.SENDING,
        buyer.COMMITTING, ProgressTracker.DONE]
    assert _under(tracker, buyer.COMMITTING) == [(1, buyer.AWAITING_FINALITY),
                                                 (1, buyer.RECORDING)]
    child = tracker.get_child_tracker(buyer.COMMITTING)
    assert child is not None and child.current_step == buyer.RECORDING
    assert cash_of(trade.buyer) == [(ISSUED_CASH - PRICE.quantity, "Buyer")]
    assert trade.buyer.services.vault.query(Cash.State)
    trade.network.stop_nodes()
