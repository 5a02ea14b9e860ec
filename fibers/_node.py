"""``Node``: the scheduler that runs a party's flows, routes its session messages and owns its
services. Everything here runs on the node's scheduler thread; flows run in greenlets switched
to from ``_run_step``.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import secrets
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fibers import _wire
from fibers._annotations import DECLARED_RESPONDERS, flow_version_of, initiating_class_of
from fibers._checkpoint import SerializeAsToken, TokenContext, dumps, loads
from fibers._checkpoint_store import (
    CheckpointStore,
    StepWrite,
    StoredFlow,
    message_key,
    session_prefix,
)
from fibers._clock import Clock, SystemClock
from fibers._errors import (
    FlowConfigurationError,
    KilledFlowException,
    SerializationError,
    UnexpectedFlowEndException,
)
from fibers._flow_logic import (
    FlowHandle,
    FlowInfo,
    FlowLogic,
    FlowProgressHandle,
    StateMachineRunId,
)
from fibers._identity import NodeIdentity, Party
from fibers._journal import describe_wait
from fibers._messages import (
    Ack,
    Confirm,
    Data,
    End,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
    Reject,
    SessionBody,
    SessionMessage,
    decode_message,
    encode_message,
)
from fibers._session import FlowSession
from fibers._state_machine import FlowStateMachine, app_name_of, class_name
from fibers._storage import NodeStorage, Txn
from fibers._transport import Transport

T = TypeVar("T")
log = logging.getLogger("fibers.node")

ResponderFactory = Callable[[Party], FlowLogic[Any]]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the network knows about a node."""

    legal_identity: Party


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One unfinished flow as operators see it."""

    run_id: StateMachineRunId
    flow_class: str
    status: str
    progress_step: str | None
    waiting_for: str | None


class NetworkMap:
    """The parties this node knows, by name."""

    def __init__(self) -> None:
        self._parties: dict[str, Party] = {}

    def add(self, party: Party) -> None:
        """Learn (or replace) ``party``."""
        self._parties[party.name] = party

    def party(self, name: str) -> Party:
        """The party called ``name``; KeyError naming the known parties when there is none."""
        try:
            return self._parties[name]
        except KeyError:
            known = ", ".join(sorted(self._parties)) or "none"
            raise KeyError(f"no party called {name!r} on the network (known: {known})") from None

    def all_parties(self) -> list[Party]:
        """Every known party, sorted by name."""
        return [self._parties[name] for name in sorted(self._parties)]


@dataclass(frozen=True, slots=True)
class HospitalEntry:
    """A flow parked for an operator, and why."""

    run_id: StateMachineRunId
    flow_class: str
    diagnosis: str


class ServiceHub(SerializeAsToken):
    """The node services a flow may use (``FlowLogic.service_hub``). The ledger layer extends
    it with storage, the vault and key management. Checkpoints hold it as a token."""

    def __init__(self, node: Node) -> None:
        self.my_info = node.info
        self.clock = node.clock
        self.network_map = node.network_map
        self.installed: dict[str, SerializeAsToken] = {}
        self._node = node

    def install(self, name: str, service: SerializeAsToken) -> None:
        """Make ``service`` reachable as ``service_hub.<name>``; checkpoints hold it as a token
        and rewire it to the live instance on restore."""
        if hasattr(self, name):
            raise ValueError(f"the service hub already has a {name!r}")
        setattr(self, name, service)
        self.installed[name] = service
        self._node.tokens.register(service)


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
        max_transient_retries: int = 3,
        retry_backoff: float = 1.0,
    ) -> None:
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
        # Durability: writes wait in _pending until the group commit at the end of a scheduler
        # round; _after holds what may only happen once they committed (sending, settling).
        self.storage = storage
        self.durable = storage is not None
        self.tokens = TokenContext()
        self.tokens.register(self.services)
        self._checkpoints = (
            CheckpointStore(storage, self.tokens) if storage is not None else None
        )
        self._pending: list[tuple[FlowStateMachine | None, Callable[[Txn], object]]] = []
        self._acked: list[bytes] = []
        self._after: list[tuple[FlowStateMachine | None, Callable[[], object]]] = []
        self._hospital: dict[StateMachineRunId, HospitalEntry] = {}
        self._hospital_fibers: dict[StateMachineRunId, FlowStateMachine] = {}
        self._retries: dict[StateMachineRunId, int] = {}
        self._max_retries = max_transient_retries
        # Flows to re-run from their checkpoint after a transient failure, by deadline;
        # the delay doubles with each failure of the same flow.
        self._retry_backoff = retry_backoff
        self._retry_timers: list[tuple[datetime, int, StateMachineRunId]] = []
        self._unstarted: dict[StateMachineRunId, bytes] = {}  # start records never committed
        self._event_waiters: dict[str, set[FlowStateMachine]] = {}
        self._flow_end_callbacks: list[Callable[[StateMachineRunId], object]] = []
        for name, service in (services or {}).items():
            self.services.install(name, service)
        if storage is not None:
            self._restore_all()

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
        for fiber in fibers:
            self._schedule(fiber)
        self.run_until_idle()
        return [FlowHandle(f.run_id, f.result) for f in fibers]

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

        ``version`` is the version this node's side reports (default: the initiator's).
        """
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
                if not (self._pending or self._after or self._acked):
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
                self._admit(fiber, fiber.hospital_diagnosis)
            return
        if not self.durable:  # nothing to commit first: send and settle at once
            self._after_step(fiber, [(r, b"", encode_message(m)) for r, m in fiber.take_outbox()])
            return
        frames = [(r, _message_key(r, m), encode_message(m)) for r, m in fiber.take_outbox()]
        if not (frames or fiber.new_journal or fiber.consumed or fiber.start_record
                or fiber.extra_writes or fiber.finished):
            # Woken without progress (or restored back at its checkpoint): nothing to store.
            self._after.append((fiber, lambda: self._after_step(fiber, frames)))
            return
        write = self._step_write(fiber, frames)
        self._pending.append((fiber, lambda txn: self.checkpoints.write_step(txn, write)))
        self._after.append((fiber, lambda: self._after_step(fiber, frames)))

    def _step_write(
        self, fiber: FlowStateMachine, frames: list[tuple[Party, bytes, bytes]]
    ) -> StepWrite:
        journal, fiber.new_journal = fiber.new_journal, []
        consumed, fiber.consumed = fiber.consumed, []
        start, fiber.start_record = fiber.start_record, None
        fiber.uncommitted_start = start
        extra, fiber.extra_writes = fiber.extra_writes, []
        tracker = fiber.flow.progress_tracker
        done = [session_prefix(s.peer.name, s.session_id, s.we_initiated)
                for s in fiber.session_history] if fiber.finished else []
        return StepWrite(
            run_id=fiber.run_id,
            finished=fiber.finished,
            status=(fiber.status.value, tracker.current_step.label if tracker else None,
                    describe_wait(fiber.waiting) if fiber.waiting is not None else None),
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
        fiber.uncommitted_start = None
        for recipient, _, frame in frames:
            self._transport.send(self.party, recipient, frame)
        if fiber.finished:
            self._flows.pop(fiber.run_id, None)
            self._retries.pop(fiber.run_id, None)
            for callback in self._flow_end_callbacks:
                callback(fiber.run_id)
            fiber.settle_result()
        elif fiber.needs_refeed:
            fiber.needs_refeed = False
            self._refeed(fiber)

    def _commit(self) -> None:
        """Write every pending step in one (synced) commit, then do what waited for it."""
        pending, after = self._pending, self._after
        self._pending, self._after = [], []
        if self._acked:
            acked, self._acked = self._acked, []
            store = self.checkpoints.storage
            pending.append((None, lambda txn: [store.delete(txn, "outbox", k) for k in acked]))
        failed: dict[FlowStateMachine, Exception] = {}
        if pending and self.storage is not None:
            try:
                with self.storage.group() as group:
                    for fiber, write in pending:
                        error = group.step(write)
                        if error is not None:
                            if fiber is None:
                                raise error
                            failed[fiber] = error
            except Exception as exc:  # the whole commit failed: every step in it is lost
                log.error("%s: a group commit failed", self.party, exc_info=exc)
                failed.update({f: exc for f, _ in pending if f is not None})
                after = [(f, a) for f, a in after if f is not None]
        for fiber, action in after:
            if fiber is None or fiber not in failed:
                action()
        if failed:
            self._reload_services()
        for fiber, error in failed.items():
            self._step_failed(fiber, error)

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
            self._pending.append((None, write))

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the current round's writes are committed (at once when the node
        keeps nothing on disk); e.g. to signal flows waiting for what was written."""
        if self.durable:
            self._after.append((None, action))
        else:
            action()

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
        if not self._timers and not self._retry_timers:
            return 0
        now, woken = self.clock.now(), 0
        while self._retry_timers and self._retry_timers[0][0] <= now:
            _, _, run_id = heapq.heappop(self._retry_timers)
            start = self._unstarted.pop(run_id, None)
            if start is not None:
                stored = self.checkpoints.stored_from_start(run_id, start)
            else:
                stored = self.checkpoints.load_flow(run_id)
            self._restore(stored)
            woken += 1
        while self._timers and self._timers[0][0] <= now:
            _, _, fiber = heapq.heappop(self._timers)
            if not fiber.finished:
                self._schedule(fiber)
                woken += 1
        if woken:
            self.run_until_idle()
        return woken

    def next_deadline(self) -> datetime | None:
        """The earliest pending sleep or retry deadline, if any."""
        deadlines = [heap[0][0] for heap in (self._timers, self._retry_timers) if heap]
        return min(deadlines, default=None)

    # ----- sessions -------------------------------------------------------------------------------

    def new_session_id(self) -> int:
        """A fresh random session id."""
        return secrets.randbits(63)

    def register_session(self, fiber: FlowStateMachine, session: FlowSession) -> None:
        """Route ``session``'s inbound messages to ``fiber``."""
        self._sessions[session.routing_key(self.party.name)] = (fiber, session)

    def unregister_session(self, session: FlowSession) -> None:
        """Stop routing messages to ``session``."""
        self._sessions.pop(session.routing_key(self.party.name), None)

    def deliver(self, sender: Party, frame: bytes) -> None:
        """Handle one frame from ``sender`` (authenticated by the transport) and run the flows
        it makes runnable. A malformed or unroutable frame is logged and dropped."""
        self.deliver_batch([(sender, frame)])

    def deliver_batch(self, frames: list[tuple[Party, bytes]]) -> None:
        """Handle frames in order, then run the flows they made runnable in one round (one
        group commit for all of them)."""
        if self.stopped:
            raise RuntimeError(f"node {self.party} is stopped and cannot take messages")
        for sender, frame in frames:
            self._handle_frame(sender, frame)
        self.run_until_idle()

    def _handle_frame(self, sender: Party, frame: bytes) -> None:
        try:
            message = decode_message(frame)
        except SerializationError as exc:
            log.warning("%s dropped a frame from %s: %s", self.party, sender, exc)
            return
        if isinstance(message, Ack):
            if self.durable:
                # Forgetting an acknowledged message needs no commit of its own: it rides on
                # the next one. Lost on a crash, the message is re-sent and dropped as a dup.
                self._acked.append(message_key(sender.name, message.session_id,
                                               message.to_initiator, message.seq))
        elif isinstance(message, InitialSessionMessage):
            self._on_session_init(sender, message)
        else:
            self._on_session_message(sender, message)

    def _on_session_init(self, sender: Party, init: InitialSessionMessage) -> None:
        key = (sender.name, init.initiator_session_id, False)
        if key in self._sessions or (
            self.durable and self.checkpoints.seen_init(sender.name, init.initiator_session_id)
        ):
            self._ack_after_commit(sender, init.initiator_session_id, False, 0)
            return  # a re-sent init of a session we already run (or ran)
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
            self._store_init(fiber, sender, init)
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
        log.info("%s rejected a session from %s: %s", self.party, sender, reason)
        reject = ExistingSessionMessage(session_id, True, 0, Reject(reason))
        self._transport.send(self.party, sender, encode_message(reject))

    def _on_session_message(self, sender: Party, message: ExistingSessionMessage) -> None:
        initiator = self.party.name if message.to_initiator else sender.name
        routed = self._sessions.get((initiator, message.session_id, message.to_initiator))
        if routed is None:
            log.debug("%s dropped a message for an unknown or ended session", self.party)
            self._ack_after_commit(sender, message.session_id, message.to_initiator, message.seq)
            return
        fiber, session = routed
        if session.peer != sender:
            log.warning("%s dropped a message from %s in a session with %s",
                        self.party, sender, session.peer)
            return
        if message.seq < session.next_recv_seq:
            self._ack_after_commit(sender, message.session_id, message.to_initiator, message.seq)
            return  # already processed: a duplicate
        if message.seq > session.next_recv_seq:
            if session.out_of_order is None:
                session.out_of_order = {}
            session.out_of_order[message.seq] = message.body
            return
        body: SessionBody | None = message.body
        while body is not None:
            seq = session.next_recv_seq
            _apply(session, seq, body)
            if self.durable:
                stored = ExistingSessionMessage(message.session_id, message.to_initiator, seq, body)
                self._store_received(fiber, sender, stored)
            session.next_recv_seq += 1
            pending = session.out_of_order
            body = pending.pop(session.next_recv_seq, None) if pending else None
        if fiber.waiting is session:
            self._schedule(fiber)

    # ----- durability: storing what arrives, restoring what was stored ----------------------------

    def _ack_after_commit(
        self, sender: Party, session_id: int, to_initiator: bool, seq: int
    ) -> None:
        if self.durable:
            frame = encode_message(Ack(session_id, to_initiator, seq))
            self._after.append((None, lambda: self._transport.send(self.party, sender, frame)))

    def _store_init(
        self, fiber: FlowStateMachine, sender: Party, init: InitialSessionMessage
    ) -> None:
        """Keep the init's dedup record and first payload with the responder's first step."""
        sid = init.initiator_session_id
        dedup_key = session_prefix(sender.name, sid, False)
        data = None
        if init.first_payload is not None:
            first = ExistingSessionMessage(sid, False, 0, Data(init.first_payload))
            data = (message_key(sender.name, sid, False, 0), encode_message(first))
        store = self.checkpoints.storage

        def write(txn: Txn) -> None:
            store.put(txn, "dedup", dedup_key, b"")
            if data is not None:
                store.put_sealed(txn, "inbox", data[0], data[1])

        self._pending.append((fiber, write))
        self._ack_after_commit(sender, sid, False, 0)

    def _store_received(
        self, fiber: FlowStateMachine, sender: Party, message: ExistingSessionMessage
    ) -> None:
        session_id, to_initiator, seq = message.session_id, message.to_initiator, message.seq
        key = message_key(sender.name, session_id, to_initiator, seq)
        frame = encode_message(message)
        store = self.checkpoints.storage
        self._pending.append((fiber, lambda txn: store.put_sealed(txn, "inbox", key, frame)))
        self._ack_after_commit(sender, session_id, to_initiator, seq)

    def _restore_all(self) -> None:
        """Restore every stored flow (restart), then re-send unacknowledged messages."""
        # Restoring builds many long-lived objects and little garbage; the cyclic collector
        # would rescan them again and again (a third of the time at 10,000 flows).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for stored in self.checkpoints.load_flows():
                self._restore(stored)
            self.run_until_idle()
        finally:
            if collecting:
                gc.enable()
        for key, frame in self.checkpoints.outbox():
            recipient = key.partition(b"\0")[0].decode()
            try:
                party = self.network_map.party(recipient)
            except KeyError:
                log.warning("%s cannot re-send to unknown party %s", self.party, recipient)
                continue
            self._transport.send(self.party, party, frame)

    def _restore(self, stored: StoredFlow) -> None:
        if stored.flow is None or stored.status == "HOSPITALIZED" or stored.start is None:
            diagnosis = stored.diagnosis or "hospitalised before the restart"
            self._hospital[stored.run_id] = HospitalEntry(stored.run_id, stored.flow_class,
                                                          diagnosis)
            return
        start = stored.start
        fiber = FlowStateMachine(self, stored.run_id, stored.flow)
        if start.peer is not None:
            self._open_responder_session(fiber, start.peer, start.session_id,
                                         FlowInfo(start.peer_version, start.peer_app),
                                         start.confirm_version)
        fiber.start_replay(stored.journal, stored.snapshot)
        fiber.needs_refeed = True
        self._flows[fiber.run_id] = fiber
        self._schedule(fiber)

    def _refeed(self, fiber: FlowStateMachine) -> None:
        """Give a restored flow the messages that had arrived but were not consumed."""
        for session in list(fiber.sessions.values()):
            prefix = session_prefix(session.peer.name, session.session_id, session.we_initiated)
            last = session.next_recv_seq - 1
            # Invariant: the inbox holds exactly the messages of this session that were
            # received and not consumed (data), plus its control messages (confirm, end, error).
            applied = False
            for _, frame in self.checkpoints.inbox(prefix):
                message = decode_message(frame)
                if isinstance(message, ExistingSessionMessage):
                    _apply(session, message.seq, message.body)
                    last, applied = max(last, message.seq), True
            session.next_recv_seq = max(session.next_recv_seq, last + 1)
            if applied and fiber.waiting is session:
                self._schedule(fiber)

    def _admit(self, fiber: FlowStateMachine, diagnosis: str) -> None:
        """Park ``fiber`` in the hospital: its checkpoint stays, its messages keep arriving."""
        log.warning("%s hospitalised flow %s: %s", self.party, fiber.run_id, diagnosis)
        self._flows.pop(fiber.run_id, None)
        self._hospital[fiber.run_id] = HospitalEntry(fiber.run_id, class_name(type(fiber.flow)),
                                                     diagnosis)
        self._hospital_fibers[fiber.run_id] = fiber
        if self.durable:
            run_id, start = fiber.run_id, fiber.start_record
            fiber.start_record = None

            def write(txn: Txn) -> None:
                if start is not None:  # parked in its very first step: keep it retryable
                    self.checkpoints.storage.put_sealed(txn, "flows", run_id.uuid.bytes, start)
                self.checkpoints.mark_hospitalized(txn, run_id, diagnosis)

            self._pending.append((None, write))

    def _step_failed(self, fiber: FlowStateMachine, error: BaseException) -> None:
        """A step could not be stored: drop the flow's memory and re-run it from storage.

        Its session routes stay: messages arriving meanwhile are stored (and only then
        acknowledged) for the restored flow, which takes the routes over."""
        fiber.abandon()
        tries = self._retries[fiber.run_id] = self._retries.get(fiber.run_id, 0) + 1
        diagnosis = f"storing a step failed {tries} times: {type(error).__name__}: {error}"
        if tries > self._max_retries:
            self._admit(fiber, diagnosis)
            return
        delay = self._retry_backoff * 2 ** (tries - 1)
        log.warning("%s will retry flow %s from its checkpoint in %.1f s: %s", self.party,
                    fiber.run_id, delay, diagnosis)
        self._flows.pop(fiber.run_id, None)
        deadline = self.clock.now() + timedelta(seconds=delay)
        if fiber.uncommitted_start is not None:  # its first step was lost: retry from memory
            self._unstarted[fiber.run_id] = fiber.uncommitted_start
        heapq.heappush(self._retry_timers, (deadline, next(self._timer_seq), fiber.run_id))

    def _unroute(self, fiber: FlowStateMachine) -> None:
        for key, (owner, _) in list(self._sessions.items()):
            if owner is fiber:
                del self._sessions[key]

    # ----- operations -----------------------------------------------------------------------------

    def flows(self) -> list[FlowSummary]:
        """Every unfinished flow on this node."""
        return [_summary(f) for f in self._flows.values()]

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

    def handle(self, run_id: StateMachineRunId) -> FlowHandle[Any]:
        """The handle of a running flow, including one restored after a restart."""
        fiber = self._flows.get(run_id)
        if fiber is None:
            raise KeyError(f"no running flow {run_id} on {self.party}")
        return FlowHandle(fiber.run_id, fiber.result)

    def hospital(self) -> list[HospitalEntry]:
        """Hospitalised flows with their diagnosis."""
        return list(self._hospital.values())

    def retry_flow(self, run_id: StateMachineRunId) -> bool:
        """Run a hospitalised flow again from its checkpoint. False when it is not in the
        hospital or the node has no storage to restore it from."""
        if run_id not in self._hospital or not self.durable:
            return False
        del self._hospital[run_id]
        old = self._hospital_fibers.pop(run_id, None)
        if old is not None:
            self._unroute(old)
        self._retries.pop(run_id, None)
        stored = self.checkpoints.load_flow(run_id)
        if stored.status == "HOSPITALIZED" and stored.flow is not None:
            stored.status = "RUNNABLE"
        self._restore(stored)
        self.run_until_idle()
        return True

    def kill_flow(self, run_id: StateMachineRunId) -> bool:
        """End the flow with ``KilledFlowException``; its counterparties get
        ``UnexpectedFlowEndException``; its checkpoint is deleted. A hospitalised flow is
        removed with its checkpoint. False when there is no such flow."""
        if run_id in self._hospital:
            self._kill_hospitalized(run_id)
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
            self._run_step(fiber, KilledFlowException(f"flow {run_id} was killed by an operator"))
        finally:
            fiber.scheduled = False
        self.run_until_idle()
        return True

    def _kill_hospitalized(self, run_id: StateMachineRunId) -> None:
        """Kill a parked flow. It is first restored to its checkpoint, so that its
        counterparties learn it ended; when even that fails, its records are just deleted."""
        del self._hospital[run_id]
        old = self._hospital_fibers.pop(run_id, None)
        if old is not None:
            self._unroute(old)
        if not self.durable:
            return
        stored = self.checkpoints.load_flow(run_id)
        if stored.flow is not None:
            stored.status = "RUNNABLE"
            self._restore(stored)
            self.run_until_idle()
            if run_id in self._flows:
                self.kill_flow(run_id)
                return
            self._hospital.pop(run_id, None)  # replay parked it again: no sessions to tell
            old = self._hospital_fibers.pop(run_id, None)
            if old is not None:
                self._unroute(old)
        self._pending.append((None, lambda txn: self.checkpoints.delete_flow(txn, run_id)))
        self._commit()

    def inspect_flow(self, run_id: StateMachineRunId) -> dict[str, Any]:
        """A flow's suspended stack (from its latest frame snapshot, locals as reprs), its
        sessions, progress step and what it waits for. KeyError when there is no such flow."""
        fiber = self._flows.get(run_id) or self._hospital_fibers.get(run_id)
        if fiber is not None:
            return self._describe(fiber)
        for entry in self.dump_checkpoints():
            if entry["run_id"] == str(run_id):
                return entry
        raise KeyError(f"no flow {run_id} on {self.party}")

    def _describe(self, fiber: FlowStateMachine) -> dict[str, Any]:
        summary = _summary(fiber)
        snapshot = fiber.snapshot
        hospital = self._hospital.get(fiber.run_id)
        return {
            "run_id": str(fiber.run_id),
            "flow_class": summary.flow_class,
            "status": "HOSPITALIZED" if hospital else summary.status,
            "diagnosis": hospital.diagnosis if hospital else None,
            "progress_step": summary.progress_step,
            "waiting_for": snapshot.waiting if snapshot else summary.waiting_for,
            "journal_records": fiber.journal_length,
            "sessions": [
                {"peer": str(s.peer), "session_id": s.session_id,
                 "initiated_by_us": s.we_initiated, "next_send_seq": s.next_send_seq,
                 "next_receive_seq": s.next_recv_seq, "peer_ended": s.peer_ended}
                for s in fiber.sessions.values()
            ],
            "stack": self.checkpoints.describe_frames(snapshot) if snapshot and self.durable
            else [],
        }

    def dump_checkpoints(self) -> list[dict[str, Any]]:
        """Every stored checkpoint as JSON-ready dicts (class, status, what it waits for, stack
        with locals, sessions, progress step); the live view for flows without storage."""
        if not self.durable:
            return [self._describe(f) for f in self._flows.values()]
        dumped = []
        for stored in self.checkpoints.load_flows():
            live = self._flows.get(stored.run_id) or self._hospital_fibers.get(stored.run_id)
            if live is not None:
                dumped.append(self._describe(live))
                continue
            hospital = self._hospital.get(stored.run_id)
            dumped.append({
                "run_id": str(stored.run_id),
                "flow_class": stored.flow_class,
                "status": stored.status,
                "diagnosis": hospital.diagnosis if hospital else stored.diagnosis,
                "journal_records": len(stored.journal),
                "waiting_for": stored.snapshot.waiting if stored.snapshot else None,
                "stack": self.checkpoints.describe_frames(stored.snapshot)
                if stored.snapshot else [],
            })
        return dumped

    def set_flows_draining_mode(self, draining: bool) -> None:
        """Refuse new flow starts and new inbound sessions while ``draining``."""
        self._draining = bool(draining)

    @property
    def is_draining(self) -> bool:
        """Whether the node refuses new flows."""
        return self._draining

    @property
    def is_drained(self) -> bool:
        """Draining and no flow left in flight: safe to stop for an upgrade."""
        return self._draining and not self._flows

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
        for fiber in [*self._flows.values(), *self._hospital_fibers.values()]:
            fiber.abandon()
        self._flows.clear()
        self._runnable.clear()
        self._pending.clear()
        self._after.clear()
        if self.storage is not None:
            self.storage.close()

    def __repr__(self) -> str:
        return f"<Node {self.party.name} flows={len(self._flows)}>"


