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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fibers import _wire
from fibers._annotations import DECLARED_RESPONDERS, flow_version_of, initiating_class_of
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
from fibers._messages import (
    Confirm,
    Data,
    End,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
    Reject,
    SessionBody,
    decode_message,
    encode_message,
)
from fibers._session import FlowSession
from fibers._state_machine import FlowStateMachine, app_name_of, class_name
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


class ServiceHub:
    """The node services a flow may use (``FlowLogic.service_hub``). The ledger layer extends
    it with storage, the vault and key management."""

    def __init__(self, node: Node) -> None:
        self.my_info = node.info
        self.clock = node.clock
        self.network_map = node.network_map


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

    def _new_state_machine(self, flow: FlowLogic[Any]) -> FlowStateMachine:
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
        if not fiber.scheduled and not fiber.finished:
            fiber.scheduled = True
            self._runnable.append(fiber)

    def run_until_idle(self) -> None:
        """Run runnable flows until every flow waits for something. Re-entrant calls (from a
        flow or a result callback) return at once: the outer loop picks the work up."""
        if self._running:
            return
        self._running = True
        try:
            while self._runnable:
                fiber = self._runnable.popleft()
                fiber.scheduled = False
                self._run_step(fiber)
        finally:
            self._running = False

    def _run_step(self, fiber: FlowStateMachine, throw: BaseException | None = None) -> None:
        fiber.resume(throw)
        self._end_step(fiber)

    def _end_step(self, fiber: FlowStateMachine) -> None:
        """The flow suspended or finished: send what the step produced, then settle the end."""
        for recipient, message in fiber.take_outbox():
            self._transport.send(self.party, recipient, encode_message(message))
        if fiber.finished:
            self._flows.pop(fiber.run_id, None)
            fiber.settle_result()

    def schedule_wakeup(self, fiber: FlowStateMachine, deadline: datetime) -> None:
        """Make ``fiber`` runnable once the clock reaches ``deadline``."""
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), fiber))

    def fire_due_timers(self) -> int:
        """Wake every flow whose deadline has passed; returns how many were woken."""
        if not self._timers:
            return 0
        now, woken = self.clock.now(), 0
        while self._timers and self._timers[0][0] <= now:
            _, _, fiber = heapq.heappop(self._timers)
            if not fiber.finished:
                self._schedule(fiber)
                woken += 1
        if woken:
            self.run_until_idle()
        return woken

    def next_deadline(self) -> datetime | None:
        """The earliest pending sleep deadline, if any."""
        return self._timers[0][0] if self._timers else None

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
        try:
            message = decode_message(frame)
        except SerializationError as exc:
            log.warning("%s dropped a frame from %s: %s", self.party, sender, exc)
            return
        if isinstance(message, InitialSessionMessage):
            self._on_session_init(sender, message)
        else:
            self._on_session_message(sender, message)
        self.run_until_idle()

    def _on_session_init(self, sender: Party, init: InitialSessionMessage) -> None:
        key = (sender.name, init.initiator_session_id, False)
        if key in self._sessions:
            return  # a re-sent init of a session we already run
        responder = self._responder_for(init.flow_class)
        if isinstance(responder, str):
            self._reject(sender, init.initiator_session_id, responder)
            return
        factory, version = responder
        try:
            flow = factory(sender)
            if not isinstance(flow, FlowLogic):
                raise TypeError(f"the responder factory returned {type(flow).__qualname__}")
            fiber = self._new_state_machine(flow)
        except Exception as exc:
            log.error("%s could not start the responder for %s", self.party, init.flow_class,
                      exc_info=exc)
            self._reject(sender, init.initiator_session_id,
                         f"{self.party} could not start a responder for {init.flow_class}")
            return
        session = FlowSession(
            sender, init.initiator_session_id, False, 0, next_send_seq=0, next_recv_seq=1
        )
        session.peer_info = FlowInfo(init.flow_version, init.app_name)
        if init.first_payload is not None:
            session.inbound.append(init.first_payload)
        fiber.sessions[(0, sender.name)] = session
        self.register_session(fiber, session)
        confirm = Confirm(0, version, app_name_of(type(flow)))
        seq = session.take_seq()
        confirm_message = ExistingSessionMessage(session.session_id, True, seq, confirm)
        fiber.outbox.append((sender, confirm_message))
        self._schedule(fiber)

    def _responder_for(self, flow_class: str) -> tuple[ResponderFactory, int] | str:
        """The registered responder for ``flow_class``, or the reason to reject the session."""
        if self._draining:
            return f"{self.party} is draining and accepts no new sessions"
        registered = self._responders.get(flow_class)
        if registered is not None:
            return registered
        for initiator, (responder, version) in DECLARED_RESPONDERS.items():
            if class_name(initiator) == flow_class:
                return responder, version or flow_version_of(initiator)
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
            return
        fiber, session = routed
        if session.peer != sender:
            log.warning("%s dropped a message from %s in a session with %s",
                        self.party, sender, session.peer)
            return
        if message.seq < session.next_recv_seq:
            return  # already processed: a duplicate
        if message.seq > session.next_recv_seq:
            session.out_of_order[message.seq] = message.body
            return
        body: SessionBody | None = message.body
        while body is not None:
            _apply(session, body)
            session.next_recv_seq += 1
            body = session.out_of_order.pop(session.next_recv_seq, None)
        if fiber.waiting is session:
            self._schedule(fiber)

    # ----- operations -----------------------------------------------------------------------------

    def flows(self) -> list[FlowSummary]:
        """Every unfinished flow on this node."""
        return [_summary(f) for f in self._flows.values()]

    def kill_flow(self, run_id: StateMachineRunId) -> bool:
        """End the flow with ``KilledFlowException``; its counterparties get
        ``UnexpectedFlowEndException``. False when no such flow is running."""
        fiber = self._flows.get(run_id)
        if fiber is None or fiber.finished:
            return False
        fiber.scheduled = True  # keep it off the run queue while it is being killed
        try:
            self._run_step(fiber, KilledFlowException(f"flow {run_id} was killed by an operator"))
        finally:
            fiber.scheduled = False
        self.run_until_idle()
        return True

    def set_flows_draining_mode(self, draining: bool) -> None:
        """Refuse new flow starts and new inbound sessions while ``draining``."""
        self._draining = bool(draining)

    @property
    def is_draining(self) -> bool:
        """Whether the node refuses new flows."""
        return self._draining

    def warn_once(self, code: types.CodeType, message: str) -> None:
        """Log ``message`` once per code location."""
        if code not in self._warned:
            self._warned.add(code)
            log.warning("%s", message)

    def stop(self) -> None:
        """Stop scheduling. Suspended flows stay suspended (and are lost without durability)."""
        self.stopped = True

    def __repr__(self) -> str:
        return f"<Node {self.party.name} flows={len(self._flows)}>"


def _apply(session: FlowSession, body: SessionBody) -> None:
    """Record the effect of one in-order message from the peer on ``session``."""
    if isinstance(body, Data):
        session.inbound.append(body.payload)
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
        _describe_wait(fiber.waiting),
    )


def _describe_wait(wait: object) -> str | None:
    if isinstance(wait, FlowSession):
        return f"a message from {wait.peer}"
    if isinstance(wait, datetime):
        return f"a timer until {wait.isoformat()}"
    return None

