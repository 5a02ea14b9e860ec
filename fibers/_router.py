"""The router of the step pipeline: where each inbound frame goes (docs/architecture.md,
"The parts" and "Fault paths").

It owns the routing table (session -> flow state machine), the routes held back for flows
waiting for a retry, the routes of parked flows (with the floor below which a message is a
duplicate), the registered responders, and the counts of dropped frames (``FrameStats``). It
decodes each frame, drops what is malformed, from the wrong sender, a duplicate or too far
ahead (``REORDER_WINDOW``), orders the rest, starts or rejects responders for session inits,
and hands what must be stored to the commit stage, which acknowledges it once stored.

Contract: scheduler thread only; a frame it cannot use is counted, logged and dropped and
never raises out of ``deliver`` for a reason the peer controls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from fibers import _wire
from fibers._annotations import DECLARED_RESPONDERS
from fibers._checkpoint_store import CheckpointStore
from fibers._commit import CommitStage
from fibers._commit_units import outbox_key
from fibers._errors import SerializationError
from fibers._flow_logic import FlowInfo, FlowLogic, StateMachineRunId
from fibers._identity import Party
from fibers._inbound import REORDER_WINDOW, FrameStats
from fibers._messages import (
    Ack,
    AckedSessionMessage,
    Confirm,
    End,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
    Reject,
    SessionBody,
    decode_message,
    encode_message,
)
from fibers._scheduler import Scheduler
from fibers._session import FlowSession
from fibers._sessions import app_name_of
from fibers._state_machine import FlowStateMachine

__all__ = ["ResponderFactory", "Route", "Router"]

log = logging.getLogger("fibers.node")

_FINAL = (End, ErrorEnd, Reject)
"""The bodies that end a responder's side of a session (see ``fibers._dedup``, rule 2)."""

ResponderFactory = Callable[[Party], FlowLogic[Any]]
Route = tuple[str, int, bool]
"""(initiator's name, session id, whether the message goes to the initiator): see
``FlowSession.routing_key``."""
NewMachine = Callable[..., FlowStateMachine]
"""Makes the state machine of a responder flow: ``(flow, peer=, session_id=, peer_version=,
peer_app=, confirm_version=)``; raises what the node refuses."""


def _no_wake(route: Route) -> bool:
    """No flow hibernates (a node without storage)."""
    return False


