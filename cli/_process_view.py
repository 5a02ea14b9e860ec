"""How ``fibers demo --processes`` shows itself: progress snapshots pushed over RPC (docs/rpc.md,
``start_tracked_flow``) as a live table with an event log, or as plain lines for logs and CI.

Contract: every method runs on the demo's thread (feed events are queued by the caller, never
drawn from a feed's reader thread); ``progress(node, snapshot)`` takes one snapshot as the RPC
sends it (``run_id``, ``flow_class``, ``steps`` of ``[depth, label]``, ``index``, ``outcome``).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["ProcessReporter", "step_of"]


def step_of(snapshot: dict[str, Any]) -> str:
    """The innermost current step of a snapshot; ``Done`` or ``Failed`` once it ended."""
    outcome = snapshot.get("outcome")
    if outcome is not None:
        return "Done" if outcome.get("status") == "COMPLETED" else f"Failed: {outcome['error']}"
    steps, index = snapshot.get("steps") or [], int(snapshot.get("index", -1))
    return str(steps[index][1]) if 0 <= index < len(steps) else "Starting"


class ProcessReporter:
    """Live (a table of flows and steps, and events) or plain lines (one per new step)."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        # run id (or its short form, for flows seen only when parked) -> node, flow, step
        self.steps: dict[str, tuple[str, str, str]] = {}
        self.events: list[str] = []
        self.down: set[str] = set()
        self._live = Live(console=console, auto_refresh=False, transient=False) if live \
            else None

    def __enter__(self) -> ProcessReporter:
        if self._live is not None:
            self._live.__enter__()
            self._draw()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._draw()
            self._live.__exit__(kind, exc, tb)

    def progress(self, node: str, snapshot: dict[str, Any]) -> None:
        """A flow of ``node`` moved (or ended)."""
        run_id = str(snapshot["run_id"])
        flow = str(snapshot["flow_class"]).split(":")[-1]
        step = step_of(snapshot)
        if self.steps.get(run_id, ("", "", ""))[2] == step:
            return
        self.steps[run_id] = (node, flow, step)
        if self._live is None:
            title = f"{flow} {run_id[:8]}"
            self.console.print(f"  {node:<10} {title:<32} ▶ {step}", highlight=False,
                               soft_wrap=True)
        else:
            self._draw()

    def event(self, text: str, *, down: str | None = None, up: str | None = None) -> None:
        """Something happened; ``down``/``up``: that node stopped or runs again."""
        if down is not None:
            self.down.add(down)
        if up is not None:
            self.down.discard(up)
            for run_id, (node, flow, step) in list(self.steps.items()):
                if node == up and step.startswith("parked"):
                    self.steps[run_id] = (node, flow, "resumed from its checkpoint")
        if self._live is None:
            self.console.print(f"* {text}", highlight=False, soft_wrap=True)
        else:
            self.events.append(text)
            self._draw()

    def parked(self, rows: list[tuple[str, str, str, str]], *, down: str) -> None:
        """Where every flow is parked when ``down`` is about to stop."""
        if self._live is None:
            self.console.print(f"* Stopping {down}. Where each flow is parked:",
                               highlight=False)
            for node, flow, run_id, where in rows:
                self.console.print(f"    {node} {flow} {run_id}: {where}", highlight=False,
                                   soft_wrap=True)
            return
        self.events.extend(f"  {node} {flow} {run_id}: parked at {where}"
                           for node, flow, run_id, where in rows)
        for node, flow, run_id, where in rows:
            if node == down:  # its feed is gone with it: show where its flows wait
                self.steps[run_id] = (node, flow, f"parked at {where}")
        self._draw()

    def hold(self, seconds: float) -> None:
        """Keep the screen as it is for ``seconds`` (so a person sees the node down)."""
        if self._live is not None and seconds > 0:
            time.sleep(seconds)

    def _draw(self) -> None:
        assert self._live is not None
        self._live.update(self._render(), refresh=True)

    def _render(self) -> RenderableType:
        table = Table(expand=True, title="flows (progress pushed over RPC)")
        for column in ("node", "flow", "run id", "step"):
            table.add_column(column)
        for run_id, (node, flow, step) in self.steps.items():
            style = "red" if node in self.down else ""
            table.add_row(node, flow, run_id[:8], step, style=style)
        log = Text("\n".join(self.events[-8:]) or "…", style="yellow")
        return Group(table, Panel(log, title="events"))
