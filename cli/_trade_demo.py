"""``fibers demo``: a delivery-versus-payment trade between two banks, watched live, that
survives the buyer's node crashing in the middle.

The story: the buyer bank is issued cash and the seller bank issues itself commercial paper;
then ``SellerStarter`` sells each paper to the buyer (``TwoPartyTradeFlow``). When the seller
has signed and is committing, the buyer's node is stopped at its suspension; the demo shows it
is down and where every flow is parked, starts it again from its storage, and the trades
complete from their checkpoints. It ends with both vaults before and after, and the notarised
transaction ids.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from cli._demo_view import DemoView, PlainReporter, vault_table
from cli._embedded import EmbeddedNetwork
from fibers import Node, StateMachineRunId
from finance import (
    Amount,
    CashIssueFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    SellerStarter,
    TwoPartyTradeFlow,
)
from ledger import LedgerServiceHub, SignedTransaction

FACE_VALUE = Amount.parse("1000.00 USD")
PRICE = Amount.parse("900.00 USD")


@dataclass(frozen=True)
class DemoOptions:
    """What ``fibers demo`` was asked for."""

    trades: int = 1
    crash: bool = True
    live: bool = True
    base_dir: Path | None = None
    pace: float = 0.12  # seconds between two deliveries for one trade, so a person can follow


@dataclass
class _Trades:
    """The seller flows of the trades and what they returned."""

    run_ids: list[StateMachineRunId] = field(default_factory=list)
    results: dict[StateMachineRunId, SignedTransaction] = field(default_factory=dict)
    errors: dict[StateMachineRunId, BaseException] = field(default_factory=dict)

    def done(self) -> bool:
        return len(self.results) + len(self.errors) == len(self.run_ids)


def run_trade_demo(
    console: Console,
    options: DemoOptions,
    *,
    at_end: Callable[[EmbeddedNetwork], object] | None = None,
) -> int:
    """Tell the story on ``console``; returns the exit status (0 when every trade settled).
    ``at_end(network)`` runs before the nodes stop (tests check the vaults there)."""
    base_dir = options.base_dir or Path(tempfile.mkdtemp(prefix="fibers-demo-"))
    net = EmbeddedNetwork(base_dir)
    try:
        status = _story(console, options, net)
        if at_end is not None:
            at_end(net)
        return status
    finally:
        net.close()
        console.print(f"Run directory (each node's LMDB storage): [bold]{base_dir}[/]",
                      soft_wrap=True)


def _story(console: Console, options: DemoOptions, net: EmbeddedNetwork) -> int:
    console.print(
        f"[bold]Fibers demo[/]: {options.trades} delivery-versus-payment "
        f"trade{'s' if options.trades > 1 else ''} of commercial paper for cash, "
        "written as sequential code, checkpointed at every suspension."
    )
    _prepare(net, options.trades)
    before = vault_table("Before", net.seller, net.buyer)
    console.print(before)
    trades = _start_trades(net, options.trades)
    reporter: DemoView | PlainReporter
    reporter = DemoView(console, net) if options.live else PlainReporter(console, net)
    crashed = False

    def maybe_crash(_: object) -> None:
        nonlocal crashed
        if options.crash and not crashed and _seller_is_committing(net, trades):
            crashed = True
            reporter.parked(_parked_steps(net), down=net.buyer.party.name)
            net.crash(net.buyer.party.name)
            reporter.event(f"{net.buyer.party.name} crashed: its node is down, its flows are "
                           "parked in its storage")
            reporter.hold(2.5)
            reporter.event(f"Restarting {net.buyer.party.name} from {net.base_dir}")
            net.restart(net.buyer.party.name)
            reporter.event(f"{net.buyer.party.name} restored "
                           f"{len(net.buyer.flows())} flow(s) from their checkpoints")

    with reporter:
        net.run(
            lambda: _collect(net, trades),
            on_tick=reporter.tick,
            before_delivery=maybe_crash,
            # Many trades share the time: the whole story stays well under a minute.
            pace=max(0.005, options.pace / options.trades) if options.live else 0.0,
        )
    console.print(vault_table("After", net.seller, net.buyer))
    for run_id in trades.run_ids:
        if run_id in trades.results:
            console.print(f"Notarised transaction [bold]{trades.results[run_id].id}[/]",
                          highlight=False, soft_wrap=True)
        else:
            console.print(f"[red]Trade {run_id.short} failed:[/] {trades.errors[run_id]!r}")
    if options.crash and not crashed:
        console.print("[yellow]The trades finished before the crash point was reached.[/]")
    return 0 if not trades.errors else 1


def _prepare(net: EmbeddedNetwork, trades: int) -> None:
    """Cash for the buyer (one state per trade, so concurrent trades do not contend for one
    state) and one commercial paper per trade for the seller."""
    notary = net.notary
    maturity = net.now() + timedelta(days=30)
    for i in range(trades):
        _run_flow(net, net.buyer, CashIssueFlow(FACE_VALUE, bytes([1 + i % 200]), notary))
        _run_flow(net, net.seller, CommercialPaperIssueFlow(FACE_VALUE, maturity, notary))
    notary_party = notary
    net.buyer.register_initiated_flow(
        SellerStarter,
        lambda party: TwoPartyTradeFlow.Buyer(party, notary_party, PRICE, CommercialPaper.State),
    )


def _run_flow(net: EmbeddedNetwork, node: Node[LedgerServiceHub], flow: Any) -> Any:
    handle = node.start_flow(flow)
    net.run(handle.result.done)
    return handle.result.result(timeout=0)


def _start_trades(net: EmbeddedNetwork, count: int) -> _Trades:
    papers = net.seller.services.vault.query(CommercialPaper.State)
    trades = _Trades()
    for paper in papers[:count]:
        # The buyer bank pays in cash it issued itself: the seller accepts that issuer only.
        handle = net.seller.start_flow(SellerStarter(net.buyer.party, paper, PRICE,
                                                     acceptable_issuers=[net.buyer.party]))
        trades.run_ids.append(handle.id)
        handle.result.add_done_callback(_recorder(trades, handle.id))
    return trades


def _recorder(trades: _Trades, run_id: StateMachineRunId) -> Callable[[Any], None]:
    def record(future: Any) -> None:
        error = future.exception()
        if error is None:
            trades.results[run_id] = future.result()
        else:
            trades.errors[run_id] = error

    return record


def _collect(net: EmbeddedNetwork, trades: _Trades) -> bool:
    """Every trade ended on the seller, and the buyer has no trade left running."""
    return trades.done() and (net.buyer.party.name in net.down or not net.buyer.flows())


def _seller_is_committing(net: EmbeddedNetwork, trades: _Trades) -> bool:
    """The crash point: a seller has reached its committing step (it signed and is
    finalising), so the buyer is parked waiting for the finished transaction."""
    for run_id in trades.run_ids:
        tracker = net.seller.progress_tracker(run_id)
        if tracker is None:
            continue
        tree, index = tracker.steps_tree, tracker.steps_tree_index
        reached = [label for _, label in tree[: index + 1]]
        if any(label.lower().startswith("commit") for label in reached):
            return True
    return False


def _parked_steps(net: EmbeddedNetwork) -> list[tuple[str, str, str, str]]:
    """(node, flow class, run id, where it is parked) for every running flow."""
    rows = []
    for node in (net.seller, net.buyer):
        for flow in node.flows():
            where = flow.progress_step or "?"
            if flow.waiting_for:
                where += f", waiting for {flow.waiting_for}"
            rows.append((node.party.name, flow.flow_class.split(":")[-1], flow.run_id.short,
                         where))
    return rows
