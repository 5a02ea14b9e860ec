"""The hospital: flows a node parks instead of running, and flows waiting to be retried after
a step could not be stored (docs/architecture.md, "Fault paths").

It owns the hospital's entries (diagnoses), the parked flow state machines, the count of
failed tries per flow, the start records of flows whose first step was never stored, and the
flows waiting for a retry. It admits flows (a failure, a divergence at replay, an unusable
record, too many failed commits), lists them, retries them from storage (``retry``), and kills
them without running their code (``kill``: counterparties told from the records, the records
deleted, then the flow-end callbacks). Parked flows keep their sessions' routes with the
router (``parked_routes``), so what arrives for them is stored for a retry.

Contract: scheduler thread only; a run id is in at most one of: running (the scheduler), the
hospital, waiting for a retry. Restoring a flow is not its business: ``restore`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from fibers import _kill
from fibers._checkpoint_store import (
    CheckpointStore,
    StartRecord,
    StepWrite,
    StoredFlow,
    session_prefix,
)
from fibers._clock import Clock
from fibers._commit import CommitStage
from fibers._commit_units import outbox_key
from fibers._errors import KilledFlowException
from fibers._flow_logic import StateMachineRunId
from fibers._identity import Party
from fibers._locals import CapturedLocals
from fibers._messages import encode_message
from fibers._node_types import HospitalEntry, NetworkMap
from fibers._router import Route, Router
from fibers._scheduler import Scheduler
from fibers._sessions import class_name
from fibers._state_machine import FlowStateMachine
from fibers._wake_index import IndexWrite

__all__ = ["Hospital", "parked_routes"]

log = logging.getLogger("fibers.node")

Restore = Callable[[StoredFlow], None]
FlowEnded = Callable[[StateMachineRunId], None]


class Hospital:
    """Parked flows and flows waiting for a retry, of one node."""

    def __init__(
        self,
        party: Party,
        checkpoints: CheckpointStore | None,
        scheduler: Scheduler,
        router: Router,
        commit: CommitStage,
        *,
        clock: Clock,
        network_map: NetworkMap,
        restore: Restore,
        flow_ended: FlowEnded,
        max_retries: int,
        retry_backoff: float,
    ) -> None:
        self._party = party
        self._checkpoints = checkpoints
        self._scheduler = scheduler
        self._router = router
        self._commit = commit
        self._clock = clock
        self._network_map = network_map
        self._restore = restore
        self._flow_ended = flow_ended
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff  # doubled with each failure of the same flow
        # Invariant: _parked holds a state machine only for a run id in _entries (one parked
        # in this process; one parked before the restart has an entry and no machine).
        self._entries: dict[StateMachineRunId, HospitalEntry] = {}
        self._parked: dict[StateMachineRunId, FlowStateMachine] = {}
        # Invariant: a run id is in at most one of _entries, _waiting and the scheduler's
        # running machines; _tries counts failed commits of one not yet finished.
        self._tries: dict[StateMachineRunId, int] = {}
        self._unstarted: dict[StateMachineRunId, bytes] = {}  # start records never committed
        # Flows waiting for a retry, abandoned: their result futures go to the restored flows.
        self._waiting: dict[StateMachineRunId, FlowStateMachine] = {}

    # ----- what is in it --------------------------------------------------------------------------

    def entries(self) -> list[HospitalEntry]:
        """Hospitalised flows with their diagnosis."""
        return list(self._entries.values())

    def entry(self, run_id: StateMachineRunId) -> HospitalEntry | None:
        """The hospital entry of ``run_id``, if it is parked."""
        return self._entries.get(run_id)

    def parked_machine(self, run_id: StateMachineRunId) -> FlowStateMachine | None:
        """The state machine of ``run_id`` when it was parked in this process."""
        return self._parked.get(run_id)

    def finished(self, run_id: StateMachineRunId) -> None:
        """``run_id`` ended: forget its failed tries."""
        self._tries.pop(run_id, None)

    def clear(self) -> None:
        """Abandon every parked and waiting state machine (node stop)."""
        for machine in [*self._parked.values(), *self._waiting.values()]:
            machine.abandon()
        self._parked.clear()
        self._waiting.clear()

    # ----- admitting ------------------------------------------------------------------------------

    def admit(self, machine: FlowStateMachine, diagnosis: str,
              captured: CapturedLocals | None = None) -> None:
        """Park ``machine``: its checkpoint stays (marked hospitalised), its messages keep
        arriving. Its locals, when captured (``captured``, or as it parked itself), are stored
        with its status, for inspection."""
        log.warning("%s hospitalised flow %s: %s", self._party, machine.run_id, diagnosis)
        run_id = machine.run_id
        self._scheduler.remove(run_id)
        self._entries[run_id] = HospitalEntry(run_id, class_name(type(machine.flow)), diagnosis)
        self._parked[run_id] = machine
        if self._checkpoints is None:
            return
        store, start = self._checkpoints, machine.start_record
        machine.start_record = None
        captured = captured or machine.take_parked_locals()

        self._commit.new_unit().writes.append(
            lambda txn: store.mark_hospitalized(txn, run_id, diagnosis, start))
        if captured is not None:
            # A unit of its own: locals that cannot be stored (too large for the map, say)
            # cost the locals record, never the hospital status written before it.
            locals_record = captured
            self._commit.new_unit().writes.append(
                lambda txn: store.write_locals(txn, locals_record))

    def admit_stored(self, stored: StoredFlow, *, record: bool = False) -> None:
        """A flow that was parked (or is unreadable) when the node started stays parked.
        ``record``: it was found unreadable now (woken from hibernation): its parking is
        stored, so that it stays parked after a restart without being read again."""
        diagnosis = stored.diagnosis or "hospitalised before the restart"
        run_id = stored.run_id
        self._entries[run_id] = HospitalEntry(run_id, stored.flow_class, diagnosis)
        self._router.park(run_id, parked_routes(self._party.name, stored))
        if record and self._checkpoints is not None:
            log.warning("%s hospitalised flow %s: %s", self._party, run_id, diagnosis)
            store = self._checkpoints
            self._commit.new_unit().writes.append(
                lambda txn: store.mark_hospitalized(txn, run_id, diagnosis))

    def admit_restored(self, machine: FlowStateMachine, diagnosis: str) -> None:
        """Park a restored state machine that waits at its checkpoint (not running) because
        one of its stored records is unusable; its checkpoint stays for the operator."""
        if machine.abandoned or self._scheduler.get(machine.run_id) is None:
            return
        self._scheduler.unschedule(machine)
        captured = machine.capture_locals()  # while its frames exist
        machine.abandon()
        self.admit(machine, diagnosis, captured)

    # ----- steps that could not be stored ---------------------------------------------------------

    def step_failed(self, machine: FlowStateMachine, error: BaseException,
                    start: bytes | None = None) -> None:
        """A step could not be stored: drop the flow's memory and re-run it from storage
        (from ``start``, its start record, when that was part of the failed step).

        Nothing of the step left the node (its messages wait for the commit) and nothing it
        received in the step was acknowledged. Until the retry, messages for the flow's
        sessions are neither stored nor acknowledged: their senders re-send them, and the
        restored flow, which takes the routes over, checks their order against what was
        stored. A responder whose first step failed is dropped: it never existed durably, and
        its initiator re-sends the session init, which starts it afresh."""
        machine.abandon()
        run_id = machine.run_id
        if start is not None and StartRecord.decode(start).peer is not None:
            log.warning("%s dropped responder %s whose first step could not be stored (%s); "
                        "its initiator re-sends the session init", self._party, run_id, error)
            self._router.hold(machine, None)
            self._scheduler.remove(run_id)
            self._tries.pop(run_id, None)
            self._flow_ended(run_id)
            return
        tries = self._tries[run_id] = self._tries.get(run_id, 0) + 1
        diagnosis = f"storing a step failed {tries} times: {type(error).__name__}: {error}"
        if tries > self._max_retries:
            if start is not None:  # parked in its very first step: keep it retryable
                machine.start_record = start
                self._unstarted[run_id] = start
            self.admit(machine, diagnosis)
            self._park_routes_by_storage(machine)
            return
        delay = self._retry_backoff * 2 ** (tries - 1)
        log.warning("%s will retry flow %s from its checkpoint in %.1f s: %s",
                    self._party, run_id, delay, diagnosis)
        self._scheduler.remove(run_id)
        self._waiting[run_id] = machine
        self._router.hold(machine, run_id)
        if start is not None:  # its first step was lost: retry from memory, writing it again
            self._unstarted[run_id] = start
        self._scheduler.retry_at(run_id, self._clock.now() + timedelta(seconds=delay))

    def _park_routes_by_storage(self, machine: FlowStateMachine) -> None:
        """Route a flow parked after its steps failed by what was stored, not by its memory:
        its sessions counted messages whose storing failed, and copies of those must be kept
        for its retry, not acknowledged as duplicates."""
        self._router.unroute(machine)
        stored = self._store().load_flow(machine.run_id)
        self._router.park(machine.run_id, parked_routes(self._party.name, stored))

    def retry_now(self, run_id: StateMachineRunId) -> None:
        """Re-run a flow whose step could not be stored, from storage or its start record."""
        self._router.release(run_id)  # what arrives meanwhile is stored for the restored flow
        old = self._waiting.pop(run_id, None)
        start = self._unstarted.pop(run_id, None)
        store = self._store()
        if start is None:
            self._restore(store.load_flow(run_id))
        else:
            self._restore(store.stored_from_start(run_id, start))
        machine = self._scheduler.get(run_id) or self._parked.get(run_id)
        if machine is not None:
            if start is not None:
                machine.start_record = start  # written with its first step this time
            if old is not None:
                old.hand_over_result(machine)

    # ----- the operator ---------------------------------------------------------------------------

    def retry(self, run_id: StateMachineRunId) -> bool:
        """Run a parked flow again from its checkpoint. False when it is not parked or the
        node has no storage to restore it from."""
        if run_id not in self._entries or self._checkpoints is None:
            return False
        del self._entries[run_id]
        self._router.unpark(run_id)
        old = self._parked.pop(run_id, None)
        if old is not None:
            self._router.unroute(old)
            old.abandon()
            self._waiting[run_id] = old  # its result future goes to the restored flow
        self._tries.pop(run_id, None)
        if run_id in self._unstarted:  # parked in its first step, which was never stored
            self.retry_now(run_id)
        else:
            stored = self._checkpoints.load_flow(run_id)
            if stored.status == "HOSPITALIZED" and stored.flow is not None:
                stored.status = "RUNNABLE"
            self._restore(stored)
            machine = self._scheduler.get(run_id)
            waiting = self._waiting.pop(run_id, None)
            if machine is not None and waiting is not None:
                waiting.hand_over_result(machine)
        machine = self._scheduler.get(run_id)
        if machine is not None:  # running again: a restart must not park it again
            store = self._checkpoints
            self._commit.unit_for(machine).writes.append(
                lambda txn: store.mark_running(txn, run_id)
            )
        return True

    def kill(self, run_id: StateMachineRunId) -> bool:
        """Kill a parked flow without running its code again: each counterparty of a session
        it had open gets an end (``UnexpectedFlowEndException`` at its next receive), its
        records are deleted in the same commit, and then the flow-end callbacks run
        (releasing what it held, e.g. the vault's soft locks) and its result future, if any,
        fails with ``KilledFlowException``. See fibers._kill for how the sessions are found.
        False when ``run_id`` is not parked."""
        if run_id not in self._entries:
            return False
        del self._entries[run_id]
        self._unstarted.pop(run_id, None)
        self._router.unpark(run_id)
        old = self._parked.pop(run_id, None)
        if old is not None:
            self._router.unroute(old)
        # Its session as a responder is over on our side, ended by the message sent now.
        responder_keys: list[tuple[bytes, int]] = []
        if self._checkpoints is not None:
            stored = self._checkpoints.load_flow(run_id)
            sessions = _kill.sessions_from_records(stored)
            start = stored.start
            if start is not None and start.peer is not None:
                responder_keys.extend(
                    (session_prefix(s.peer, s.session_id, False), s.next_seq) for s in sessions
                    if not s.we_initiated and (s.peer, s.session_id)
                    == (start.peer.name, start.session_id))
        else:
            sessions = _kill.sessions_in_memory(old) if old is not None else []
        if old is not None:
            old.abandon()
        frames = self._end_frames(run_id, sessions)

        def after() -> None:
            for peer, key, frame in frames:
                self._commit.send_tracked(peer, key, frame)
            self._flow_ended(run_id)
            if old is not None:
                old.fail_result(KilledFlowException(
                    f"flow {run_id} was killed by an operator in the hospital"))

        if self._checkpoints is None:
            after()
            return True
        write = StepWrite(
            run_id=run_id, finished=True, journal_start=0, journal=[], snapshot=None,
            outbox=frames, consumed=[],
            inbox_prefixes_done=[
                session_prefix(s.peer, s.session_id, s.we_initiated) for s in sessions
            ],
            index=IndexWrite(forget=[session_prefix(*route) for route in
                                     parked_routes(self._party.name, stored)]),
        )
        self._commit.record_kill(write, responder_keys, after)
        return True

    def _end_frames(self, run_id: StateMachineRunId,
                    sessions: list[_kill.OpenSession]) -> list[tuple[Party, bytes, bytes]]:
        frames = []
        for session in sessions:
            try:
                peer = self._network_map.party(session.peer)
            except KeyError:
                log.warning("%s cannot tell unknown party %s that flow %s was killed",
                            self._party, session.peer, run_id)
                continue
            end = session.end()
            frames.append((peer, outbox_key(peer, end), encode_message(end)))
        return frames

    def _store(self) -> CheckpointStore:
        assert self._checkpoints is not None, "only a node with storage retries from storage"
        return self._checkpoints


def parked_routes(our_name: str, stored: StoredFlow) -> dict[Route, int]:
    """The routing keys of the sessions a parked flow had, read from its records, so that
    messages for it are still stored (for a retry) rather than dropped; each with the number
    of the first message from the peer the flow has not processed (one past the last ``recv``
    its journal holds for that session), below which a message is a duplicate."""
    routes: dict[Route, int] = {}
    current: dict[tuple[object, object], Route] = {}  # (owner, peer) -> route
    if stored.start is not None and stored.start.peer is not None:
        key = (stored.start.peer.name, stored.start.session_id, False)
        routes[key] = 0
        current[(0, stored.start.peer.name)] = key
    for entry in stored.journal:
        if entry[0] == "open" and len(entry) > 3 and isinstance(entry[3], int):
            key = (our_name, entry[3], True)
            routes[key] = 0
            current[(entry[1], entry[2])] = key
        elif entry[0] == "recv" and len(entry) > 4 and isinstance(entry[4], int):
            owned = current.get((entry[1], entry[2]))
            if owned is not None:
                routes[owned] = max(routes[owned], entry[4] + 1)
    return routes
