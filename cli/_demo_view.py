"""How the demo shows itself: live progress trees side by side (``DemoView``), or the same
story as plain lines for logs and CI (``PlainReporter``), and the vault tables.

Both are driven from the scheduler loop (``tick`` after each delivered message), never from a
thread of their own, so they read flow state only between steps.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli._embedded import EmbeddedNetwork
from fibers import Node, ProgressTracker
from fibers.progress_view import FlowTreesView
from finance import Amount, Cash, CommercialPaper
from ledger import LedgerServiceHub


def deepest_step(tracker: ProgressTracker) -> str:
    """The label of the innermost current step (a sub-flow's step when one is running)."""
    label = tracker.current_step.label
    child = tracker.get_child_tracker(tracker.current_step)
    while child is not None and child.step_index > 1 and not child.has_ended:
        label = child.current_step.label
        child = child.get_child_tracker(child.current_step)
    return label


class _Watcher:
    """Which flows of which nodes are shown, following restarts (a restored flow has a new
    tracker object)."""

    def __init__(self, net: EmbeddedNetwork) -> None:
        self.net = net
        self.trackers: dict[str, tuple[str, str, ProgressTracker]] = {}  # run id -> node, title

    def refresh(self) -> list[tuple[str, str, str, ProgressTracker]]:
        """(node, run id, title, tracker) for every tracked flow; newly seen ones included."""
        for node in (self.net.seller, self.net.buyer):
            if node.party.name in self.net.down:
                continue
            for flow in node.flows():
                tracker = node.progress_tracker(flow.run_id)
                if tracker is None:
                    continue
                key = str(flow.run_id)
                current = self.trackers.get(key)
                if current is None or current[2] is not tracker:
                    title = FlowTreesView.flow_title(
                        flow.flow_class.split(":")[-1], flow.run_id.short
                    )
                    self.trackers[key] = (node.party.name, title, tracker)
        return [(n, k, t, tr) for k, (n, t, tr) in self.trackers.items()]


class DemoView:
    """Live trees of the seller's and the buyer's flows side by side, with an event log."""

    def __init__(self, console: Console, net: EmbeddedNetwork) -> None:
        self.console = console
        self.watcher = _Watcher(net)
        self.net = net
        self.views = {name: FlowTreesView(spinner="dots") for name in ("SellerBank", "BuyerBank")}
        self.shown: dict[str, ProgressTracker] = {}
        self.events: list[str] = []
        self._drawn_at = 0.0
        self.live = Live(console=console, auto_refresh=False, transient=False,
                         vertical_overflow="visible")

    def __enter__(self) -> DemoView:
        self.live.__enter__()
        self.tick(force=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.tick(force=True)
        self.live.__exit__(kind, exc, tb)

    def tick(self, *, force: bool = False) -> None:
        """Pick up new or restored flows and redraw (at most every 50 ms unless ``force``:
        with many trades a redraw per message would cost more than the trades)."""
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.05:
            return
        self._drawn_at = now
        for node, run_id, title, tracker in self.watcher.refresh():
            if self.shown.get(run_id) is not tracker:
                view = self.views[node]
                if run_id in view.run_ids:
                    view.remove(run_id)
                view.add(run_id, title, tracker)
                self.shown[run_id] = tracker
            parked = node in self.net.down  # its flows wait in its storage, where they were
            self.views[node].update_title(run_id, f"{title} — parked, {node} is down"
                                          if parked else title)
        self.live.update(self._render(), refresh=True)

    def event(self, text: str) -> None:
        """Add a line to the event log."""
        self.events.append(text)
        self.tick(force=True)

    def hold(self, seconds: float) -> None:
        """Keep the screen as it is (animating) for ``seconds``, e.g. while a node is down."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.live.update(self._render(), refresh=True)
            time.sleep(0.1)

    def parked(self, rows: list[tuple[str, str, str, str]], *, down: str) -> None:
        """Show where every flow is parked when ``down`` stops."""
        for node, flow, run_id, where in rows:
            self.events.append(f"  {node} {flow} {run_id}: parked at {where}")
        self.tick(force=True)

    def _render(self) -> RenderableType:
        grid = Table.grid(expand=True, padding=(0, 2))
        for _ in self.views:
            grid.add_column(ratio=1)
        panels = []
        for name, view in self.views.items():
            down = name in self.net.down
            title = f"{name} [red](down)[/]" if down else name
            panels.append(Panel(view, title=title, border_style="red" if down else "blue"))
        grid.add_row(*panels)
        log = Text("\n".join(self.events[-8:]) or "…", style="yellow")
        return Group(grid, Panel(log, title="events"))


class PlainReporter:
    """The same story as plain lines: one line each time a flow moves to a new step."""

    def __init__(self, console: Console, net: EmbeddedNetwork) -> None:
        self.console = console
        self.watcher = _Watcher(net)
        self.last: dict[str, str] = {}

    def __enter__(self) -> PlainReporter:
        self.tick()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tick()

    def tick(self) -> None:
        """Print the flows whose innermost step changed."""
        for node, run_id, title, tracker in self.watcher.refresh():
            step = deepest_step(tracker)
            if tracker.has_ended and tracker.error is None:
                step = "Done"
            if self.last.get(run_id) != step:
                self.last[run_id] = step
                self.console.print(f"  {node:<10} {title:<32} ▶ {step}", highlight=False,
                                   soft_wrap=True)

    def hold(self, seconds: float) -> None:
        """Nothing to animate in plain output."""

    def event(self, text: str) -> None:
        """Print an event line."""
        self.console.print(f"* {text}", highlight=False, soft_wrap=True)

    def parked(self, rows: list[tuple[str, str, str, str]], *, down: str) -> None:
        """Print where every flow is parked when ``down`` stops."""
        self.console.print(f"* Stopping {down}. Where each flow is parked:", highlight=False)
        for node, flow, run_id, where in rows:
            self.console.print(f"    {node} {flow} {run_id}: {where}", highlight=False,
                               soft_wrap=True)


def _cash_of(node: Node[LedgerServiceHub]) -> Amount[str]:
    total = 0
    for state in node.services.vault.query(Cash.State):
        total += state.state.data.amount.quantity
    return Amount(total, "USD")


def vault_table(title: str, seller: Node[LedgerServiceHub], buyer: Node[LedgerServiceHub]) -> Table:
    """Cash and commercial paper held by each bank."""
    table = Table(title=f"{title}: vaults")
    for column in ("bank", "cash", "commercial paper"):
        table.add_column(column, justify="right" if column != "bank" else "left")
    for node in (seller, buyer):
        papers = node.services.vault.query(CommercialPaper.State)
        face = sum(p.state.data.face_value.quantity for p in papers)
        table.add_row(node.party.name, str(_cash_of(node)),
                      f"{len(papers)} (face {Amount(face, 'USD')})")
    return table
