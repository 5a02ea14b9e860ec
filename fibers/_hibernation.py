"""Hibernation: flows that gave up their greenlet, and waking a stored flow by replay
(docs/architecture.md, "Hibernation and lazy restore").

``revive`` is the one path that rebuilds a stored flow's state machine from its start record
and step records and lets it replay to its checkpoint: restore, the hospital's retries and
waking a hibernated flow all go through it. ``wake`` runs that replay at once and refeeds the
stored inbox, so the caller can hand the flow what woke it (a message, a kill, an inspection);
``wake_later`` schedules it instead (a timer or event: the request re-checks its condition when
the replay reaches it).

A parked flow (suspended, waiting for a message, a timer or an event) of a durable node
hibernates when it has been idle ``idle_after`` seconds, or when more than ``max_live`` flows
are parked live (the longest idle first): its greenlet is unwound as at node stop (its
``finally:`` blocks run, and any IO they attempt raises ``GreenletExit``) and its state machine
is dropped; its locals are captured first and stored (``FlowStateMachine.capture_locals``,
docs/checkpoint-format.md, "The snapshot policy"), for inspection. What it needs to be woken
is on disk, in the wake index the steps keep
(``wake_routes``, ``wake_waits``; docs/checkpoint-format.md, "The wake index"); in memory it
keeps its entry here (its class name and its outcome, where its result lands) and, when
it waits for a deadline or an event, the scheduler's timer or waiter by run id.

Contract: scheduler thread only. Only a flow whose last step is committed (the node is idle),
that is not replaying, being killed, refed or tracked, hibernates. A run id is in at most one
of: hibernated (here), running (the scheduler), the hospital, waiting for a retry.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from fibers._checkpoint_store import CheckpointStore, StoredFlow, session_prefix
from fibers._clock import Clock
from fibers._commit import CommitStage
from fibers._flow_logic import FlowInfo, FlowLogic, FlowOutcome, StateMachineRunId
from fibers._hospital import Hospital
from fibers._router import Route, Router
from fibers._scheduler import Scheduler
from fibers._sessions import class_name
from fibers._state_machine import FlowStateMachine, FlowStatus
from fibers._storage import CorruptRecordError

__all__ = ["Hibernated", "Hibernation"]

log = logging.getLogger("fibers.node")

MakeMachine = Callable[[StateMachineRunId, FlowLogic[Any]], FlowStateMachine]


class Hibernated:
    """What a hibernated flow keeps in memory besides its class name: its outcome (where its
    result lands; a handle taken before it hibernated holds the same one). A hibernated flow
    after a restart keeps only its class name (None until someone asks), shared by every
    flow of its class, until someone asks for its handle."""

    __slots__ = ("flow_class", "outcome")

    def __init__(self, flow_class: str | None, outcome: FlowOutcome[Any]) -> None:
        self.flow_class = flow_class
        self.outcome = outcome


class Hibernation:
    """The hibernated flows of one node, its hibernation policy, and waking flows by replay."""

    def __init__(
        self,
        checkpoints: CheckpointStore | None,
        scheduler: Scheduler,
        router: Router,
        commit: CommitStage,
        clock: Clock,
        *,
        make_machine: MakeMachine,
        refeed: Callable[[FlowStateMachine], object],
        idle_after: float | None,
        max_live: int | None,
    ) -> None:
        self._checkpoints = checkpoints
        self._scheduler = scheduler
        self._router = router
        self._commit = commit
        self._clock = clock
        self._make_machine = make_machine
        self._refeed = refeed
        self._hospital: Hospital | None = None
        self._idle_after = None if idle_after is None else timedelta(seconds=idle_after)
        self._max_live = max_live
        self.enabled = checkpoints is not None and (idle_after is not None
                                                    or max_live is not None)
        # Invariant: a hibernated flow maps to a ``Hibernated``, or, after a restart until
        # someone asks for its handle, to its class name (None: unknown yet); class names
        # are interned.
        self._hibernated: dict[StateMachineRunId, Hibernated | str | None] = {}
        # Live parked flows, least recently stepped first, with the time of their last step
        # (only while hibernation is enabled). Entries for flows that ended or were dropped
        # meanwhile are skipped when they come up.
        self._idle: dict[FlowStateMachine, datetime] = {}
        self._stepped: list[FlowStateMachine] = []

    def attach(self, hospital: Hospital) -> None:
        """Wire the hospital (built after this part: unreadable flows are parked there)."""
        self._hospital = hospital

    # ----- what is hibernated ---------------------------------------------------------------------

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._hibernated

    def __len__(self) -> int:
        return len(self._hibernated)

    def run_ids(self) -> Iterator[StateMachineRunId]:
        """The hibernated flows' run ids."""
        return iter(list(self._hibernated))

    def flow_class(self, run_id: StateMachineRunId) -> str:
        """The class name of hibernated flow ``run_id`` (read from its start record once after
        a restart; "?" when it cannot be read, which its wake will diagnose)."""
        held = self._hibernated[run_id]
        flow_class = held.flow_class if isinstance(held, Hibernated) else held
        if flow_class is None:
            flow_class = sys.intern(self._store().flow_class(run_id) or "?")
            if isinstance(held, Hibernated):
                held.flow_class = flow_class
            else:
                self._hibernated[run_id] = flow_class
        return flow_class

    def outcome(self, run_id: StateMachineRunId) -> FlowOutcome[Any]:
        """The outcome of hibernated flow ``run_id`` (made now if nobody asked yet), settled
        once the woken flow ends."""
        held = self._hibernated[run_id]
        if not isinstance(held, Hibernated):
            held = self._hibernated[run_id] = Hibernated(held, FlowOutcome())
        return held.outcome

    def adopt(self, run_id: StateMachineRunId) -> None:
        """Flow ``run_id`` is stored and not parked: it starts hibernated (lazy restore)."""
        self._hibernated[run_id] = None

    def clear(self) -> None:
        """Forget every hibernated flow (node stop: they stay in storage)."""
        self._hibernated.clear()
        self._idle.clear()
        self._stepped.clear()

    # ----- rebuilding a stored flow ---------------------------------------------------------------

    def revive(self, stored: StoredFlow, *, reindex: bool, schedule: bool = True
               ) -> FlowStateMachine | None:
        """Re-create the state machine of a stored flow and let it replay its journal back to
        its checkpoint (scheduled, or run by the caller when ``schedule`` is False); a flow
        that was parked or whose records are unreadable is parked instead (None).

        ``reindex`` (restore of storage older than the wake index, hospital retries): the
        flow's next step writes its routes and wait to the wake index, and a responder
        queues its confirm again (its first step may never have been stored). A woken
        hibernated flow needs neither: its first step, with its confirm, committed."""
        if stored.flow is None or stored.status == "HOSPITALIZED" or stored.start is None:
            self._parking().admit_stored(stored, record=not reindex and stored.flow is None)
            return None
        start = stored.start
        machine = self._make_machine(stored.run_id, stored.flow)
        if start.peer is not None:
            self._router.open_responder_session(
                machine, start.peer, start.session_id,
                FlowInfo(start.peer_version, start.peer_app), start.confirm_version)
            if not reindex:
                machine.take_outbox()  # the confirm committed with its first step
        machine.start_replay(stored.journal, stored.snapshot)
        machine.routes_changed = reindex
        wait = stored.wait
        machine.stored_wait = None if reindex else wait
        machine.wake_on_restart = True if wait is None else wait[2]  # (unreadable: kept safe)
        machine.needs_refeed = True
        self._scheduler.add(machine)
        if schedule:
            self._scheduler.schedule(machine)
        return machine

    # ----- waking ---------------------------------------------------------------------------------

    def wake(self, run_id: StateMachineRunId) -> FlowStateMachine | None:
        """Wake hibernated flow ``run_id`` now: replay it to its checkpoint and give it the
        messages stored for it, so that the caller can hand it what woke it. None when it
        is not hibernated, or when its records are unreadable or its code no longer replays
        them (it is parked in the hospital, and nothing it did leaves the node)."""
        if run_id not in self._hibernated:
            return None
        machine = self._revive_hibernated(run_id, schedule=False)
        if machine is None:
            return None
        machine.handed_wake = True
        try:
            self._scheduler.run_one(machine)  # the replay, up to its checkpoint
        finally:
            machine.handed_wake = False
        if machine.abandoned or machine.finished:
            return None
        machine.needs_refeed = False
        self._refeed(machine)
        return None if machine.abandoned else machine

    def wake_later(self, run_id: StateMachineRunId) -> None:
        """Wake hibernated flow ``run_id`` with the next round (its timer is due, or the event
        it waits for was signalled): the request it waits in re-checks its condition when
        the replay reaches it. A run id that is not hibernated is left alone."""
        if run_id in self._hibernated:
            self._revive_hibernated(run_id, schedule=True)

    def _revive_hibernated(self, run_id: StateMachineRunId, *, schedule: bool
                           ) -> FlowStateMachine | None:
        """``revive`` hibernated flow ``run_id`` (no longer hibernated), handing it the outcome
        its handles hold."""
        held = self._hibernated.pop(run_id)
        machine = self.revive(self._store().load_flow(run_id), reindex=False, schedule=schedule)
        if machine is not None and isinstance(held, Hibernated):
            machine.inherit_result(held.outcome)
        return machine

    def wake_route(self, route: Route) -> bool:
        """A message came for ``route`` and no running flow has it: wake the hibernated flow
        the wake index routes it to, if any. Whether a flow was woken."""
        if not self._hibernated or self._checkpoints is None:
            return False
        run_id = self._checkpoints.wake_index.route_owner(session_prefix(*route))
        if isinstance(run_id, CorruptRecordError):
            return self._wake_unreadable_route(route, run_id)
        if run_id is None or run_id not in self._hibernated:
            return False
        return self.wake(run_id) is not None

    def _wake_unreadable_route(self, route: Route, error: CorruptRecordError) -> bool:
        """The wake index record of ``route`` fails its check: which flow it names is unknown,
        so every hibernated flow is woken (each takes its own routes back; those with nothing
        to do hibernate again), and the one that owns the route, if any, writes its record
        again with its next step. The message is then routed as to any running flow, never
        dropped as one of an ended session while its flow sleeps."""
        log.error("a wake index route is unreadable, every hibernated flow is woken to find "
                  "its owner: %s", error)
        for run_id in list(self._hibernated):
            self.wake(run_id)
        owner = self._router.owner(route)
        if owner is None:
            return False
        owner.routes_changed = True
        log.error("flow %s owns that route: it is written again with its next step",
                  owner.run_id)
        return True

    # ----- hibernating ----------------------------------------------------------------------------

    def stepped(self, machine: FlowStateMachine) -> None:
        """``machine`` took a step that committed and did not end (policy bookkeeping)."""
        if not machine.pinned:
            self._stepped.append(machine)

    def forget(self, machine: FlowStateMachine) -> None:
        """``machine`` ended: it is no longer a candidate."""
        self._idle.pop(machine, None)

    def next_due(self) -> datetime | None:
        """When the longest-idle live parked flow reaches the idle time, if one is set."""
        if self._idle_after is None or not self._idle:
            return None
        return next(iter(self._idle.values())) + self._idle_after

    def settle(self) -> int:
        """The node is idle (every step committed): hibernate the flows the policy says
        (beyond ``max_live`` live parked ones, the longest idle; those idle ``idle_after``).
        Returns how many hibernated."""
        now = self._clock.now()
        idle = self._idle
        for machine in self._stepped:
            idle.pop(machine, None)
            idle[machine] = now
        self._stepped.clear()
        hibernated = 0
        while idle:
            machine, since = next(iter(idle.items()))
            over = self._max_live is not None and len(idle) > self._max_live
            expired = self._idle_after is not None and since + self._idle_after <= now
            if not (over or expired):
                break
            del idle[machine]
            hibernated += self.hibernate(machine)
        return hibernated

    def hibernate(self, machine: FlowStateMachine) -> bool:
        """Unwind ``machine``'s greenlet and drop it, keeping only what wakes it; False (and
        nothing done) when it may not hibernate now (see the module's contract)."""
        run_id = machine.run_id
        if not (self._scheduler.get(run_id) is machine and machine.status is FlowStatus.SUSPENDED
                and not machine.scheduled and not machine.abandoned and not machine.finished
                and machine.kill is None and not machine.needs_refeed and not machine.pinned
                and machine.start_record is None and not machine.replaying
                and not self._scheduler.running and self._checkpoints is not None):
            return False
        store = self._checkpoints
        captured = machine.capture_locals()  # for inspection, while its frames exist
        if captured is not None:
            self._commit.new_unit().writes.append(lambda txn: store.write_locals(txn, captured))
        outcome = machine.detach_result()
        self._router.unroute(machine)
        self._scheduler.remove(run_id)
        flow_class = sys.intern(class_name(type(machine.flow)))
        self._hibernated[run_id] = Hibernated(flow_class, outcome)
        machine.abandon()  # its finally: blocks run; their IO raises GreenletExit
        log.debug("flow %s hibernated", run_id)
        return True

    def _parking(self) -> Hospital:
        assert self._hospital is not None, "Hibernation.attach(hospital) first"
        return self._hospital

    def _store(self) -> CheckpointStore:
        assert self._checkpoints is not None, "only a node with storage hibernates"
        return self._checkpoints

