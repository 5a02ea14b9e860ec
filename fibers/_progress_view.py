"""Rich rendering of progress: one tracker as a tree, and many flows at once.

:func:`render_tracker` draws one :class:`~fibers._progress.ProgressTracker`.
:class:`FlowTreesView` draws every flow of a node, each as a titled tree, or one line per flow
when the trees do not fit the height available.

Threading: trackers are only read in the thread that drives them (the scheduler thread). The
view learns of changes through each tracker's ``changes`` stream, which delivers in that
thread, so its owner must render it there too, e.g. a ``rich.live.Live(auto_refresh=False)``
refreshed from the scheduler loop whenever :attr:`FlowTreesView.dirty` is set (or from
``on_change``), never from Live's own refresh thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text
from rich.tree import Tree

from fibers._stream import Subscription

if TYPE_CHECKING:
    # Types only: the tracker module renders itself with this one (ProgressTracker.__rich__).
    from fibers._progress import Change, ProgressTracker

__all__ = ["STATIC_MARKER", "FlowTreesView", "describe_error", "render_tracker", "summary_line"]

STATIC_MARKER = "▶"


def describe_error(exc: BaseException) -> str:
    """``"ExceptionType: message"``, or just the type name when the message is empty."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def render_tracker(
    tracker: ProgressTracker,
    title: RenderableType | None = None,
    *,
    marker: str | Text = STATIC_MARKER,
) -> Tree:
    """``tracker`` as a :class:`rich.tree.Tree`, each child tracker nested under its step.

    Done steps read "✓ label" (green), the current step "<marker> label" (bold), pending steps
    "  label" (dim). A tracker that ended with an error shows its current step as
    "✗ label — ExceptionType: message" (red), and the current steps of the trackers below that
    step as "✗ label". UNSTARTED and DONE are never shown (every step ticked means done);
    STARTING is shown only while it is current; UNSTARTED only if the tracker failed there.
    Without ``title`` the root is hidden. The default marker keeps renders deterministic; pass
    a spinner frame to animate.
    """
    tree = Tree(title if title is not None else "", hide_root=title is None)
    _add_steps(tree, tracker, marker, failed_above=False)
    return tree


def _add_steps(
    node: Tree, tracker: ProgressTracker, marker: str | Text, *, failed_above: bool,
    done_above: bool = False,
) -> None:
    failed = failed_above or tracker.error is not None
    for index, step in enumerate(tracker.steps):
        if not _is_shown(tracker, index):
            continue
        if done_above:  # the parent moved past this tracker's step: all of it is done
            branch = node.add(Text(f"✓ {step.label}", style="green"))
        else:
            branch = node.add(_step_text(tracker, index, marker, failed_above=failed))
        child = tracker.get_child_tracker(step)
        if child is not None:
            is_current = index == tracker.step_index
            _add_steps(branch, child, marker, failed_above=failed and is_current,
                       done_above=done_above or index < tracker.step_index)


def _is_shown(tracker: ProgressTracker, index: int) -> bool:
    if 2 <= index < len(tracker.steps) - 1:
        return True
    is_current = index == tracker.step_index
    return is_current and (index == 1 or tracker.error is not None)


def _step_text(
    tracker: ProgressTracker, index: int, marker: str | Text, *, failed_above: bool
) -> Text:
    label = tracker.steps[index].label
    if index < tracker.step_index:
        return Text(f"✓ {label}", style="green")
    if index > tracker.step_index:
        return Text(f"  {label}", style="dim")
    if tracker.error is not None:
        return Text(f"✗ {label} — {describe_error(tracker.error)}", style="red")
    if failed_above:
        return Text(f"✗ {label}", style="red")
    return Text.assemble(marker, " ", label, style="bold")


def summary_line(title: str, tracker: ProgressTracker) -> Text:
    """One line for a flow: ``"title — deepest current step label (n/m)"``.

    ``m`` counts the flattened tree's entries other than the top STARTING and DONE; ``n`` is the
    deepest current step's position among them (0 before the first user step, ``m`` at DONE).
    A failure on the current path prefixes the label with "✗" and appends the deepest error
    on that path (the one nearest the step shown).
    """
    tree, index = tracker.steps_tree, tracker.steps_tree_index
    total = len(tree) - 2
    label = tree[index][1] if index >= 0 else tracker.current_step.label
    done = min(max(index, 0), total)
    error = _error_on_current_path(tracker)
    if error is None:
        return Text(f"{title} — {label} ({done}/{total})")
    return Text(f"{title} — ✗ {label} ({done}/{total}) {describe_error(error)}", style="red")


