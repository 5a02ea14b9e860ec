"""The sessions of one state machine: opening, posting, seeing the peer's end, closing.

``SessionTable`` owns the sessions of one flow run by (index of the owning flow within the
run, peer name), and every session the run ever had (for the node's routing and dedup). It
opens a session on first contact (journaling its random id, so a replay opens the same one),
numbers and emits the messages a flow sends, turns the peer's end into the exception the flow
raises at its next receive (journaled too), and ends our side of the sessions when their
owning flow ends. See docs/checkpoint-format.md for the journal records it writes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from fibers import _wire
from fibers._annotations import flow_version_of, initiating_class_of
from fibers._errors import (
    FlowConfigurationError,
    FlowException,
    ReceiveTimeoutException,
    UnexpectedFlowEndException,
)
from fibers._flow_logic import FlowBinding
from fibers._identity import Party
from fibers._journal import encode_error, replay_int
from fibers._messages import (
    End,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
    SessionBody,
    SessionMessage,
)
from fibers._replay import FlowJournal
from fibers._session import FlowSession

if TYPE_CHECKING:
    from fibers._flow_host import FlowHost
    from fibers._state_machine import FlowStateMachine

SessionKey = tuple[int, str]


def class_name(cls: type) -> str:
    """The name a flow class travels under: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def app_name_of(cls: type) -> str:
    """The app a flow class belongs to: its top-level package."""
    return cls.__module__.split(".", 1)[0]