def _message_key(recipient: Party, message: SessionMessage) -> bytes:
    if isinstance(message, InitialSessionMessage):
        return message_key(recipient.name, message.initiator_session_id, False, 0)
    return message_key(recipient.name, message.session_id, message.to_initiator, message.seq)


def _apply(session: FlowSession, seq: int, body: SessionBody) -> None:
    """Record the effect of one in-order message from the peer on ``session``."""
    if isinstance(body, Data):
        session.inbound.append((seq, body.payload))
    elif isinstance(body, Confirm):
        session.peer_info = FlowInfo(body.flow_version, body.app_name)
    elif isinstance(body, Reject):
        session.rejected = body.message
    elif isinstance(body, End):
        session.peer_ended = True
    elif isinstance(body, ErrorEnd):
        session.peer_ended = True
        session.peer_error = _peer_exception(session.peer, body)


def _peer_exception(peer: Party, body: ErrorEnd) -> BaseException:
    generic = UnexpectedFlowEndException(
        f"Counterparty flow on {peer} had an internal error and has terminated"
    )
    if body.exception is None:
        return generic
    try:
        exc = _wire.decode(body.exception)
    except SerializationError as err:
        return UnexpectedFlowEndException(
            f"Counterparty flow on {peer} failed with an exception this node cannot decode: {err}"
        )
    return exc if isinstance(exc, BaseException) else generic


def _summary(fiber: FlowStateMachine) -> FlowSummary:
    tracker = fiber.flow.progress_tracker
    step = tracker.current_step.label if tracker is not None else None
    return FlowSummary(
        fiber.run_id,
        class_name(type(fiber.flow)),
        fiber.status.value,
        step,
        describe_wait(fiber.waiting) if fiber.waiting is not None else None,
    )