class Router:
    """Inbound frames of one node to the flow state machines they are for."""

    def __init__(
        self,
        party: Party,
        checkpoints: CheckpointStore | None,
        commit: CommitStage,
        scheduler: Scheduler,
        *,
        new_machine: NewMachine,
        accepting: Callable[[], str | None],
    ) -> None:
        self._party = party
        self._checkpoints = checkpoints
        self._commit = commit
        self._scheduler = scheduler
        self._new_machine = new_machine
        self._accepting = accepting
        self.frame_stats = FrameStats()
        self._responders: dict[str, tuple[ResponderFactory, int]] = {}
        # Invariant: a route is in at most one of _sessions (a running flow), _held (a flow
        # waiting for its retry, or a dropped responder when None) and, for a flow parked
        # when it was restored or after its steps kept failing, _parked.
        self._sessions: dict[Route, tuple[FlowStateMachine, FlowSession]] = {}
        self._held: dict[Route, StateMachineRunId | None] = {}
        # Each parked route maps to its flow and the number of the first message from the
        # peer it has not processed (lower ones are duplicates, see fibers._hospital).
        self._parked: dict[Route, tuple[StateMachineRunId, int]] = {}
        # Wakes the hibernated flow a route goes to (fibers._hibernation); whether it did.
        self.wake_route: Callable[[Route], bool] = _no_wake

    @property
    def durable(self) -> bool:
        """Whether what arrives is stored (the node has storage)."""
        return self._checkpoints is not None

    # ----- responders -----------------------------------------------------------------------------

    def register_responder(self, name: str, factory: ResponderFactory, version: int) -> None:
        """Run ``factory(counterparty)`` for inits of the flow class called ``name``."""
        self._responders[name] = (factory, version)

    def _responder_for(self, flow_class: str) -> tuple[ResponderFactory, int] | str:
        """The registered responder for ``flow_class``, or the reason to reject the session."""
        refusal = self._accepting()
        if refusal is not None:
            return refusal
        registered = self._responders.get(flow_class) or DECLARED_RESPONDERS.get(flow_class)
        if registered is not None:
            return registered
        known = _wire.whitelisted_class(flow_class)
        if known is not None and not issubclass(known, FlowLogic):
            return f"{flow_class} is not a flow class"
        return f"{flow_class} is not registered"

    # ----- the routing table ----------------------------------------------------------------------

    def register(self, machine: FlowStateMachine, session: FlowSession) -> None:
        """Route ``session``'s inbound messages to ``machine``."""
        key = session.routing_key(self._party.name)
        self._sessions[key] = (machine, session)
        self._held.pop(key, None)

    def unregister(self, session: FlowSession) -> None:
        """Stop routing messages to ``session``."""
        self._sessions.pop(session.routing_key(self._party.name), None)

    def owner(self, route: Route) -> FlowStateMachine | None:
        """The state machine ``route`` goes to, if it runs."""
        routed = self._sessions.get(route)
        return routed[0] if routed is not None else None

    def owner_waking(self, route: Route) -> FlowStateMachine | None:
        """The state machine ``route`` goes to, waking it if it is hibernated."""
        owner = self.owner(route)
        if owner is None and route not in self._parked and route not in self._held \
                and self.wake_route(route):
            owner = self.owner(route)
        return owner

    def sessions(self) -> Iterator[tuple[Route, FlowSession]]:
        """Every routed session (for tests and inspection)."""
        return iter([(key, session) for key, (_, session) in self._sessions.items()])

    def unroute(self, machine: FlowStateMachine) -> None:
        """Stop routing every session of ``machine``."""
        for key in [k for k, (owner, _) in self._sessions.items() if owner is machine]:
            del self._sessions[key]

    def hold(self, machine: FlowStateMachine, run_id: StateMachineRunId | None) -> None:
        """Stop routing to ``machine``; hold its sessions' messages back (neither stored nor
        acknowledged: the sender re-sends them) until ``run_id`` is retried (or, for a dropped
        responder, until its re-sent init starts it again)."""
        # Every session it had, also those it closed in the lost step: a message for one of
        # those must not be taken for one of an ended session (acknowledged and dropped).
        keys = {session.routing_key(self._party.name) for session in machine.session_history}
        keys.update(key for key, (owner, _) in self._sessions.items() if owner is machine)
        for key in keys:
            routed = self._sessions.get(key)
            if routed is None or routed[0] is machine:
                self._sessions.pop(key, None)
                self._held[key] = run_id

    def release(self, run_id: StateMachineRunId) -> None:
        """``run_id`` is being retried: what arrives for it is routed (or stored) again."""
        for key in [k for k, owner in self._held.items() if owner == run_id]:
            del self._held[key]

    def park(self, run_id: StateMachineRunId, routes: dict[Route, int]) -> None:
        """Keep messages for the parked flow ``run_id`` (route -> floor) for its retry."""
        for key, floor in routes.items():
            self._parked[key] = (run_id, floor)

    def unpark(self, run_id: StateMachineRunId) -> None:
        """The flow left the hospital: its sessions route normally again (or not at all)."""
        for key in [k for k, (owner, _) in self._parked.items() if owner == run_id]:
            del self._parked[key]

    def parked(self) -> dict[Route, tuple[StateMachineRunId, int]]:
        """The parked routes with their flow and floor (a copy)."""
        return dict(self._parked)

    def clear(self) -> None:
        """Forget every route (node stop)."""
        self._sessions.clear()
        self._held.clear()

    # ----- responder sessions ---------------------------------------------------------------------

    def open_responder_session(
        self,
        machine: FlowStateMachine,
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
        machine.session_table.adopt(session)
        self.register(machine, session)
        confirm = Confirm(0, our_version, app_name_of(type(machine.flow)))
        machine.outbox.append(
            (initiator, ExistingSessionMessage(session_id, True, session.take_seq(), confirm))
        )
        return session

    # ----- inbound frames -------------------------------------------------------------------------

    def deliver(self, sender: Party, frame: bytes) -> None:
        """Handle one frame from ``sender`` (authenticated by the transport)."""
        try:
            message = decode_message(frame)
        except SerializationError as exc:
            self.frame_stats.malformed += 1
            log.warning("%s dropped a frame from %s: %s", self._party, sender, exc)
            return
        if isinstance(message, Ack):
            self._acknowledged(sender, message.entries)
        elif isinstance(message, InitialSessionMessage):
            self._on_session_init(sender, message)
        else:
            if type(message) is AckedSessionMessage:
                self._acknowledged(sender, message.acks)
            self._on_session_message(sender, message)

    def _acknowledged(self, sender: Party, entries: list[tuple[int, bool, int]]) -> None:
        """Acknowledgements from ``sender`` (an ``Ack``, or riding on a session message)."""
        ignored = self._commit.acknowledged(sender, entries)
        if ignored:
            self.frame_stats.stale_acks += ignored
            log.debug("%s ignored %d acknowledgement(s) from %s of messages not awaiting one",
                      self._party, ignored, sender)

    def _on_session_init(self, sender: Party, init: InitialSessionMessage) -> None:
        sid = init.initiator_session_id
        owner = self.owner((sender.name, sid, False))
        if owner is not None or (
            self._checkpoints is not None and self._checkpoints.seen_init(sender.name, sid)
        ):
            # A re-sent init of a session we run (acknowledged once its responder's first step
            # is stored), ran or rejected.
            self._commit.ack_after_commit(sender, (sid, False, 0), owner)
            return
        responder = self._responder_for(init.flow_class)
        if isinstance(responder, str):
            self._reject(sender, sid, responder)
            return
        factory, version = responder
        try:
            flow = factory(sender)
            if not isinstance(flow, FlowLogic):
                raise TypeError(f"the responder factory returned {type(flow).__qualname__}")
            machine = self._new_machine(
                flow,
                peer=sender,
                session_id=sid,
                peer_version=init.flow_version,
                peer_app=init.app_name,
                confirm_version=version,
            )
        except Exception as exc:
            log.error("%s could not start the responder for %s", self._party, init.flow_class,
                      exc_info=exc)
            self._reject(sender, sid, f"{self._party} could not start a responder for "
                                      f"{init.flow_class}")
            return
        peer_info = FlowInfo(init.flow_version, init.app_name)
        session = self.open_responder_session(machine, sender, sid, peer_info, version)
        if init.first_payload is not None:
            session.inbound.append((0, init.first_payload))
        if self.durable:
            self._commit.store_init(machine, sender, init)
        self._scheduler.schedule(machine)

    def _reject(self, sender: Party, session_id: int, reason: str) -> None:
        """Refuse a session init: it is recorded (a re-sent copy is acknowledged and never
        run, even once a responder is registered) and acknowledged, and the initiator gets a
        Reject that is re-sent until acknowledged."""
        log.info("%s rejected a session from %s: %s", self._party, sender, reason)
        reject = ExistingSessionMessage(session_id, True, 0, Reject(reason))
        self._commit.store_rejection(sender, session_id, outbox_key(sender, reject),
                                     encode_message(reject))

    def _on_session_message(self, sender: Party, message: ExistingSessionMessage) -> None:
        initiator = self._party.name if message.to_initiator else sender.name
        key = (initiator, message.session_id, message.to_initiator)
        routed = self._sessions.get(key)
        if message.to_initiator and (message.seq == 0 or routed is None):
            # In order, message 0 is processed before any other is acknowledged.
            self._commit.init_implied(sender, message.session_id)
        if routed is None:
            routed = self._woken(key)
        if routed is None:
            self._on_unrouted(sender, key, message)
            return
        machine, session = routed
        entry = (message.session_id, message.to_initiator, message.seq)
        if session.peer is not sender and session.peer != sender:
            self.frame_stats.wrong_sender += 1
            log.warning("%s dropped a message from %s in a session with %s",
                        self._party, sender, session.peer)
            return
        if message.seq < session.next_recv_seq:
            self._commit.ack_after_commit(sender, entry, machine)
            return  # already processed: a duplicate
        if message.seq >= session.next_recv_seq + REORDER_WINDOW:
            # Not acknowledged: the sender keeps it and sends it again (see REORDER_WINDOW).
            self.frame_stats.too_far_ahead += 1
            log.warning("%s dropped message %d from %s: it is more than %d ahead of %d",
                        self._party, message.seq, sender, REORDER_WINDOW, session.next_recv_seq)
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
            if message.to_initiator and isinstance(body, _FINAL):
                self._commit.session_over(sender, message.session_id)
            if self._checkpoints is not None:  # durable
                # The first body is the message itself: a new one only for those it released.
                stored = message if seq == message.seq else ExistingSessionMessage(
                    message.session_id, message.to_initiator, seq, body)
                self._commit.store_received(machine, sender, stored)
            session.next_recv_seq += 1
            pending = session.out_of_order
            body = pending.pop(session.next_recv_seq, None) if pending else None
        if machine.waiting is session:
            self._scheduler.schedule(machine)

    def _woken(self, key: Route) -> tuple[FlowStateMachine, FlowSession] | None:
        """The route of the hibernated flow ``key`` goes to, woken now; None when there is
        none (also for a parked flow or one waiting for its retry)."""
        if key in self._parked or key in self._held:
            return None
        # Even when the wake failed: a flow whose replay diverged is parked with the
        # sessions it had reopened, and keeps their messages for its retry.
        self.wake_route(key)
        return self._sessions.get(key)

    def _on_unrouted(self, sender: Party, key: Route, message: ExistingSessionMessage) -> None:
        """A message for no running flow: kept for a parked flow; held back for a flow waiting
        for its retry (neither stored nor acknowledged: the sender re-sends it). Else, to an
        initiator, its session ended: acknowledged and dropped. From an initiator, acknowledged
        and dropped if the session's dedup record says it ran here (or was refused); without
        one, the init was never stored (lost in a crash, or still on its way), and the message
        is dropped unacknowledged, so that the initiator re-sends it after the init (see
        ``fibers._dedup`` for why no message of an ended session is stranded that way)."""
        entry = (message.session_id, message.to_initiator, message.seq)
        if key in self._parked:
            self._store_for_parked(sender, message, *self._parked[key])
        elif key in self._held:
            return
        elif message.to_initiator or self._checkpoints is None \
                or self._checkpoints.seen_init(sender.name, message.session_id):
            log.debug("%s dropped a message for an ended session", self._party)
            if message.to_initiator and isinstance(message.body, _FINAL):
                self._commit.session_over(sender, message.session_id)
            self._commit.ack_after_commit(sender, entry)
        else:
            self.frame_stats.unknown_session += 1
            log.info("%s dropped message %d from %s for session %d, whose init it has not "
                     "stored: it is re-sent", self._party, message.seq, sender,
                     message.session_id)

    def _store_for_parked(
        self, sender: Party, message: ExistingSessionMessage, run_id: StateMachineRunId,
        floor: int,
    ) -> None:
        """Keep a message for the parked flow ``run_id`` in the inbox; its retry picks it up.
        A message numbered below ``floor`` was processed before the flow was parked: it is a
        duplicate, acknowledged and not stored (a retry would process it again); one numbered
        ``REORDER_WINDOW`` or more past it is dropped unacknowledged, as for a running flow,
        so a peer cannot fill a parked flow's inbox without bound."""
        if message.seq >= floor + REORDER_WINDOW:
            self.frame_stats.too_far_ahead += 1
            log.warning("%s dropped message %d from %s for parked flow %s: more than %d ahead",
                        self._party, message.seq, sender, run_id, REORDER_WINDOW)
            return
        if message.seq < floor:
            log.debug("%s dropped duplicate %d for parked flow %s", self._party, message.seq,
                      run_id)
            self._commit.ack_after_commit(
                sender, (message.session_id, message.to_initiator, message.seq))
            return
        if message.to_initiator and isinstance(message.body, _FINAL):
            self._commit.session_over(sender, message.session_id)
        self._commit.store_received(None, sender, message)
