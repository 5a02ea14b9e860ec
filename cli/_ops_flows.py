"""``FlowBook``: what ``NodeOps`` knows of one node's flows, turned into values and feeds.

The node offers snapshots (``flows()``, ``hospital()``), result futures and progress trackers,
not events, so the book compares snapshots on each look (:meth:`FlowBook.sync`, after every
operation and every event the pump delivers) and watches each running flow's result future
to learn how it ended. It remembers the last ``history`` finished flows, so that their
outcome can still be asked for, watched and abbreviated to.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cli._ops_feeds import FeedSubscription, Listeners
from cli._ops_values import (
    FlowOutcome,
    HospitalRow,
    ProgressSnapshot,
    StateMachine,
    StateMachineUpdate,
    outcome_of,
    progress_of,
)
from fibers import Node, ProgressTracker, StateMachineRunId

__all__ = ["FlowBook", "hospital_rows"]


def hospital_rows(node: Node) -> list[HospitalRow]:
    """The node's hospitalised flows as values."""
    return [HospitalRow(str(e.run_id), e.flow_class.rpartition(":")[2], e.diagnosis)
            for e in node.hospital()]


class FlowBook:
    """Running, hospitalised and recently finished flows of one node, and their feeds."""

    def __init__(self, history: int) -> None:
        self._history = history
        self._node: Node | None = None
        # Invariant: _known holds the flows the feed last reported as running on _node.
        self._known: dict[str, StateMachine] = {}
        # Invariant: _attached maps each flow whose end we watch to its result future; a flow
        # that went to the hospital is dropped (a retry runs it with a new future).
        self._attached: dict[str, Future[Any]] = {}
        self._trackers: dict[str, ProgressTracker] = {}  # of the attached flows that have one
        self._finished: OrderedDict[str, ProgressSnapshot] = OrderedDict()
        self._hospitalised: dict[str, str] = {}  # run id -> flow class, as last seen
        self._syncing = False
        self.machines = Listeners[StateMachineUpdate]()
        self._progress: dict[str, Listeners[ProgressSnapshot]] = {}

    def see(self, node: Node) -> None:
        """Follow ``node``: a restarted node restored its flows into new state machines, with
        new futures and trackers."""
        if node is self._node:
            return
        self._node = node
        self._attached.clear()
        self._trackers.clear()
        node.on_flow_end(functools.partial(self._ended, node))

    # ----- what is known -------------------------------------------------------------------------

    def running(self) -> list[StateMachine]:
        """The flows running at the last look."""
        return list(self._known.values())

    def finished(self, run_id: str) -> ProgressSnapshot | None:
        """The final snapshot of a flow seen to end (its outcome set)."""
        return self._finished.get(run_id)

    def outcomes(self) -> list[FlowOutcome]:
        """How the remembered finished flows ended, oldest first."""
        return [s.outcome for s in self._finished.values() if s.outcome is not None]

    def candidates(self, hospital: list[HospitalRow]) -> dict[str, str]:
        """Every run id a prefix may name (hospitalised, finished, running) -> flow class."""
        self.note_hospital(hospital)
        return {**{r.run_id: r.flow_class for r in hospital},
                **{rid: s.flow_class for rid, s in self._finished.items()},
                **{rid: m.flow_class for rid, m in self._known.items()}}

    def note_hospital(self, rows: list[HospitalRow]) -> None:
        """Remember the classes of hospitalised flows (a retry that ends at once needs it)."""
        self._hospitalised.update((row.run_id, row.flow_class) for row in rows)

    def flow_class(self, run_id: str) -> str:
        """The short class name of a flow the book knows of, or "?"."""
        machine = self._known.get(run_id)
        if machine is not None:
            return machine.flow_class
        finished = self._finished.get(run_id)
        return finished.flow_class if finished else self._hospitalised.get(run_id, "?")

    # ----- feeds ---------------------------------------------------------------------------------

    def progress_feed(
        self, run_id: str, on_progress: Callable[[ProgressSnapshot], object]
    ) -> FeedSubscription:
        """See ``NodeOps.progress_feed``; ``run_id`` is a full id."""
        final = self._finished.get(run_id)
        if final is not None:
            on_progress(final)
            return FeedSubscription(lambda: None)
        flow_class = self.flow_class(run_id)
        listeners = self._progress.setdefault(run_id, Listeners())
        subscription = listeners.add(on_progress)
        tracker = self._trackers.get(run_id)
        if tracker is None:
            on_progress(ProgressSnapshot(run_id, flow_class, (), -1))
            inner = None
        else:
            on_progress(progress_of(run_id, flow_class, tracker))
            inner = self._follow_tracker(run_id, flow_class, tracker, on_progress)

        def close() -> None:
            subscription.unsubscribe()
            if inner is not None:
                inner()
            if not listeners and self._progress.get(run_id) is listeners:
                del self._progress[run_id]

        return FeedSubscription(close)

    @staticmethod
    def _follow_tracker(
        run_id: str, flow_class: str, tracker: ProgressTracker,
        on_progress: Callable[[ProgressSnapshot], object],
    ) -> Callable[[], None]:
        replayed = len(tracker.changes.values)  # a new subscriber first gets the history
        seen = 0

        def changed(_change: object) -> None:
            nonlocal seen
            seen += 1
            if seen > replayed:
                on_progress(progress_of(run_id, flow_class, tracker))

        subscription = tracker.changes.subscribe(
            changed, lambda _e: on_progress(progress_of(run_id, flow_class, tracker)))
        return subscription.unsubscribe

    # ----- looking -------------------------------------------------------------------------------

    def sync(self, node: Node) -> None:
        """Report flows that appeared, changed or left since the last look."""
        if self._syncing:
            return  # an observer called back into NodeOps: the outer pass finishes the job
        self._syncing = True
        try:
            self._sync(node)
        finally:
            self._syncing = False

    def _sync(self, node: Node) -> None:
        now = {str(s.run_id): s for s in node.flows()}
        for rid, summary in now.items():
            machine = StateMachine(rid, summary.flow_class.rpartition(":")[2], summary.status,
                                   summary.progress_step, summary.waiting_for)
            if rid not in self._attached:
                self.attach(node, rid, machine.flow_class, node.handle(summary.run_id).result,
                            node.progress_tracker(summary.run_id))
            previous = self._known.get(rid)
            if previous != machine:
                self._known[rid] = machine
                self.machines.publish(StateMachineUpdate(
                    "added" if previous is None else "changed", machine))
        hospital = {row.run_id: row for row in hospital_rows(node)}
        self.note_hospital(list(hospital.values()))
        for rid in hospital:
            self._attached.pop(rid, None)
            self._trackers.pop(rid, None)
        for rid in [rid for rid in self._known if rid not in now]:
            machine = self._known.pop(rid)
            row = hospital.get(rid)
            outcome = None if row is None else FlowOutcome(
                rid, machine.flow_class, "HOSPITALIZED", None, row.diagnosis)
            self.machines.publish(StateMachineUpdate("removed", machine, outcome))

    def attach(self, node: Node, run_id: str, flow_class: str, result: Future[Any],
               tracker: ProgressTracker | None) -> None:
        """Watch a running flow's result future (and keep its tracker) to learn its end."""
        if run_id in self._attached:
            return
        self._attached[run_id] = result
        if tracker is not None:
            self._trackers[run_id] = tracker

        def settled(future: Future[Any]) -> None:
            if self._attached.get(run_id) is not future or node is not self._node:
                return  # an abandoned state machine (node stopped, flow hospitalised)
            self._settled(run_id, flow_class, outcome_of(run_id, flow_class, future))

        result.add_done_callback(settled)

    def _ended(self, node: Node, run_id: StateMachineRunId) -> None:
        """A flow ended. One whose result future is watched reports its outcome itself; one
        that ended unobserved (it ran and ended within one step, e.g. on a retry, which gives
        no handle) is remembered as ENDED, its result unknown."""
        rid = str(run_id)
        if node is self._node and rid not in self._attached and rid not in self._finished:
            flow_class = self.flow_class(rid)
            self._settled(rid, flow_class, FlowOutcome(rid, flow_class, "ENDED", None, None))

    def _settled(self, run_id: str, flow_class: str, outcome: FlowOutcome) -> None:
        tracker = self._trackers.pop(run_id, None)
        self._attached.pop(run_id, None)
        self._hospitalised.pop(run_id, None)
        if tracker is not None:
            final = progress_of(run_id, flow_class, tracker, outcome)
        else:
            final = ProgressSnapshot(run_id, flow_class, (), -1, outcome=outcome)
        self._finished[run_id] = final
        while len(self._finished) > self._history:
            self._finished.popitem(last=False)
        machine = self._known.pop(run_id, None)
        if machine is not None:
            self.machines.publish(StateMachineUpdate("removed", machine, outcome))
        listeners = self._progress.pop(run_id, None)
        if listeners is not None:
            listeners.publish(final)
