"""How the shell shows things: rich tables and trees built from ``NodeOps`` values only.

Progress arrives as :class:`~cli._ops_values.ProgressSnapshot` values (a flattened tree and
the position of the deepest current step), so the same rendering works for a node in another
process. :class:`WatchView` keeps the latest snapshot of each watched flow and is refreshed by
its owner's loop (``rich.live.Live(auto_refresh=False)``), never by a thread.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from cli._ops_values import (
    FlowClassInfo,
    FlowOutcome,
    HospitalRow,
    NodeSummary,
    PartyRow,
    ProgressSnapshot,
    StateMachine,
    VaultRow,
)
from fibers import ProgressTracker

__all__ = [
    "WatchView",
    "checkpoints_tree",
    "flow_classes_table",
    "hospital_table",
    "inspect_tree",
    "machines_table",
    "network_table",
    "node_table",
    "outcome_text",
    "progress_title",
    "render_progress",
    "short_ref",
    "vault_table",
]

MARKER = "▶"
_HIDDEN = {ProgressTracker.STARTING.label, ProgressTracker.DONE.label}


def _table(*columns: str, title: str | None = None) -> Table:
    return Table(*columns, title=title, box=box.SIMPLE_HEAD, title_justify="left",
                 title_style="bold", pad_edge=False)


def _row(table: Table, *cells: str) -> None:
    """Add a row of plain text: values such as "[a, b]" must not be read as markup."""
    table.add_row(*(Text(cell) for cell in cells))


def short_ref(ref: str) -> str:
    """``3f2a9c1b0d4e(0)`` for a full ``<64 hex digits>(0)`` state reference."""
    tx_hash, _, index = ref.partition("(")
    return f"{tx_hash[:12]}({index}" if index else ref


# ----- progress ----------------------------------------------------------------------------------

def _ancestors(steps: tuple[tuple[int, str], ...], index: int) -> set[int]:
    """Positions of the steps the current step is nested in (their sub-flows are running)."""
    found: set[int] = set()
    if not 0 <= index < len(steps):
        return found
    depth = steps[index][0]
    for position in range(index - 1, -1, -1):
        if steps[position][0] < depth:
            found.add(position)
            depth = steps[position][0]
    return found


def render_progress(snapshot: ProgressSnapshot, *, title: RenderableType | None = None) -> Tree:
    """The flow's steps as a tree: done "✓ label" (green), current "▶ label" (bold, with the
    steps it is nested in), pending "  label" (dim); a failure marks the current step
    "✗ label — Type: message" (red). The top STARTING and DONE entries are not shown, except
    STARTING while it is current."""
    root = Tree(title if title is not None else "", hide_root=title is None)
    parents: list[Tree] = [root]
    ancestors = _ancestors(snapshot.steps, snapshot.index)
    failed = snapshot.error is not None or (
        snapshot.outcome is not None and snapshot.outcome.status in ("FAILED", "KILLED"))
    error = snapshot.error or (snapshot.outcome.error if snapshot.outcome else None)
    last = len(snapshot.steps) - 1
    for position, (depth, label) in enumerate(snapshot.steps):
        sentinel = depth == 0 and position in (0, last) and label in _HIDDEN
        if sentinel and not (position == 0 == snapshot.index):
            continue
        del parents[depth + 1:]
        if position < snapshot.index and position not in ancestors:
            text = Text(f"✓ {label}", style="green")
        elif position == snapshot.index and failed:
            text = Text(f"✗ {label}" + (f" — {error}" if error else ""), style="red")
        elif position == snapshot.index or position in ancestors:
            text = Text(f"{MARKER} {label}", style="bold")
        else:
            text = Text(f"  {label}", style="dim")
        parent = parents[min(depth, len(parents) - 1)]
        parents.append(parent.add(text))
    return root


def progress_title(snapshot: ProgressSnapshot) -> Text:
    """``CashPaymentFlow  1a2b3c4d`` with how it ended, once it did."""
    title = Text(f"{snapshot.flow_class}  {snapshot.run_id[:8]}", style="bold")
    if snapshot.outcome is not None:
        title.append("  ")
        title.append_text(_status_text(snapshot.outcome.status))
    return title


def _status_text(status: str) -> Text:
    styles = {"COMPLETED": "green", "FAILED": "red", "KILLED": "red", "HOSPITALIZED": "yellow"}
    return Text(status.lower(), style=styles.get(status, ""))


def outcome_text(outcome: FlowOutcome) -> Text:
    """``✓ CashIssueFlow 1a2b3c4d completed: SignedTransaction 9f…`` (or ✗ ... failed: Type:
    message)."""
    head = f"{outcome.flow_class} {outcome.run_id[:8]} {outcome.status.lower()}"
    if outcome.status == "COMPLETED":
        return Text(f"✓ {head}: {outcome.result}", style="green")
    if outcome.error is None:
        return Text(f"• {head} (its result was not observed)")
    return Text(f"✗ {head}: {outcome.error}", style="red")


class WatchView:
    """The latest progress of each watched flow, as titled trees (one line per flow when the
    trees are taller than the console). ``dirty`` is set by :meth:`update` and cleared when
    rendered."""

    def __init__(self) -> None:
        self.snapshots: dict[str, ProgressSnapshot] = {}
        self.dirty = True
        self.footer = ""

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Show ``snapshot`` for its flow."""
        self.snapshots[snapshot.run_id] = snapshot
        self.dirty = True

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self.dirty = False
        if not self.snapshots:
            yield Text("no flows running; waiting for some to start", style="dim")
        else:
            trees = Group(*(render_progress(s, title=progress_title(s))
                            for s in self.snapshots.values()))
            lines = console.render_lines(trees, options.update(height=None), pad=False)
            if len(lines) + 1 > options.max_height:
                yield Group(*(self._line(s) for s in self.snapshots.values()))
            else:
                yield trees
        if self.footer:
            yield Text(self.footer, style="dim")

    @staticmethod
    def _line(snapshot: ProgressSnapshot) -> Text:
        steps, index = snapshot.steps, snapshot.index
        label = steps[index][1] if 0 <= index < len(steps) else "not started"
        line = progress_title(snapshot)
        line.append(f" — {label}")
        line.no_wrap, line.overflow = True, "ellipsis"
        return line