def _error_on_current_path(tracker: ProgressTracker) -> BaseException | None:
    error = None
    node: ProgressTracker | None = tracker
    while node is not None:
        if node.error is not None:
            error = node.error
        node = node.get_child_tracker(node.current_step)
    return error


@dataclass
class _Flow:
    title: str
    tracker: ProgressTracker
    subscription: Subscription[Change]


class FlowTreesView:
    """A rich renderable showing the progress of many flows, refreshed by their events.

    Each flow is drawn as a tree titled with its title. When the trees are taller than the
    height available (``options.height``, else ``options.max_height``, which is the console
    height by default) every flow collapses to its :func:`summary_line`; if even those do not
    fit, the last line says how many flows were left out.

    Every event of a tracker that was added sets :attr:`dirty`; ``on_change`` is called each
    time :attr:`dirty` goes from False to True, and rendering clears it. With ``spinner`` (a
    rich spinner name such as ``"dots"``) the current steps carry an animated marker whose
    frame comes from ``console.get_time()``, so the owner should also refresh on a timer;
    without it they carry a static "▶". See the module docstring for threading.
    """

    def __init__(
        self,
        *,
        on_change: Callable[[], object] | None = None,
        spinner: str | None = None,
    ) -> None:
        self._flows: dict[str, _Flow] = {}
        self._on_change = on_change
        self._spinner = Spinner(spinner) if spinner is not None else None
        self.dirty = False

    @staticmethod
    def flow_title(flow_name: str, run_id: str, counterparty: str | None = None) -> str:
        """A conventional title: ``"TwoPartyTradeFlow.Seller  3f2a…  with BankB"``."""
        short_id = run_id if len(run_id) <= 4 else f"{run_id[:4]}…"
        title = f"{flow_name}  {short_id}"
        return f"{title}  with {counterparty}" if counterparty is not None else title

    @property
    def run_ids(self) -> list[str]:
        """The run ids shown, in the order they were added."""
        return list(self._flows)

    def add(self, run_id: str, title: str, tracker: ProgressTracker) -> None:
        """Show ``tracker`` under ``title``; raises ValueError if ``run_id`` is already shown."""
        if run_id in self._flows:
            raise ValueError(f"flow {run_id!r} is already in this view; remove it first")
        subscription = tracker.changes.subscribe(
            lambda _change: self._mark_dirty(),
            lambda _exc: self._mark_dirty(),
            self._mark_dirty,
        )
        self._flows[run_id] = _Flow(title, tracker, subscription)
        self._mark_dirty()

    def remove(self, run_id: str) -> None:
        """Stop showing ``run_id`` and unsubscribe from its tracker; KeyError if not shown."""
        flow = self._flows.pop(run_id, None)
        if flow is None:
            raise KeyError(f"flow {run_id!r} is not in this view")
        flow.subscription.unsubscribe()
        self._mark_dirty()

    def update_title(self, run_id: str, title: str) -> None:
        """Change the title of ``run_id``; KeyError if not shown."""
        flow = self._flows.get(run_id)
        if flow is None:
            raise KeyError(f"flow {run_id!r} is not in this view")
        if flow.title != title:
            flow.title = title
            self._mark_dirty()

    def _mark_dirty(self) -> None:
        if self.dirty:
            return
        self.dirty = True
        if self._on_change is not None:
            self._on_change()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self.dirty = False
        limit = options.height if options.height is not None else options.max_height
        marker = self._marker(console)
        trees = Group(
            *(
                render_tracker(flow.tracker, Text(flow.title, style="bold"), marker=marker)
                for flow in self._flows.values()
            )
        )
        lines = console.render_lines(trees, options.update(height=None), pad=False)
        if len(lines) > limit:
            summary = self._summary(limit)
            lines = console.render_lines(summary, options.update(height=None), pad=False)
        yield from _join(lines)

    def _marker(self, console: Console) -> str | Text:
        if self._spinner is None:
            return STATIC_MARKER
        frame = self._spinner.render(console.get_time())
        return frame if isinstance(frame, Text) else STATIC_MARKER

    def _summary(self, limit: int) -> Group:
        flows = list(self._flows.values())
        if len(flows) > limit:
            shown = max(limit - 1, 0)
            hidden = Text(f"… and {len(flows) - shown} more flows", style="dim")
            rows = [summary_line(f.title, f.tracker) for f in flows[:shown]]
            rows = [*rows, hidden][:limit]
        else:
            rows = [summary_line(f.title, f.tracker) for f in flows]
        for row in rows:
            row.no_wrap = True
            row.overflow = "ellipsis"
        return Group(*rows)


def _join(lines: list[list[Segment]]) -> Iterator[Segment]:
    for line in lines:
        yield from line
        yield Segment.line()
