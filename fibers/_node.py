"""``Node``: a party's flow runtime, as a facade over the parts of the step pipeline
(docs/architecture.md): the scheduler (``fibers._scheduler``), the router
(``fibers._router``), the commit stage (``fibers._commit``), the hospital
(``fibers._hospital``), restore (``fibers._restore``) and inspection (``fibers._inspection``).

The node wires the parts at construction and runs a flow state machine's step (resume it,
then hand the step to the commit stage); everything else delegates. It also keeps the methods
flow state machines call on their node (``register_session``, ``schedule_wakeup``,
``await_event``, ``new_session_id``, ``checkpoints``, ``clock``, ``durable``, ...). Everything
here runs on the node's scheduler thread (see fibers.runtime).
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from fibers._annotations import check_restorable, flow_version_of, initiating_class_of
from fibers._checkpoint import SerializeAsToken, TokenContext, dumps, loads
from fibers._checkpoint_store import CheckpointStore, StoredFlow
from fibers._clock import Clock, SystemClock
from fibers._commit import CommitStage
from fibers._commit_units import Frames
from fibers._errors import FlowConfigurationError, KilledFlowException
from fibers._flow_logic import (
    FlowHandle,
    FlowLogic,
    FlowProgressHandle,
    StateMachineRunId,
    binding_of,
)
from fibers._hibernation import Hibernation
from fibers._hospital import Hospital
from fibers._identity import NodeIdentity, Party
from fibers._ids import IdSource
from fibers._inbound import FrameStats
from fibers._inspection import Inspection, summary
from fibers._locals import DEFAULT_SNAPSHOT_LOCALS, SnapshotLocals, check_snapshot_locals
from fibers._node_types import FlowSummary, HospitalEntry, NetworkMap, NodeInfo
from fibers._progress import ProgressTracker
from fibers._restore import Restore
from fibers._router import ResponderFactory, Router
from fibers._scheduler import Scheduler
from fibers._service_hub import HubT_co, ServiceHub
from fibers._session import FlowSession
from fibers._sessions import class_name
from fibers._state_machine import FlowStateMachine, current_machine
from fibers._storage_api import Storage, Txn
from fibers._tracking import label_stream
from fibers.transport import Transport

__all__ = ["FlowSummary", "HospitalEntry", "NetworkMap", "Node", "NodeInfo", "ServiceHub"]

T = TypeVar("T")
log = logging.getLogger("fibers.node")


class Node(Generic[HubT_co]):
    """A party's flow runtime: starts flows, routes session messages, runs flows until they
    suspend, and sends their messages once each step is stored (docs/architecture.md).

    ``hub`` is the class of ``node.services`` (``ServiceHub`` or a subclass declaring a layer's
    services, such as the ledger's ``LedgerServiceHub``); the node is a ``Node[hub]``.
    ``snapshot_locals`` says when its flows' locals are serialised: ``"on_demand"`` (default:
    when a flow goes to the hospital, hibernates or is inspected) or ``"every_step"`` (audit:
    in every step record); any other value is a ``ValueError`` (see ``fibers._locals``).

    Hibernation (durable nodes only; docs/architecture.md, "Hibernation and lazy restore"): a
    parked flow (suspended, waiting for a message, a timer or an event) gives up its greenlet
    and state machine after ``hibernate_after`` seconds idle, and the longest-idle ones do
    when more than ``max_live_parked`` are parked live; None (the default) turns each off.
    A hibernated flow is woken by replay when something comes for it."""

    # Two hooks for the simulation explorer (fibers.testing.explore), set on the instance by a
    # ``setup`` before the restore: where new run and session ids come from (the default is
    # stateless, so one instance serves every node), and a call at each group commit that
    # writes: ``hook(node, "before")`` before it and ``hook(node, "after")`` after it, before
    # anything that waited for it is sent or acknowledged. The explorer crashes nodes there.
    ids: IdSource = IdSource()
    _commit_hook: Callable[[Node, str], object] | None = None

    @property
    def commit_hook(self) -> Callable[[Node, str], object] | None:
        """See the comment above ``ids``."""
        return self._commit_hook

    @commit_hook.setter
    def commit_hook(self, hook: Callable[[Node, str], object] | None) -> None:
        self._commit_hook = hook
        self._commit.hook = None if hook is None else functools.partial(hook, self)

    # Where network-map changes are handled: None runs them on the thread that changed the map
    # (single-threaded nodes); a runtime hands them to its node thread instead.
    _map_changes_to: Callable[[Callable[[], object]], object] | None = None

    def __init__(
        self,
        identity: NodeIdentity,
        transport: Transport,
        *,
        clock: Clock | None = None,
        network_map: NetworkMap | None = None,
        strict_suspendable: bool = False,
        storage: Storage | None = None,
        services: dict[str, SerializeAsToken] | None = None,
        setup: Callable[[Node[HubT_co]], object] | None = None,
        # HubT_co defaults to ServiceHub, which mypy does not yet apply to a parameter's default.
        hub: type[HubT_co] = ServiceHub,  # type: ignore[assignment]
        max_transient_retries: int = 3,
        retry_backoff: float = 1.0,
        redelivery_interval: float = 1.0,
        snapshot_locals: SnapshotLocals = DEFAULT_SNAPSHOT_LOCALS,
        hibernate_after: float | None = None,
        max_live_parked: int | None = None,
    ) -> None:
        if transport.party != identity.party:
            raise ValueError(f"the transport speaks for {transport.party} but the node is "
                             f"{identity.party}: give the node its own party's endpoint")
        _check_hibernation(storage, hibernate_after, max_live_parked)
        self.identity = identity
        self.info = NodeInfo(identity.party)
        self.clock: Clock = clock or SystemClock()
        self.network_map = network_map or NetworkMap()
        self.network_map.add(identity.party)
        self.strict_suspendable = strict_suspendable
        # When flows' locals are serialised: "on_demand" or "every_step" (fibers._locals).
        self.snapshot_locals: SnapshotLocals = check_snapshot_locals(snapshot_locals)
        self.storage = storage
        self.durable = storage is not None
        self.tokens = TokenContext()
        self._services = hub(self.info, self.clock, self.network_map, self.tokens)
        self.tokens.register(self._services)
        self.stopped = False
        self._draining = False
        self._warned: set[types.CodeType] = set()
        self._flow_end_callbacks: list[Callable[[StateMachineRunId], object]] = []
        self._checkpoints = (
            CheckpointStore(storage, self.tokens) if storage is not None else None
        )
        party = identity.party
        self._commit = CommitStage(party, self._checkpoints, transport, self.clock,
                                   self.network_map,
                                   redelivery_interval=timedelta(seconds=redelivery_interval),
                                   after_step=self._after_step)
        # Without storage the commit stage queues nothing (steps leave at once): no round
        # asks it whether it has something to commit.
        self._scheduler = Scheduler(self._run_step,
                                    self._commit.has_pending if storage is not None else None,
                                    self._commit_round)
        self.live_flows = self._scheduler.by_run_id
        """The running flows' state machines by run id: a read-only live view (its ``len`` is
        ``live_flow_count`` less the hibernated flows, without a call)."""
        self._router = Router(party, self._checkpoints, self._commit, self._scheduler,
                              new_machine=self._new_machine, accepting=self._refusal)
        self._restore: Restore | None = None
        if self._checkpoints is not None:
            self._restore = Restore(
                party, self._checkpoints, self._scheduler, self._router, self._commit,
                transport=transport, network_map=self.network_map,
            )
        self._hibernation = Hibernation(
            self._checkpoints, self._scheduler, self._router, self._commit, self.clock,
            make_machine=lambda run_id, flow: FlowStateMachine(self, run_id, flow),
            refeed=self._refeed, idle_after=hibernate_after, max_live=max_live_parked,
        )
        self._scheduler.absent = self._hibernation.wake_later
        self._router.wake_route = self._hibernation.wake_route
        self._hospital = Hospital(
            party, self._checkpoints, self._scheduler, self._router, self._commit,
            clock=self.clock, network_map=self.network_map, restore=self._restore_one,
            flow_ended=self._flow_ended,
            max_retries=max_transient_retries, retry_backoff=retry_backoff,
        )
        self._hibernation.attach(self._hospital)
        if self._restore is not None:
            self._restore.attach(self._hospital, self._hibernation)
        self._inspection = Inspection(party, self._checkpoints, self._scheduler, self._hospital,
                                      self._hibernation)
        self._stop_listening = self.network_map.on_add(self._party_added)
        for name, service in (services or {}).items():
            self.services.install(name, service)
        if setup is not None:  # e.g. the ledger's services: before any restored flow runs
            setup(self)
        if self._restore is not None:
            self._restore.restore_all()

    @property
    def party(self) -> Party:
        """This node's legal identity."""
        return self.info.legal_identity

    @property
    def services(self) -> HubT_co:
        """The node's service hub, of the class it was built with (``hub=``)."""
        return self._services

    @property
    def frame_stats(self) -> FrameStats:
        """Inbound frames dropped, by reason (see fibers._inbound)."""
        return self._router.frame_stats

    # ----- starting flows -------------------------------------------------------------------------

    def start_flow(self, flow: FlowLogic[T]) -> FlowHandle[T]:
        """Start ``flow`` and run it until it first suspends. Returns its handle."""
        machine = self._new_machine(flow)
        handle: FlowHandle[T] = FlowHandle(machine.run_id, machine.outcome)
        self._scheduler.schedule(machine)
        self.run_until_idle()
        return handle

    def start_flows(self, flows: list[FlowLogic[Any]]) -> list[FlowHandle[Any]]:
        """Start several flows in one scheduler round (one group commit for all their first
        steps). Returns their handles in order."""
        machines = [self._new_machine(flow) for flow in flows]
        handles: list[FlowHandle[Any]] = [FlowHandle(m.run_id, m.outcome) for m in machines]
        for machine in machines:
            self._scheduler.schedule(machine)
        self.run_until_idle()
        return handles

    def start_tracked_flow(self, flow: FlowLogic[T]) -> FlowProgressHandle[T]:
        """Like ``start_flow``, with streams of the flow's progress. The flow must have a
        progress tracker."""
        tracker = flow.progress_tracker
        if tracker is None:
            raise FlowConfigurationError(
                f"{type(flow).__qualname__} has no progress tracker to track; set "
                "self.progress_tracker in its constructor or use start_flow"
            )
        machine = self._new_machine(flow)
        machine.pinned = True  # its observers hold its tracker: it never hibernates
        handle: FlowProgressHandle[T] = FlowProgressHandle(
            machine.run_id,
            machine.outcome,
            progress=label_stream(tracker),
            steps_tree=tracker.steps_tree_changes,
            steps_tree_index=tracker.steps_tree_index_changes,
        )
        self._scheduler.schedule(machine)
        self.run_until_idle()
        return handle

    def _new_machine(self, flow: FlowLogic[Any], **responder: Any) -> FlowStateMachine:
        """The state machine of a new flow, running on this node (not yet scheduled)."""
        if not isinstance(flow, FlowLogic):
            raise TypeError(f"start_flow needs a FlowLogic, got {type(flow).__qualname__}")
        if self._draining:
            raise FlowConfigurationError(
                f"node {self.party} is draining: it starts no new flows until "
                "set_flows_draining_mode(False)"
            )
        if binding_of(flow) is not None:
            raise FlowConfigurationError(f"{type(flow).__qualname__} has already been started")
        if self.durable:
            check_restorable(type(flow), "start the flow")
        machine = FlowStateMachine(self, StateMachineRunId(self.ids.run_id()), flow)
        if self.durable:
            machine.start_record = self.checkpoints.start_record(flow, class_name(type(flow)),
                                                                 **responder)
        self._scheduler.add(machine)
        return machine

    def register_initiated_flow(
        self,
        initiator: type[FlowLogic[Any]],
        factory: ResponderFactory,
        *,
        version: int | None = None,
    ) -> None:
        """Run ``factory(counterparty)`` when ``initiator`` opens a session with this node.

        ``version`` is the version this node's side reports (default: the initiator's). On a
        node with storage, an initiator or responder class defined inside a function is refused
        (a restarted node could not find it by name).
        """
        if self.durable:
            check_restorable(initiator, "register a responder for")
            if isinstance(factory, type):
                check_restorable(factory, "register as a responder")
        if initiating_class_of(initiator) is not initiator:
            raise FlowConfigurationError(
                f"cannot register a responder for {initiator.__qualname__}: it is not "
                "annotated @initiating_flow"
            )
        self._router.register_responder(class_name(initiator), factory,
                                        version or flow_version_of(initiator))

    def _refusal(self) -> str | None:
        """Why this node accepts no new session now, or None."""
        return f"{self.party} is draining and accepts no new sessions" if self._draining else None

    # ----- the step pipeline ----------------------------------------------------------------------

    def run_until_idle(self) -> None:
        """Run runnable flows until every flow waits for something, committing their steps in
        one group commit per round. Re-entrant calls (from a flow or a result callback) return
        at once: the outer loop picks the work up. Then, on a node that hibernates flows, the
        hibernation policy is applied (``hibernate_after``, ``max_live_parked``)."""
        self._scheduler.run_until_idle()
        if self._hibernation.enabled:
            self._settle_hibernation()

    def _settle_hibernation(self) -> None:
        """The node is idle: apply the hibernation policy (``fibers._hibernation``)."""
        scheduler = self._scheduler
        if not scheduler.running and not self.stopped and self._hibernation.settle():
            scheduler.run_until_idle()  # the captured locals; what unwinding made runnable

    def _run_step(self, machine: FlowStateMachine, throw: BaseException | None = None) -> None:
        """Run one step of ``machine``, then hand it to the commit stage (or, when the step
        parked the flow, to the hospital)."""
        machine.resume(throw)
        if machine.abandoned:
            if machine.hospital_diagnosis is not None:
                self._hospital.admit(machine, machine.hospital_diagnosis)
            return
        self._commit.record_step(machine)

    def _after_step(self, machine: FlowStateMachine, frames: Frames) -> None:
        """The step is stored: its messages leave; a finished flow ends; a restored one gets
        what had arrived for it."""
        for recipient, key, frame in frames:
            self._commit.send_tracked(recipient, key, frame)
        if machine.finished:
            if self._scheduler.get(machine.run_id) is not machine:
                return  # an earlier step of the same round already saw it end
            self._scheduler.remove(machine.run_id)
            if self._hibernation.enabled:
                self._hibernation.forget(machine)
            self._flow_ended(machine.run_id)
            machine.settle_result()
            return
        if machine.needs_refeed and self._restore is not None:
            machine.needs_refeed = False
            self._restore.refeed(machine)
        if self._hibernation.enabled:
            self._hibernation.stepped(machine)

    def _refeed(self, machine: FlowStateMachine) -> None:
        if self._restore is not None:
            self._restore.refeed(machine)

    def _flow_ended(self, run_id: StateMachineRunId) -> None:
        self._hospital.finished(run_id)
        for callback in self._flow_end_callbacks:
            callback(run_id)

    def _commit_round(self) -> None:
        self._commit.commit(self._hospital.step_failed, self.services.reload_from_storage)

    def _restore_one(self, stored: StoredFlow) -> None:
        self._hibernation.revive(stored, reindex=True)

    # ----- hooks for node services --------------------------------------------------------------

    def step_write(self, write: Callable[[Txn], object]) -> None:
        """Make ``write`` part of the current flow step's atomic commit (or, outside flows, of
        the next commit). A service calls this for its storage changes so that they commit
        together with the journal record of the flow that caused them."""
        if not self.durable:
            return
        machine = current_machine()
        if machine is not None and machine.node is self:
            machine.extra_writes.append(write)
        else:
            self._commit.loose().writes.append(write)

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the current round's writes are committed (at once when the node
        keeps nothing on disk); e.g. to signal flows waiting for what was written. Called in a
        flow step, it waits for that step's commit; outside flows, for the writes made outside
        flows (``step_write``) in the same round."""
        if not self.durable:
            action()
            return
        machine = current_machine()
        if machine is not None and machine.node is self and not machine.abandoned:
            self._commit.unit_for(machine).after.append(action)
        else:
            self._commit.loose().after.append(action)

    def flush_writes(self) -> None:
        """Outside flows, commit the writes services made (``step_write``) now, so that a call
        that returns has stored its effect. Inside a flow step (or a callback of the running
        scheduler) they commit with the round instead."""
        if current_machine() is None:
            self.run_until_idle()

    def on_flow_end(self, callback: Callable[[StateMachineRunId], object]) -> None:
        """Call ``callback(run_id)`` whenever a flow ends (completed, failed or killed), after
        its last step committed; e.g. to release the flow's soft locks."""
        self._flow_end_callbacks.append(callback)

    def signal(self, key: str) -> None:
        """Wake the flows waiting for ``key`` (they re-check their condition)."""
        self._scheduler.signal(key)
        self.run_until_idle()

    # ----- called by flow state machines ----------------------------------------------------------

    def await_event(self, machine: FlowStateMachine, key: str) -> None:
        """Wake ``machine`` the next time ``key`` is signalled."""
        self._scheduler.await_event(machine.run_id, key)

    def schedule_wakeup(self, machine: FlowStateMachine, deadline: datetime) -> None:
        """Make ``machine`` runnable once the clock reaches ``deadline``."""
        self._scheduler.wake_at(machine.run_id, deadline)

    def new_session_id(self) -> int:
        """A fresh session id (random, from ``ids``)."""
        return self.ids.session_id()

    def register_session(self, machine: FlowStateMachine, session: FlowSession) -> None:
        """Route ``session``'s inbound messages to ``machine``."""
        self._router.register(machine, session)

    def unregister_session(self, session: FlowSession) -> None:
        """Stop routing messages to ``session``."""
        self._router.unregister(session)

    def warn_once(self, code: types.CodeType, message: str) -> None:
        """Log ``message`` once per code location."""
        if code not in self._warned:
            self._warned.add(code)
            log.warning("%s", message)

    @property
    def checkpoints(self) -> CheckpointStore:
        """The checkpoint store; only durable nodes (built with storage) have one."""
        if self._checkpoints is None:
            raise FlowConfigurationError(
                f"node {self.party} has no storage: build it with storage=NodeStorage.open(...) "
                "for checkpoints, restore and the hospital"
            )
        return self._checkpoints

    def checkpoints_dumps(self, value: object) -> bytes:
        """``value`` in the checkpoint codec of this node (services as tokens)."""
        return dumps(value, self.tokens)

    def checkpoints_loads(self, data: bytes) -> object:
        """A value written by ``checkpoints_dumps`` (from this node's own storage only)."""
        return loads(data, self.tokens)

    # ----- time -----------------------------------------------------------------------------------

    def fire_due_timers(self) -> int:
        """Wake every flow whose deadline has passed, and re-run the flows whose retry after a
        transient failure is due; returns how many were woken. Also re-sends what is due for
        redelivery."""
        # Fields, not calls: this runs at every round, and most rounds have nothing due.
        earliest, redelivery = self._scheduler.earliest, self._commit.redelivery_due
        hibernation_due = self._hibernation.next_due() if self._hibernation.enabled else None
        if earliest is None and redelivery is None and hibernation_due is None:
            return 0
        now, woken = self.clock.now(), 0
        if (earliest is None or earliest > now) and (redelivery is None or redelivery > now) \
                and (hibernation_due is None or hibernation_due > now):
            return 0
        for run_id in self._scheduler.due_retries(now):
            self._hospital.retry_now(run_id)
            woken += 1
        woken += self._scheduler.wake_due(now)
        if woken or (hibernation_due is not None and hibernation_due <= now):
            self.run_until_idle()
        if not self.stopped and self._commit.tick(now):
            self.run_until_idle()
        return woken

    def next_deadline(self) -> datetime | None:
        """The earliest pending sleep or retry deadline, if any. (Redelivery of unacknowledged
        messages is not a deadline: it happens at the ``fire_due_timers`` calls once due, see
        ``redelivery_due``.) On a node that hibernates flows after an idle time, also when the
        longest-idle parked flow is due to hibernate."""
        deadline = self._scheduler.earliest
        due = self._hibernation.next_due() if self._hibernation.enabled else None
        if due is None:
            return deadline
        return due if deadline is None else min(due, deadline)

    def timers_due(self) -> bool:
        """Whether ``fire_due_timers`` would do something now: a sleep, retry or redelivery
        is due, or a parked flow's hibernation. Cheap when nothing is pending (no clock
        read)."""
        earliest, redelivery = self._scheduler.earliest, self._commit.redelivery_due
        hibernation_due = self._hibernation.next_due() if self._hibernation.enabled else None
        if earliest is None and redelivery is None and hibernation_due is None:
            return False
        now = self.clock.now()
        return (earliest is not None and earliest <= now) or (
            redelivery is not None and redelivery <= now) or (
            hibernation_due is not None and hibernation_due <= now)

    @property
    def redelivery_due(self) -> datetime | None:
        """When unacknowledged outbox messages are next re-sent, or acknowledged ones whose
        deletion failed are deleted (None: nothing waits)."""
        return self._commit.redelivery_due

    # ----- inbound --------------------------------------------------------------------------------

    def deliver(self, sender: Party, frame: bytes) -> None:
        """Handle one frame from ``sender`` (authenticated by the transport) and run the flows
        it makes runnable. A malformed or unroutable frame is logged and dropped."""
        self.deliver_batch([(sender, frame)])

    def deliver_batch(self, frames: list[tuple[Party, bytes]]) -> None:
        """Handle frames in order, then run the flows they made runnable in one round (one
        group commit for all of them). A frame that cannot be used is logged with its sender
        and the reason, counted in ``frame_stats`` and dropped; the rest of the batch is
        handled as if it had never arrived."""
        if self.stopped:
            raise RuntimeError(f"node {self.party} is stopped and cannot take messages")
        for sender, frame in frames:
            try:
                self._router.deliver(sender, frame)
            except Exception as exc:  # a bug in routing must not lose the rest of the batch
                self.frame_stats.failed += 1
                log.error("%s dropped a frame from %s: handling it failed", self.party, sender,
                          exc_info=exc)
        self.run_until_idle()

    def resend_unacknowledged(self, recipient: str) -> int:
        """Send every stored frame ``recipient`` has not acknowledged again, e.g. when a
        transport (re)connects to it and frames in flight may have been lost; duplicates are
        removed by the recipient's session layer. Returns how many were sent (0 for a node
        without storage, which keeps no outbox). Call it on the node thread."""
        if self._restore is None or self.stopped:
            return 0
        sent = self._restore.resend_outbox(recipient)
        self.run_until_idle()  # a corrupt record may have parked a flow
        return sent

    def hand_network_map_changes_to(self, submit: Callable[[Callable[[], object]], object]
                                    ) -> None:
        """Handle every later change of the network map through ``submit(fn)``, which must run
        ``fn`` on this node's thread (``NodeRuntime`` passes its ``call``): the map may be
        changed from any thread, the node is touched only on its own. Call it on the node
        thread; frames that wait for a party the map learnt meanwhile are sent now."""
        self._map_changes_to = submit
        if self._restore is not None:
            for name in self._restore.awaited_peers():
                try:
                    party = self.network_map.party(name)
                except KeyError:
                    continue
                self._send_awaiting(party)

    def _party_added(self, party: Party) -> None:
        submit = self._map_changes_to
        if submit is None:
            self._send_awaiting(party)
        else:
            submit(lambda: self._send_awaiting(party))

    def _send_awaiting(self, party: Party) -> None:
        """On the node thread: send what waited for ``party`` to be known."""
        if self._restore is not None and not self.stopped:
            self._restore.party_added(party)

    # ----- operations -----------------------------------------------------------------------------

    def flows(self) -> list[FlowSummary]:
        """Every unfinished flow on this node: running ones, then hibernated ones (status
        ``HIBERNATED``; after a restart every flow is hibernated until something wakes it)."""
        return [*(summary(m) for m in self._scheduler.machines()),
                *self._inspection.hibernated()]

    def progress_tracker(self, run_id: StateMachineRunId) -> ProgressTracker | None:
        """The progress tracker of a running flow (a restored flow has a new one, back at the
        step it had reached), or None when the flow has none, is not running or is
        hibernated (it gets a new one when it wakes)."""
        machine = self._scheduler.get(run_id)
        return machine.flow.progress_tracker if machine is not None else None

    def handle(self, run_id: StateMachineRunId) -> FlowHandle[Any]:
        """The handle of a running flow, including one restored after a restart or
        hibernated (its result comes once it is woken and ends)."""
        machine = self._scheduler.get(run_id)
        if machine is not None:
            return FlowHandle(machine.run_id, machine.outcome)
        if run_id in self._hibernation:
            return FlowHandle(run_id, self._hibernation.outcome(run_id))
        raise KeyError(f"no running flow {run_id} on {self.party}")

    def hospital(self) -> list[HospitalEntry]:
        """Hospitalised flows with their diagnosis."""
        return self._hospital.entries()

    def retry_flow(self, run_id: StateMachineRunId) -> bool:
        """Run a hospitalised flow again from its checkpoint. False when it is not in the
        hospital or the node has no storage to restore it from."""
        retried = self._hospital.retry(run_id)
        if retried:
            self.run_until_idle()
        return retried

    def inspect_flow(self, run_id: StateMachineRunId) -> dict[str, Any]:
        """A flow's suspended stack (from its latest frame snapshot, locals as reprs), its
        sessions, progress step and what it waits for. KeyError when there is no such flow.
        A hibernated flow is woken by replay to be inspected live."""
        if run_id not in self._hibernation:
            return self._inspection.inspect(run_id)
        self._hibernation.wake(run_id)
        try:
            return self._inspection.inspect(run_id)
        finally:
            self.run_until_idle()  # its replay step; it may hibernate again

    def dump_checkpoints(self) -> list[dict[str, Any]]:
        """Every stored checkpoint as JSON-ready dicts (class, status, what it waits for, stack
        with locals, sessions, progress step); the live view for flows without storage."""
        return self._inspection.dump()

    def wake_hibernated(self) -> int:
        """Wake every hibernated flow by replay now (e.g. after an upgrade, to find at once
        the flows whose new code no longer replays their checkpoints: they go to the
        hospital); returns how many were hibernated. They hibernate again as the node's
        settings say."""
        run_ids = list(self._hibernation.run_ids())
        for run_id in run_ids:
            self._hibernation.wake(run_id)
        self.run_until_idle()
        return len(run_ids)

    def kill_flow(self, run_id: StateMachineRunId) -> bool:
        """End the flow with ``KilledFlowException``; its counterparties get
        ``UnexpectedFlowEndException``; its checkpoint is deleted. The flow ends KILLED even if
        its code catches the exception: its next request ends it. A hospitalised flow is
        removed with its checkpoint, its counterparties told, without running its code. The
        ``on_flow_end`` callbacks run in every case. False when there is no such flow."""
        if run_id in self._hibernation:  # woken by replay, then killed like any parked flow
            self._hibernation.wake(run_id)
        if self._hospital.kill(run_id):
            self.run_until_idle()
            return True
        machine = self._scheduler.get(run_id)
        if machine is None or machine.finished:
            return False
        self._scheduler.kill(machine, KilledFlowException(f"flow {run_id} was killed by an "
                                                          "operator"))
        self.run_until_idle()
        return True

    def set_flows_draining_mode(self, draining: bool) -> None:
        """Refuse new flow starts and new inbound sessions while ``draining``."""
        self._draining = bool(draining)

    @property
    def is_draining(self) -> bool:
        """Whether the node refuses new flows."""
        return self._draining

    @property
    def live_flow_count(self) -> int:
        """How many flows run on this node now (not finished, not parked in the hospital),
        hibernated ones included."""
        return len(self.live_flows) + len(self._hibernation)

    @property
    def hibernated_flow_count(self) -> int:
        """How many of them are hibernated (``hibernate_after``, ``max_live_parked``, and
        every flow of a restarted node until something wakes it)."""
        return len(self._hibernation)

    @property
    def is_drained(self) -> bool:
        """Draining and no flow left in flight (nor hibernated, nor waiting for a retry):
        safe to stop for an upgrade."""
        return self._draining and not self.live_flow_count and not self._scheduler.retry_pending

    def stop(self) -> None:
        """Stop the node as a crash would: flows are dropped where they are (their checkpoints
        stay in storage) and nothing more is sent."""
        if self.stopped:
            return
        self.stopped = True
        self._stop_listening()
        if self._restore is not None:
            self._restore.clear()
        for machine in self._scheduler.machines():
            machine.abandon()
        self._hospital.clear()
        self._hibernation.clear()
        self._scheduler.clear()
        self._router.clear()
        self._commit.clear()
        if self.storage is not None:
            self.storage.close()

    def __repr__(self) -> str:
        return f"<Node {self.party.name} flows={len(self._scheduler)}>"


def _check_hibernation(storage: Storage | None, hibernate_after: float | None,
                       max_live_parked: int | None) -> None:
    """Refuse hibernation settings a node cannot honour, saying why."""
    if (hibernate_after is not None or max_live_parked is not None) and storage is None:
        raise FlowConfigurationError(
            "hibernate_after and max_live_parked need storage: a hibernated flow is woken by "
            "replaying its checkpoints; build the node with storage=NodeStorage.open(...)")
    if hibernate_after is not None and hibernate_after < 0:
        raise ValueError(f"hibernate_after must be >= 0 seconds, got {hibernate_after}")
    if max_live_parked is not None and max_live_parked < 0:
        raise ValueError(f"max_live_parked must be >= 0 flows, got {max_live_parked}")