class SessionTable:
    """The open sessions of one state machine and the history of all it had."""

    __slots__ = ("_emit", "_host", "_journal", "_machine", "_received_errors", "history",
                 "open")

    def __init__(self, machine: FlowStateMachine, host: FlowHost, journal: FlowJournal,
                 emit: Callable[[Party, SessionMessage], None]) -> None:
        self._machine, self._host, self._journal, self._emit = machine, host, journal, emit
        # Invariant: every session in open is also in history, and is registered with the
        # host for routing until it is closed (removed from open).
        self.open: dict[SessionKey, FlowSession] = {}
        self.history: list[FlowSession] = []
        # Exceptions the flow raised because a counterparty ended or failed: they end the flow
        # but are not propagated further (see error_body_for). None until the first (most
        # flows never see one; 100,000 parked flows would each keep an empty list).
        self._received_errors: list[BaseException] | None = None

    def adopt(self, session: FlowSession) -> None:
        """Add the session a responder was started for (the node opened it)."""
        self.open[(session.owner_index, session.peer.name)] = session
        self.history.append(session)

    def find(self, binding: FlowBinding, party: Party) -> FlowSession | None:
        """The open session the flow of ``binding`` uses with ``party``, if any."""
        if not isinstance(party, Party):
            raise TypeError(f"expected a Party to talk to, got {type(party).__qualname__}")
        return self.open.get((binding.owner_index, party.name))

    def get(self, binding: FlowBinding, party: Party) -> FlowSession:
        """The session the flow of ``binding`` uses with ``party``, opened now if there is
        none."""
        session = self.find(binding, party)
        return session if session is not None else self.start(binding, party, None)

    def start(self, binding: FlowBinding, party: Party, first_payload: bytes | None
              ) -> FlowSession:
        """Open a session from the session owner of ``binding``'s flow to ``party`` and emit
        its init (with ``first_payload``, the first send, travelling inside it)."""
        if not isinstance(party, Party):
            raise TypeError(f"expected a Party to talk to, got {type(party).__qualname__}")
        owner = binding.session_owner
        initiating = initiating_class_of(type(owner))
        if initiating is None:
            raise FlowConfigurationError(
                f"{type(owner).__qualname__} cannot open a session with {party}: only flows "
                "annotated @initiating_flow (or their sub-flows) may start a conversation"
            )
        index = binding.owner_index
        entry = self._journal.replayed("open", index, party.name)
        session_id = replay_int(entry) if entry is not None else self._host.new_session_id()
        if entry is None:
            self._journal.record(("open", index, party.name, session_id))
            self._machine.routes_changed = True  # the step writes its route (wake index)
        session = FlowSession(party, session_id, True, index)
        self.open[(index, party.name)] = session
        self.history.append(session)
        self._host.register_session(self._machine, session)
        self._emit(party, InitialSessionMessage(
            initiator_session_id=session.session_id,
            flow_class=class_name(initiating),
            flow_version=flow_version_of(initiating),
            app_name=app_name_of(initiating),
            first_payload=first_payload,
        ))
        return session

    def post(self, session: FlowSession, body: SessionBody) -> None:
        """Emit ``body`` as the session's next numbered message. In a session we initiated
        whose responder ended (or refused it) nothing is emitted: nobody would consume it, and
        the responder's dedup record may already be gone (``fibers._dedup``, rule 2)."""
        seq = session.next_send_seq
        session.next_send_seq = seq + 1  # FlowSession.take_seq, without a call per message
        if session.we_initiated and (session.peer_ended or session.rejected is not None):
            return
        message = ExistingSessionMessage(session.session_id, not session.we_initiated, seq, body)
        journal = self._journal
        if journal.restoring and journal.replaying:
            self._emit(session.peer, message)  # which drops it: see FlowStateMachine.emit
        else:  # emit's common case, without a call per message
            self._machine.outbox.append((session.peer, message))

    def time_out(self, session: FlowSession, deadline: datetime) -> None:
        """Raise (and journal) the timeout of a receive that reached ``deadline``."""
        error = ReceiveTimeoutException(
            f"nothing received from {session.peer} by {deadline.isoformat()}: stopped waiting")
        # Recorded like the counterparty's end: a replay raises it at the same receive.
        self._journal.record(("recv_end", session.owner_index, session.peer.name,
                              encode_error(error)))
        raise error

    def raise_if_peer_gone(self, session: FlowSession) -> None:
        """Raise (and journal) the counterparty's end, failure or rejection, if it came."""
        error: BaseException | None = None
        if session.peer_error is not None:
            error, session.peer_error = session.peer_error, None
        elif session.rejected is not None:
            error = UnexpectedFlowEndException(session.rejected)
        elif session.peer_ended:
            error = UnexpectedFlowEndException(
                f"Counterparty flow on {session.peer} has completed without sending data. "
                "Mismatched send and receive?"
            )
        if error is not None:
            self._journal.record(("recv_end", session.owner_index, session.peer.name,
                                  encode_error(error)))
            self.note_received(error)
            raise error

    def note_received(self, error: BaseException) -> None:
        """``error`` came from a counterparty: if it ends the flow, it is not passed on."""
        if self._received_errors is None:
            self._received_errors = []
        self._received_errors.append(error)

    def close(self, owner: int | None, failure: BaseException | None) -> None:
        """End our side of the sessions owned by flow ``owner`` (all sessions when None),
        telling each counterparty that has not ended how (``failure``, or a normal end)."""
        error_body = self.error_body_for(failure) if failure is not None else None
        for key, session in list(self.open.items()):
            if owner is not None and session.owner_index != owner:
                continue
            del self.open[key]
            session.closed = True
            self._host.unregister_session(session)
            # A responder ends its side with a message even when the initiator ended first:
            # its dedup record ends once that final message is acknowledged (fibers._dedup,
            # rule 3). post emits nothing to a responder that ended.
            self.post(session, error_body if error_body is not None else End())

    def error_body_for(self, failure: BaseException) -> ErrorEnd:
        """What the counterparties learn of ``failure``: only a FlowException this flow raised
        itself travels on; one it received from a counterparty and did not catch ends it, and
        its own counterparties see an unexplained end (UnexpectedFlowEndException)."""
        if any(failure is received for received in self._received_errors or ()):
            return ErrorEnd(None)
        if not isinstance(failure, FlowException):
            return ErrorEnd(None)
        try:
            return ErrorEnd(_wire.encode(failure))
        except _wire.SerializationError:
            # Extra fields that cannot cross the wire: keep the type's name and the message.
            fallback = FlowException(f"{type(failure).__qualname__}: {failure}")
            return ErrorEnd(_wire.encode(fallback))