# ----- tables ------------------------------------------------------------------------------------

def machines_table(machines: list[StateMachine]) -> Table:
    """Running flows: id, class, status, step, what each waits for."""
    table = _table("Run id", "Flow", "Status", "Step", "Waiting for")
    for m in machines:
        _row(table, m.run_id[:8], m.flow_class, m.status.lower(), m.progress_step or "",
                      m.waiting_for or "")
    return table


def flow_classes_table(flows: list[FlowClassInfo]) -> Table:
    """The flows that may be started, with their signatures."""
    table = _table("Flow", "Start with")
    for flow in flows:
        args = ", ".join(f"{p.name}: <{p.type_name}>" for p in flow.params if p.required)
        _row(table, flow.signature, f"flow start {flow.name} {args}".rstrip())
    return table


def hospital_table(rows: list[HospitalRow]) -> Table:
    """Hospitalised flows and their diagnosis."""
    table = _table("Run id", "Flow", "Diagnosis")
    for row in rows:
        _row(table, row.run_id[:8], row.flow_class, row.diagnosis)
    return table


def vault_table(rows: list[VaultRow], *, title: str | None = None) -> Table:
    """Unconsumed states: reference (abbreviated), class, description, notary, lock."""
    table = _table("Ref", "Type", "State", "Notary", "Locked", title=title)
    for row in rows:
        _row(table, short_ref(row.ref), row.state_type, row.description, row.notary,
                      "locked" if row.locked else "")
    return table


def network_table(rows: list[PartyRow], down: set[str] | None = None) -> Table:
    """The parties on the network map (and which nodes are down, when known)."""
    table = _table("Party", "Key", "Role", "Status")
    for row in rows:
        roles = [r for r, on in (("notary", row.notary), ("this node", row.this_node)) if on]
        status = "" if down is None else ("down" if row.name in down else "up")
        _row(table, row.name, row.key[:16], ", ".join(roles), status)
    return table


def node_table(info: NodeSummary) -> Table:
    """Who the node is, its flows and its vault."""
    table = _table("Node", info.name)
    _row(table, "Key", info.key)
    _row(table, "Notary", "yes" if info.notary else "no")
    _row(table, "Running flows", str(info.flows))
    _row(table, "Hospitalised", str(info.hospitalised))
    _row(table, "Draining", ("yes (drained)" if info.drained else "yes") if info.draining
                  else "no")
    vault = ", ".join(f"{count} {kind}" for kind, count in info.vault) or "empty"
    _row(table, "Vault", vault)
    return table


# ----- inspection --------------------------------------------------------------------------------

def inspect_tree(entry: dict[str, Any]) -> Tree:
    """One flow as ``NodeOps.inspect_flow`` describes it: status, step, wait, sessions, and
    its suspended stack (outermost first) with each frame's locals."""
    flow_class = str(entry.get("flow_class", "?")).rpartition(":")[2]
    tree = Tree(Text(f"{flow_class}  {entry.get('run_id', '?')}", style="bold"))
    for key, label in (("status", "status"), ("progress_step", "step"),
                       ("waiting_for", "waiting for"), ("diagnosis", "diagnosis"),
                       ("result", "result"), ("error", "error"),
                       ("journal_records", "journal records"), ("locals_from", "locals")):
        value = entry.get(key)
        if value is not None:
            tree.add(Text(f"{label}: {value}"))
    sessions = entry.get("sessions") or []
    if sessions:
        branch = tree.add(Text("sessions", style="bold"))
        for s in sessions:
            role = "we opened" if s.get("initiated_by_us") else "they opened"
            ended = ", peer ended" if s.get("peer_ended") else ""
            branch.add(Text(f"{s.get('peer')} ({role}; next send #{s.get('next_send_seq')}, "
                            f"next receive #{s.get('next_receive_seq')}{ended})"))
    stack = entry.get("stack") or []
    if stack:
        branch = tree.add(Text("stack (outermost first)", style="bold"))
        for frame in stack:
            module = frame.get("module")  # absent when no locals were stored: line only
            where = (f"{frame.get('function')}  {module}:{frame.get('line')}" if module
                     else f"{frame.get('function')}  line {frame.get('line')}")
            node = branch.add(Text(where, style="cyan"))
            for name, value in (frame.get("locals") or {}).items():
                node.add(Text(f"{name} = {value}", overflow="ellipsis", no_wrap=True))
    elif entry.get("status") not in ("COMPLETED", "FAILED", "KILLED"):
        tree.add(Text("no stack snapshot (the flow has not suspended yet)", style="dim"))
    return tree


def checkpoints_tree(entries: list[dict[str, Any]], node_name: str) -> RenderableType:
    """Every checkpoint of the node, each as :func:`inspect_tree` shows a flow."""
    if not entries:
        return Text(f"{node_name} has no checkpoints: no flow is in flight")
    return Group(Text(f"{len(entries)} checkpoint{'s' if len(entries) != 1 else ''} on "
                      f"{node_name}", style="bold"), *(inspect_tree(e) for e in entries))
