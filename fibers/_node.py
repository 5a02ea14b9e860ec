"""``Node``: the scheduler that runs a party's flows, routes its session messages and owns its
services. Everything here runs on the node's scheduler thread; flows run in greenlets switched
to from ``_run_step``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import types
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fibers import _node_recovery as recovery
from fibers import _wire
from fibers._annotations import (
    DECLARED_RESPONDERS,
    check_restorable,
    flow_version_of,
    initiating_class_of,
)
from fibers._checkpoint import SerializeAsToken, TokenContext, dumps, loads
from fibers._checkpoint_store import (
    CheckpointStore,
    StepWrite,
    message_key,
    session_prefix,
)
from fibers._clock import Clock, SystemClock
from fibers._commit import CommitQueue, Redelivery, commit_units
from fibers._errors import (
    FlowConfigurationError,
    KilledFlowException,
    SerializationError,
)
from fibers._flow_logic import (
    FlowHandle,
    FlowInfo,
    FlowLogic,
    FlowProgressHandle,
    StateMachineRunId,
)
from fibers._identity import NodeIdentity, Party
from fibers._inbound import REORDER_WINDOW, FrameStats
from fibers._messages import (
    Ack,
    Confirm,
    ExistingSessionMessage,
    InitialSessionMessage,
    Reject,
    SessionBody,
    SessionMessage,
    decode_message,
    encode_message,
)
from fibers._node_types import (
    FlowSummary,
    HospitalEntry,
    NetworkMap,
    NodeInfo,
    ServiceHub,
)
from fibers._progress import ProgressTracker
from fibers._session import FlowSession
from fibers._state_machine import FlowStateMachine, app_name_of, class_name
from fibers._storage import NodeStorage, Txn
from fibers.transport import Transport

__all__ = ["FlowSummary", "HospitalEntry", "NetworkMap", "Node", "NodeInfo", "ServiceHub"]

T = TypeVar("T")
log = logging.getLogger("fibers.node")

ResponderFactory = Callable[[Party], FlowLogic[Any]]


class Node:
    """A party's flow runtime: starts flows, routes session messages, runs flows until they
    suspend, and sends their messages when each step ends."""

    def __init__(
        self,
        identity: NodeIdentity,
        transport: Transport,
        *,
        clock: Clock | None = None,
        network_map: NetworkMap | None = None,
        strict_suspendable: bool = False,
        storage: NodeStorage | None = None,
        services: dict[str, SerializeAsToken] | None = None,
        setup: Callable[[Node], object] | None = None,
        max_transient_retries: int = 3,
        retry_backoff: float = 1.0,
        redelivery_interval: float = 1.0,
    ) -> None:
        if transport.party != identity.party:
            raise ValueError(f"the transport speaks for {transport.party} but the node is "
                             f"{identity.party}: give the node its own party's endpoint")
        self.identity = identity
        self.info = NodeInfo(identity.party)
        self.clock: Clock = clock or SystemClock()
        self.network_map = network_map or NetworkMap()
        self.network_map.add(identity.party)
        self.strict_suspendable = strict_suspendable
        self.services: Any = ServiceHub(self)
        self._transport = transport
        self._flows: dict[StateMachineRunId, FlowStateMachine] = {}
        # Routing of inbound session messages: see FlowSession.routing_key.
        self._sessions: dict[tuple[str, int, bool], tuple[FlowStateMachine, FlowSession]] = {}
        self._responders: dict[str, tuple[ResponderFactory, int]] = {}
        self._runnable: deque[FlowStateMachine] = deque()
        self._timers: list[tuple[datetime, int, FlowStateMachine]] = []
        self._timer_seq = itertools.count()
        self._running = False
        self._draining = False
        self._warned: set[types.CodeType] = set()
        self.stopped = False
        # Durability: a round's writes wait in _commits, with what may only happen once they
        # committed (sending, settling, acknowledging), until the group commit ending the round.
        self.storage = storage
        self.durable = storage is not None
        self.tokens = TokenContext()
        self.tokens.register(self.services)
        self._checkpoints = (
            CheckpointStore(storage, self.tokens) if storage is not None else None
        )
        self._commits = CommitQueue()
        # Outbox keys the peers acknowledged (or, for our inits, implied; see fibers._dedup).
        # Invariant: they are deleted in the very commit after which the acknowledgements due
        # for the frames that put them here are sent (a commit whose deletions fail sends no
        # acknowledgement); the dedup pruning relies on it.
        self._acked: list[bytes] = []
        self._acked_later: list[bytes] = []  # ... whose deletion failed: retried with a commit
        self._acked_later_at: datetime | None = None  # when _acked_later is retried
        self._unacked = Redelivery(timedelta(seconds=redelivery_interval))
        self._hospital: dict[StateMachineRunId, HospitalEntry] = {}
        self._hospital_fibers: dict[StateMachineRunId, FlowStateMachine] = {}
        self._retries: dict[StateMachineRunId, int] = {}
        self._max_retries = max_transient_retries
        # Flows to re-run from their checkpoint after a transient failure, by deadline;
        # the delay doubles with each failure of the same flow.
        self._retry_backoff = retry_backoff
        self._retry_timers: list[tuple[datetime, int, StateMachineRunId]] = []
        self._unstarted: dict[StateMachineRunId, bytes] = {}  # start records never committed
        # Flows waiting for a retry, abandoned: their result futures go to the restored flows.
        self._retrying: dict[StateMachineRunId, FlowStateMachine] = {}
        # Sessions of flows waiting for a retry: what arrives for them is neither stored nor
        # acknowledged (the sender re-sends it), since their memory is behind their storage.
        self._retrying_routes: dict[tuple[str, int, bool], StateMachineRunId | None] = {}
        self._event_waiters: dict[str, set[FlowStateMachine]] = {}
        # Sessions of flows that were already parked in the hospital when the node started.
        # Invariant: each parked route maps to its flow and the number of the first message
        # from the peer that flow has not processed (lower ones are duplicates, see
        # recovery.parked_routes).
        self._parked_routes: dict[tuple[str, int, bool], tuple[StateMachineRunId, int]] = {}
        self.frame_stats = FrameStats()  # inbound frames dropped, by reason
        # Stored frames to re-send to parties the network map does not know yet, by name.
        self._awaiting_peer: dict[str, list[bytes]] = {}
        self._stop_listening = self.network_map.on_add(self._party_added)
        self._flow_end_callbacks: list[Callable[[StateMachineRunId], object]] = []
        for name, service in (services or {}).items():
            self.services.install(name, service)
        if setup is not None:  # e.g. the ledger's services: before any restored flow runs
            setup(self)
        if storage is not None:
            recovery.restore_all(self)

    @property
    def party(self) -> Party:
        """This node's legal identity."""
        return self.info.legal_identity

    # ----- starting flows -------------------------------------------------------------------------

    def start_flow(self, flow: FlowLogic[T]) -> FlowHandle[T]:
        """Start ``flow`` and run it until it first suspends. Returns its handle."""
        fiber = self._new_state_machine(flow)
        handle: FlowHandle[T] = FlowHandle(fiber.run_id, fiber.result)
        self._schedule(fiber)
        self.run_until_idle()
        return handle

    def start_flows(self, flows: list[FlowLogic[Any]]) -> list[FlowHandle[Any]]:
        """Start several flows in one scheduler round (one group commit for all their first
        steps). Returns their handles in order."""
        fibers = [self._new_state_machine(flow) for flow in flows]
        handles: list[FlowHandle[Any]] = [FlowHandle(f.run_id, f.result) for f in fibers]
        for fiber in fibers:
            self._schedule(fiber)
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
        from fibers._tracking import label_stream

        fiber = self._new_state_machine(flow)
        handle: FlowProgressHandle[T] = FlowProgressHandle(
            fiber.run_id,
            fiber.result,
            progress=label_stream(tracker),
            steps_tree=tracker.steps_tree_changes,
            steps_tree_index=tracker.steps_tree_index_changes,
        )
        self._schedule(fiber)
        self.run_until_idle()
        return handle

    def _new_state_machine(self, flow: FlowLogic[Any], **responder: Any) -> FlowStateMachine:
        if not isinstance(flow, FlowLogic):
            raise TypeError(f"start_flow needs a FlowLogic, got {type(flow).__qualname__}")
        if self._draining:
            raise FlowConfigurationError(
                f"node {self.party} is draining: it starts no new flows until "
                "set_flows_draining_mode(False)"
            )
        if flow._fiber is not None:
            raise FlowConfigurationError(f"{type(flow).__qualname__} has already been started")
        if self.durable:
            check_restorable(type(flow), "start the flow")
        fiber = FlowStateMachine(self, StateMachineRunId._new(), flow)
        if self.durable:
            fiber.start_record = self.checkpoints.start_record(flow, class_name(type(flow)),
                                                               **responder)
        self._flows[fiber.run_id] = fiber
        return fiber

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
        self._responders[class_name(initiator)] = (factory, version or flow_version_of(initiator))

    # ----- the scheduler --------------------------------------------------------------------------

    def _schedule(self, fiber: FlowStateMachine) -> None:
        if not fiber.scheduled and not fiber.finished and not fiber.abandoned:
            fiber.scheduled = True
            self._runnable.append(fiber)

    def run_until_idle(self) -> None:
        """Run runnable flows until every flow waits for something, committing their steps in
        one group commit per round. Re-entrant calls (from a flow or a result callback) return
        at once: the outer loop picks the work up."""
        if self._running:
            return
        self._running = True
        try:
            while True:
                while self._runnable:
                    fiber = self._runnable.popleft()
                    fiber.scheduled = False
                    self._run_step(fiber)
                if not (self._commits or self._acked):
                    break
                self._commit()
        finally:
            self._running = False

    def _run_step(self, fiber: FlowStateMachine, throw: BaseException | None = None) -> None:
        fiber.resume(throw)
        self._end_step(fiber)

    def _end_step(self, fiber: FlowStateMachine) -> None:
        """The flow suspended or finished: queue the step's writes, and what follows them."""
        if fiber.abandoned:
            if fiber.hospital_diagnosis is not None:
                recovery.admit(self, fiber, fiber.hospital_diagnosis)
            return
        if not self.durable:  # nothing to commit first: send and settle at once
            self._after_step(fiber, [(r, b"", encode_message(m)) for r, m in fiber.take_outbox()])
            return
        frames = [(r, _message_key(r, m), encode_message(m)) for r, m in fiber.take_outbox()]
        unit = self._commits.for_flow(fiber)
        if frames or fiber.new_journal or fiber.consumed or fiber.start_record \
                or fiber.extra_writes or fiber.finished:
            write = self._step_write(fiber, frames)
            unit.start = unit.start or write.start_record
            unit.writes.append(lambda txn: self.checkpoints.write_step(txn, write))
        # else woken without progress (or restored back at its checkpoint): nothing to store.
        unit.after.append(lambda: self._after_step(fiber, frames))

    def _step_write(
        self, fiber: FlowStateMachine, frames: list[tuple[Party, bytes, bytes]]
    ) -> StepWrite:
        journal, fiber.new_journal = fiber.new_journal, []
        consumed, fiber.consumed = fiber.consumed, []
        start, fiber.start_record = fiber.start_record, None
        extra, fiber.extra_writes = fiber.extra_writes, []
        done = [session_prefix(s.peer.name, s.session_id, s.we_initiated)
                for s in fiber.session_history] if fiber.finished else []
        if fiber.finished and any(not s.we_initiated for s in fiber.session_history):
            extra.append(recovery.responder_sessions_finished(self, fiber))
        return StepWrite(
            run_id=fiber.run_id,
            finished=fiber.finished,
            journal_start=fiber.journal_length - len(journal),
            journal=journal,
            snapshot=fiber.snapshot,
            outbox=[(key, frame) for _, key, frame in frames],
            consumed=[message_key(*k) for k in consumed],
            inbox_prefixes_done=done,
            start_record=start,
            extra_writes=extra,
        )

    def _after_step(
        self, fiber: FlowStateMachine, frames: list[tuple[Party, bytes, bytes]]
    ) -> None:
        for recipient, key, frame in frames:
            self._send_tracked(recipient, key, frame)
        if fiber.finished:
            self._flows.pop(fiber.run_id, None)
            self._retries.pop(fiber.run_id, None)
            for callback in self._flow_end_callbacks:
                callback(fiber.run_id)
            fiber.settle_result()
        elif fiber.needs_refeed:
            fiber.needs_refeed = False
            recovery.refeed(self, fiber)

    def _commit(self) -> None:
        """Write the round's units in one (synced) group commit, then do what waited for the
        units that committed: send, settle, acknowledge (one Ack per peer). Flows whose unit
        failed are retried from storage (see ``recovery.step_failed``)."""
        acked, forgetting = self._acked + self._acked_later, None
        if acked:
            self._acked, self._acked_later = [], []
            forgetting = self._commits.new_unit()
            store = self.checkpoints.storage
            forgetting.writes.append(lambda txn: recovery.forget_acknowledged(store, txn, acked))
            forgetting.on_failure = lambda _: self._forget_later(acked)
        result = commit_units(self.storage, self._commits.take(), str(self.party))
        for unit in result.committed:
            for action in unit.after:
                action()
        if forgetting is None or forgetting in result.committed:  # see _acked's invariant
            for peer, entries in result.acks_by_peer():
                self._transport.send(peer, encode_message(Ack(entries)))
        if result.failed:
            self._reload_services()
        for unit, error in result.failed:
            if unit.on_failure is not None:
                unit.on_failure(error)
            if unit.owner is not None and not unit.owner.abandoned:
                recovery.step_failed(self, unit.owner, error, unit.start)
            elif unit.on_failure is None:
                log.error("%s could not store %s: %s", self.party,
                          "a parked flow's records" if unit.owner else "node records", error)

    def _forget_later(self, acked: list[bytes]) -> None:
        """Acknowledged messages whose deletion failed: deleted with a later commit, at the
        latest at the next redelivery tick."""
        self._acked_later.extend(acked)
        if self._acked_later_at is None:
            self._acked_later_at = self.clock.now() + timedelta(seconds=1)

    def _send_tracked(self, recipient: Party, key: bytes, frame: bytes) -> None:
        """Send a frame that waits in the outbox; it is re-sent until acknowledged."""
        self._transport.send(recipient, frame)
        if self.durable:
            self._unacked.sent(key, self.clock.now())

    def _redeliver(self, now: datetime) -> None:
        """Re-send the outbox messages unacknowledged for a redelivery interval: a receiver
        that could not store one did not acknowledge it."""
        for key, frame in self.checkpoints.outbox_records(self._unacked.due(now)):
            try:
                recipient = self.network_map.party(key.partition(b"\0")[0].decode())
            except KeyError:
                recipient = None
            if frame is None or recipient is None:
                self._unacked.acknowledged(key)  # deleted meanwhile, or re-sent at restart
                continue
            self._transport.send(recipient, frame)

    def _reload_services(self) -> None:
        """After steps were lost, services whose memory ran ahead of storage start again from
        what was committed (services opt in with a ``reload_from_storage()`` method)."""
        for service in self.services.installed.values():
            reload = getattr(service, "reload_from_storage", None)
            if callable(reload):
                reload()

    # ----- hooks for node services --------------------------------------------------------------

    def step_write(self, write: Callable[[Txn], object]) -> None:
        """Make ``write`` part of the current flow step's atomic commit (or, outside flows, of
        the next commit). A service calls this for its storage changes so that they commit
        together with the journal record of the flow that caused them."""
        from fibers._state_machine import current_fiber

        if not self.durable:
            return
        fiber = current_fiber()
        if fiber is not None and fiber.node is self:
            fiber.extra_writes.append(write)
        else:
            self._commits.loose().writes.append(write)

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the current round's writes are committed (at once when the node
        keeps nothing on disk); e.g. to signal flows waiting for what was written. Called in a
        flow step, it waits for that step's commit; outside flows, for the writes made outside
        flows (``step_write``) in the same round."""
        from fibers._state_machine import current_fiber

        if not self.durable:
            action()
            return
        fiber = current_fiber()
        if fiber is not None and fiber.node is self and not fiber.abandoned:
            self._commits.for_flow(fiber).after.append(action)
        else:
            self._commits.loose().after.append(action)

    def on_flow_end(self, callback: Callable[[StateMachineRunId], object]) -> None:
        """Call ``callback(run_id)`` whenever a flow ends (completed, failed or killed), after
        its last step committed; e.g. to release the flow's soft locks."""
        self._flow_end_callbacks.append(callback)

    def await_event(self, fiber: FlowStateMachine, key: str) -> None:
        """Wake ``fiber`` the next time ``key`` is signalled."""
        self._event_waiters.setdefault(key, set()).add(fiber)

    def signal(self, key: str) -> None:
        """Wake the flows waiting for ``key`` (they re-check their condition)."""
        for fiber in self._event_waiters.pop(key, ()):
            self._schedule(fiber)
        if not self._running:
            self.run_until_idle()

    def schedule_wakeup(self, fiber: FlowStateMachine, deadline: datetime) -> None:
        """Make ``fiber`` runnable once the clock reaches ``deadline``."""
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), fiber))

    def fire_due_timers(self) -> int:
        """Wake every flow whose deadline has passed, and re-run the flows whose retry after a
        transient failure is due; returns how many were woken."""
        if not self._timers and not self._retry_timers and self.redelivery_due is None:
            return 0
        now, woken = self.clock.now(), 0
        while self._retry_timers and self._retry_timers[0][0] <= now:
            _, _, run_id = heapq.heappop(self._retry_timers)
            recovery.retry_now(self, run_id)
            woken += 1
        while self._timers and self._timers[0][0] <= now:
            _, _, fiber = heapq.heappop(self._timers)
            if not fiber.finished:
                self._schedule(fiber)
                woken += 1
        if woken:
            self.run_until_idle()
        if self._acked_later_at is not None and self._acked_later_at <= now and not self.stopped:
            self._acked_later_at = None
            self._acked, self._acked_later = self._acked + self._acked_later, []
            self.run_until_idle()
        due = self._unacked.next_due
        if due is not None and due <= now and not self.stopped:
            self._redeliver(now)
        return woken

    def next_deadline(self) -> datetime | None:
        """The earliest pending sleep or retry deadline, if any. (Redelivery of unacknowledged
        messages is not a deadline: it happens at the ``fire_due_timers`` calls once due, see
        ``redelivery_due``.)"""
        deadlines = [heap[0][0] for heap in (self._timers, self._retry_timers) if heap]
        return min(deadlines, default=None)

    @property
    def redelivery_due(self) -> datetime | None:
        """When unacknowledged outbox messages are next re-sent, or acknowledged ones whose
        deletion failed are deleted (None: nothing waits)."""
        dues = [d for d in (self._unacked.next_due, self._acked_later_at) if d is not None]
        return min(dues, default=None)

    # ----- sessions -------------------------------------------------------------------------------

    def new_session_id(self) -> int:
        """A fresh random session id."""
        return secrets.randbits(63)

    def register_session(self, fiber: FlowStateMachine, session: FlowSession) -> None:
        """Route ``session``'s inbound messages to ``fiber``."""
        key = session.routing_key(self.party.name)
        self._sessions[key] = (fiber, session)
        self._retrying_routes.pop(key, None)

    def unregister_session(self, session: FlowSession) -> None:
        """Stop routing messages to ``session``."""
        self._sessions.pop(session.routing_key(self.party.name), None)

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
                self._handle_frame(sender, frame)
            except Exception as exc:  # a bug in routing must not lose the rest of the batch
                self.frame_stats.failed += 1
                log.error("%s dropped a frame from %s: handling it failed", self.party, sender,
                          exc_info=exc)
        self.run_until_idle()

    def resend(self, recipient: str, frame: bytes) -> None:
        """Send a stored, unacknowledged frame again to the party called ``recipient``. When
        the network map does not know that party yet, the frame waits until it is added."""
        try:
            party = self.network_map.party(recipient)
        except KeyError:
            waiting = self._awaiting_peer.setdefault(recipient, [])
            if not waiting:
                log.warning("%s will re-send to %s once the network map knows it", self.party,
                            recipient)
            waiting.append(frame)
            return
        self._transport.send(party, frame)

    def resend_unacknowledged(self, recipient: str) -> int:
        """Send every stored frame ``recipient`` has not acknowledged again, e.g. when a
        transport (re)connects to it and frames in flight may have been lost; duplicates are
        removed by the recipient's session layer. Returns how many were sent (0 for a node
        without storage, which keeps no outbox). Call it on the node thread."""
        if self.storage is None or self.stopped:
            return 0
        sent = recovery.resend_outbox(self, recipient)
        self.run_until_idle()  # a corrupt record may have hospitalised a flow
        return sent

    def _party_added(self, party: Party) -> None:
        frames = self._awaiting_peer.pop(party.name, None)
        if frames and not self.stopped:
            for frame in frames:
                self._transport.send(party, frame)

    def _handle_frame(self, sender: Party, frame: bytes) -> None:
        try:
            message = decode_message(frame)
        except SerializationError as exc:
            self.frame_stats.malformed += 1
            log.warning("%s dropped a frame from %s: %s", self.party, sender, exc)
            return
        if isinstance(message, Ack):
            if self.durable:
                # Forgetting an acknowledged message needs no commit of its own: it rides on
                # the next one. Lost on a crash, the message is re-sent and dropped as a dup.
                keys = [message_key(sender.name, *entry) for entry in message.entries]
                self._acked.extend(keys)
                for key in keys:
                    self._unacked.acknowledged(key)
        elif isinstance(message, InitialSessionMessage):
            self._on_session_init(sender, message)
        else:
            self._on_session_message(sender, message)

    def _on_session_init(self, sender: Party, init: InitialSessionMessage) -> None:
        key = (sender.name, init.initiator_session_id, False)
        routed = self._sessions.get(key)
        if routed is not None or (
            self.durable and self.checkpoints.seen_init(sender.name, init.initiator_session_id)
        ):
            # A re-sent init of a session we run (acknowledged once its responder's first step
            # is stored), ran or rejected.
            owner = routed[0] if routed is not None else None
            recovery.ack_after_commit(self, sender, init.initiator_session_id, False, 0,
                                      fiber=owner)
            return
        responder = self._responder_for(init.flow_class)
        if isinstance(responder, str):
            self._reject(sender, init.initiator_session_id, responder)
            return
        factory, version = responder
        try:
            flow = factory(sender)
            if not isinstance(flow, FlowLogic):
                raise TypeError(f"the responder factory returned {type(flow).__qualname__}")
            fiber = self._new_state_machine(
                flow,
                peer=sender,
                session_id=init.initiator_session_id,
                peer_version=init.flow_version,
                peer_app=init.app_name,
                confirm_version=version,
            )
        except Exception as exc:
            log.error("%s could not start the responder for %s", self.party, init.flow_class,
                      exc_info=exc)
            self._reject(sender, init.initiator_session_id,
                         f"{self.party} could not start a responder for {init.flow_class}")
            return
        peer_info = FlowInfo(init.flow_version, init.app_name)
        session = self._open_responder_session(fiber, sender, init.initiator_session_id,
                                               peer_info, version)
        if init.first_payload is not None:
            session.inbound.append((0, init.first_payload))
        if self.durable:
            recovery.store_init(self, fiber, sender, init)
        self._schedule(fiber)

    def _open_responder_session(
        self,
        fiber: FlowStateMachine,
        initiator: Party,
        session_id: int,
        peer_info: FlowInfo,
        our_version: int,
    ) -> FlowSession:
        """The responder's side of a session, routed, with its confirm (message 0) queued.

        A restored responder queues the confirm again: if it was sent before the crash the
        initiator drops the copy as a duplicate, and if the step that sent it was lost this
        is the only copy."""
        session = FlowSession(initiator, session_id, False, 0, next_send_seq=0, next_recv_seq=1)
        session.peer_info = peer_info
        fiber.sessions[(0, initiator.name)] = session
        fiber.session_history.append(session)
        self.register_session(fiber, session)
        confirm = Confirm(0, our_version, app_name_of(type(fiber.flow)))
        fiber.outbox.append(
            (initiator, ExistingSessionMessage(session_id, True, session.take_seq(), confirm))
        )
        return session

    def _responder_for(self, flow_class: str) -> tuple[ResponderFactory, int] | str:
        """The registered responder for ``flow_class``, or the reason to reject the session."""
        if self._draining:
            return f"{self.party} is draining and accepts no new sessions"
        registered = self._responders.get(flow_class) or DECLARED_RESPONDERS.get(flow_class)
        if registered is not None:
            return registered
        known = _wire.whitelisted_class(flow_class)
        if known is not None and not issubclass(known, FlowLogic):
            return f"{flow_class} is not a flow class"
        return f"{flow_class} is not registered"

    def _reject(self, sender: Party, session_id: int, reason: str) -> None:
        """Refuse a session init: it is recorded (a re-sent copy is acknowledged and never
        run, even once a responder is registered) and acknowledged, and the initiator gets a
        Reject that is re-sent until acknowledged."""
        log.info("%s rejected a session from %s: %s", self.party, sender, reason)
        reject = ExistingSessionMessage(session_id, True, 0, Reject(reason))
        frame = encode_message(reject)
        if not self.durable:
            self._transport.send(sender, frame)
            return
        recovery.store_rejection(self, sender, session_id, _message_key(sender, reject), frame)

    def _on_session_message(self, sender: Party, message: ExistingSessionMessage) -> None:
        initiator = self.party.name if message.to_initiator else sender.name
        key = (initiator, message.session_id, message.to_initiator)
        routed = self._sessions.get(key)
        if self.durable and message.to_initiator and (message.seq == 0 or routed is None):
            # The responder stored our init before it sent anything in the session: forget
            # the init in the commit that stores (or drops) this message, before acknowledging
            # it. Its dedup record may go once we acknowledge (see fibers._dedup). In order,
            # message 0 is processed before any other is acknowledged.
            self._acked.append(message_key(sender.name, message.session_id, False, 0))
        if routed is None:
            self._on_unrouted(sender, key, message)
            return
        fiber, session = routed
        if session.peer != sender:
            self.frame_stats.wrong_sender += 1
            log.warning("%s dropped a message from %s in a session with %s",
                        self.party, sender, session.peer)
            return
        if message.seq < session.next_recv_seq:
            recovery.ack_after_commit(
                self, sender, message.session_id, message.to_initiator, message.seq, fiber=fiber
            )
            return  # already processed: a duplicate
        if message.seq >= session.next_recv_seq + REORDER_WINDOW:
            # Not acknowledged: the sender keeps it and sends it again (see REORDER_WINDOW).
            self.frame_stats.too_far_ahead += 1
            log.warning("%s dropped message %d from %s: it is more than %d ahead of %d",
                        self.party, message.seq, sender, REORDER_WINDOW, session.next_recv_seq)
            return
        if message.seq > session.next_recv_seq:
            if session.out_of_order is None:
                session.out_of_order = {}
            session.out_of_order[message.seq] = message.body
            return
        body: SessionBody | None = message.body
        while body is not None:
            seq = session.next_recv_seq
            session.apply(seq, body)
            if self.durable:
                stored = ExistingSessionMessage(message.session_id, message.to_initiator, seq, body)
                recovery.store_received(self, fiber, sender, stored)
            session.next_recv_seq += 1
            pending = session.out_of_order
            body = pending.pop(session.next_recv_seq, None) if pending else None
        if fiber.waiting is session:
            self._schedule(fiber)

    def _on_unrouted(
        self, sender: Party, key: tuple[str, int, bool], message: ExistingSessionMessage
    ) -> None:
        """A message for no running flow: kept for a parked flow; held back for a flow waiting
        for its retry (neither stored nor acknowledged: the sender re-sends it); else its
        session ended, and it is acknowledged and dropped."""
        if key in self._parked_routes:
            recovery.store_for_parked(self, sender, message, *self._parked_routes[key])
        elif key not in self._retrying_routes:
            log.debug("%s dropped a message for an unknown or ended session", self.party)
            recovery.ack_after_commit(
                self, sender, message.session_id, message.to_initiator, message.seq
            )

    # ----- operations -----------------------------------------------------------------------------

    def flows(self) -> list[FlowSummary]:
        """Every unfinished flow on this node."""
        return [recovery.summary(f) for f in self._flows.values()]

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

    def progress_tracker(self, run_id: StateMachineRunId) -> ProgressTracker | None:
        """The progress tracker of a running flow (a restored flow has a new one, back at the
        step it had reached), or None when the flow has none or is not running."""
        fiber = self._flows.get(run_id)
        return fiber.flow.progress_tracker if fiber is not None else None

    def handle(self, run_id: StateMachineRunId) -> FlowHandle[Any]:
        """The handle of a running flow, including one restored after a restart."""
        fiber = self._flows.get(run_id)
        if fiber is None:
            raise KeyError(f"no running flow {run_id} on {self.party}")
        return FlowHandle(fiber.run_id, fiber.result)

    def hospital(self) -> list[HospitalEntry]:
        """Hospitalised flows with their diagnosis."""
        return recovery.hospital(self)

    def retry_flow(self, run_id: StateMachineRunId) -> bool:
        """Run a hospitalised flow again from its checkpoint. False when it is not in the
        hospital or the node has no storage to restore it from."""
        return recovery.retry_flow(self, run_id)

    def inspect_flow(self, run_id: StateMachineRunId) -> dict[str, Any]:
        """A flow's suspended stack (from its latest frame snapshot, locals as reprs), its
        sessions, progress step and what it waits for. KeyError when there is no such flow."""
        return recovery.inspect_flow(self, run_id)

    def dump_checkpoints(self) -> list[dict[str, Any]]:
        """Every stored checkpoint as JSON-ready dicts (class, status, what it waits for, stack
        with locals, sessions, progress step); the live view for flows without storage."""
        return recovery.dump_checkpoints(self)

    def kill_flow(self, run_id: StateMachineRunId) -> bool:
        """End the flow with ``KilledFlowException``; its counterparties get
        ``UnexpectedFlowEndException``; its checkpoint is deleted. The flow ends KILLED even if
        its code catches the exception: its next request ends it. A hospitalised flow is
        removed with its checkpoint, its counterparties told, without running its code. The
        ``on_flow_end`` callbacks run in every case. False when there is no such flow."""
        if run_id in self._hospital:
            recovery.kill_hospitalized(self, run_id)
            return True
        fiber = self._flows.get(run_id)
        if fiber is None or fiber.finished:
            return False
        if not fiber.started:  # run it to its first suspension: the kill lands there
            self._runnable = deque(f for f in self._runnable if f is not fiber)
            fiber.scheduled = False
            self._run_step(fiber)
            if fiber.finished or fiber.abandoned:
                self.run_until_idle()
                return True
        fiber.scheduled = True  # keep it off the run queue while it is being killed
        try:
            fiber.kill = KilledFlowException(f"flow {run_id} was killed by an operator")
            self._run_step(fiber, fiber.kill)
        finally:
            fiber.scheduled = False
        fiber.end_greenlet()  # it caught the kill and was ended at its next request
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
    def is_drained(self) -> bool:
        """Draining and no flow left in flight (nor waiting for a retry): safe to stop for an
        upgrade."""
        return self._draining and not self._flows and not self._retry_timers

    def warn_once(self, code: types.CodeType, message: str) -> None:
        """Log ``message`` once per code location."""
        if code not in self._warned:
            self._warned.add(code)
            log.warning("%s", message)

    def stop(self) -> None:
        """Stop the node as a crash would: flows are dropped where they are (their checkpoints
        stay in storage) and nothing more is sent."""
        if self.stopped:
            return
        self.stopped = True
        self._stop_listening()
        self._awaiting_peer.clear()
        for fiber in [*self._flows.values(), *self._hospital_fibers.values()]:
            fiber.abandon()
        self._flows.clear()
        self._hospital_fibers.clear()
        self._sessions.clear()
        self._timers.clear()
        self._event_waiters.clear()
        self._runnable.clear()
        self._commits.clear()
        self._retry_timers.clear()
        self._retrying.clear()
        self._unacked.clear()
        if self.storage is not None:
            self.storage.close()

    def __repr__(self) -> str:
        return f"<Node {self.party.name} flows={len(self._flows)}>"


def _message_key(recipient: Party, message: SessionMessage) -> bytes:
    if isinstance(message, InitialSessionMessage):
        return message_key(recipient.name, message.initiator_session_id, False, 0)
    return message_key(recipient.name, message.session_id, message.to_initiator, message.seq)
