"""The scheduler of the step pipeline: which flow state machines a node runs, in which order,
and when (docs/architecture.md, "The parts").

It owns the node's running flow state machines (by run id), the run queue, the sleep timers,
the retry timers of flows whose step could not be stored, and the event waiters. It knows
nothing of messages or storage: ``run_until_idle`` runs each runnable state machine's step
through the ``step`` callback and, once nothing is runnable, lets the commit stage commit the
round (``commit_pending`` / ``commit``), until neither has work left.

Contract: scheduler thread only; a state machine is in the run queue at most once (its
``scheduled`` flag), and a finished or abandoned one is never queued.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from types import MappingProxyType

from fibers._errors import KilledFlowException
from fibers._flow_logic import StateMachineRunId
from fibers._state_machine import FlowStateMachine

__all__ = ["Scheduler"]


def _ignore(run_id: StateMachineRunId) -> None:
    """A timer or event of a flow that no longer runs: nothing to wake."""


class Scheduler:
    """Run queue, timers, retry timers and event waiters of one node."""

    def __init__(
        self,
        step: Callable[[FlowStateMachine, BaseException | None], None],
        commit_pending: Callable[[], bool] | None,
        commit: Callable[[], None],
    ) -> None:
        """``commit_pending`` is None for a node that never commits (one without storage)."""
        self._step = step
        self._commit_pending = commit_pending
        self._commit = commit
        self._machines: dict[StateMachineRunId, FlowStateMachine] = {}
        self.by_run_id: Mapping[StateMachineRunId, FlowStateMachine] = MappingProxyType(
            self._machines)
        """The running state machines by run id: a read-only live view (``len`` is cheap)."""
        # Invariant: each machine in _runnable is there once and has its ``scheduled`` flag set
        # (``kill`` also sets the flag, without queueing, to keep the machine off the queue).
        self._runnable: deque[FlowStateMachine] = deque()
        self._timer_seq = itertools.count()
        # Sleep timers and event waiters name flows by run id, not by state machine: a
        # hibernated flow (fibers._hibernation) keeps its timer and its event without keeping
        # its state machine. One whose run id has no running machine goes to ``absent``.
        self._timers: list[tuple[datetime, int, StateMachineRunId]] = []
        self._retry_timers: list[tuple[datetime, int, StateMachineRunId]] = []
        self._event_waiters: dict[str, set[StateMachineRunId]] = {}
        self._running = False
        # Invariant: the earliest deadline of _timers and _retry_timers (None when both are
        # empty), refreshed wherever either changes: the node reads it at every round.
        self.earliest: datetime | None = None
        """The earliest pending sleep or retry deadline (read only; see ``next_deadline``)."""
        self.absent: Callable[[StateMachineRunId], object] = _ignore

    # ----- the state machines this node runs ------------------------------------------------------

    def add(self, machine: FlowStateMachine) -> None:
        """``machine`` runs on this node (until ``remove``)."""
        self._machines[machine.run_id] = machine

    def get(self, run_id: StateMachineRunId) -> FlowStateMachine | None:
        """The running state machine ``run_id``, if any."""
        return self._machines.get(run_id)

    def remove(self, run_id: StateMachineRunId) -> None:
        """``run_id`` no longer runs here (finished, parked, dropped or waiting for a retry)."""
        self._machines.pop(run_id, None)

    def machines(self) -> Iterator[FlowStateMachine]:
        """The running state machines, in the order they were added."""
        return iter(list(self._machines.values()))

    def __len__(self) -> int:
        return len(self._machines)

    # ----- the run queue --------------------------------------------------------------------------

    def schedule(self, machine: FlowStateMachine) -> None:
        """Make ``machine`` runnable (no-op when queued already, finished or abandoned)."""
        if not machine.scheduled and not machine.finished and not machine.abandoned:
            machine.scheduled = True
            self._runnable.append(machine)

    def unschedule(self, machine: FlowStateMachine) -> None:
        """Take ``machine`` off the run queue."""
        if machine.scheduled:
            self._runnable = deque(m for m in self._runnable if m is not machine)
            machine.scheduled = False

    @property
    def running(self) -> bool:
        """Whether ``run_until_idle`` is on the stack."""
        return self._running

    def run_until_idle(self) -> None:
        """Run runnable state machines until every one waits for something, committing their
        steps in one group commit per round. Re-entrant calls (from a flow or a result
        callback) return at once: the outer loop picks the work up."""
        if self._running:
            return
        self._running = True
        try:
            while True:
                while self._runnable:
                    machine = self._runnable.popleft()
                    machine.scheduled = False
                    self._step(machine, None)
                pending = self._commit_pending
                if pending is None or not pending():
                    break
                self._commit()
        finally:
            self._running = False

    def run_one(self, machine: FlowStateMachine) -> None:
        """Run ``machine``'s step now, whether or not a round is running (a flow woken from
        hibernation replays to its checkpoint before what woke it is handed over)."""
        self.unschedule(machine)
        self._step(machine, None)

    def kill(self, machine: FlowStateMachine, error: KilledFlowException) -> None:
        """Throw ``error`` into ``machine`` at its suspension (running it to its first one
        when it has not started yet) and end it there: a flow that catches the kill is ended
        at its next request. The caller runs a round afterwards."""
        if not machine.started:  # run it to its first suspension: the kill lands there
            self.unschedule(machine)
            self._step(machine, None)
            if machine.finished or machine.abandoned:
                return
        machine.scheduled = True  # keep it off the run queue while it is being killed
        try:
            machine.kill = error
            self._step(machine, error)
        finally:
            machine.scheduled = False
        machine.end_greenlet()  # it caught the kill and was ended at its next request

    # ----- timers and waiters ---------------------------------------------------------------------

    def wake_at(self, run_id: StateMachineRunId, deadline: datetime) -> None:
        """Make flow ``run_id`` runnable once the clock reaches ``deadline`` (its running
        machine, else ``absent(run_id)``)."""
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), run_id))
        self._note_deadline(deadline)

    def retry_at(self, run_id: StateMachineRunId, deadline: datetime) -> None:
        """Retry ``run_id`` (from storage) once the clock reaches ``deadline``."""
        heapq.heappush(self._retry_timers, (deadline, next(self._timer_seq), run_id))
        self._note_deadline(deadline)

    def _note_deadline(self, deadline: datetime) -> None:
        if self.earliest is None or deadline < self.earliest:
            self.earliest = deadline

    @property
    def retry_pending(self) -> bool:
        """Whether a flow waits for its retry."""
        return bool(self._retry_timers)

    def due_retries(self, now: datetime) -> list[StateMachineRunId]:
        """The run ids whose retry is due at ``now`` (taken off the timers)."""
        due = []
        while self._retry_timers and self._retry_timers[0][0] <= now:
            due.append(heapq.heappop(self._retry_timers)[2])
        self.earliest = self.next_deadline()
        return due

    def wake_due(self, now: datetime) -> int:
        """Schedule every unfinished state machine whose deadline passed (a flow without a
        running machine goes to ``absent``); how many."""
        woken = 0
        while self._timers and self._timers[0][0] <= now:
            _, _, run_id = heapq.heappop(self._timers)
            machine = self._machines.get(run_id)
            if machine is None:
                self.absent(run_id)
                woken += 1
            elif not machine.finished:
                self.schedule(machine)
                woken += 1
        self.earliest = self.next_deadline()
        return woken

    def next_deadline(self) -> datetime | None:
        """The earliest pending sleep or retry deadline, if any."""
        deadlines = [heap[0][0] for heap in (self._timers, self._retry_timers) if heap]
        return min(deadlines, default=None)

    def await_event(self, run_id: StateMachineRunId, key: str) -> None:
        """Wake flow ``run_id`` the next time ``key`` is signalled."""
        self._event_waiters.setdefault(key, set()).add(run_id)

    def signal(self, key: str) -> None:
        """Schedule the state machines waiting for ``key`` (``absent`` for a flow without a
        running machine)."""
        for run_id in self._event_waiters.pop(key, ()):
            machine = self._machines.get(run_id)
            if machine is None:
                self.absent(run_id)
            else:
                self.schedule(machine)

    def clear(self) -> None:
        """Forget everything (node stop); returns nothing, abandons nothing."""
        self._machines.clear()
        self._runnable.clear()
        self._timers.clear()
        self._retry_timers.clear()
        self._event_waiters.clear()
        self.earliest = None
