"""One side of a flow session: what has been sent and received, and how the peer ended."""

from __future__ import annotations

from dataclasses import dataclass, field

from fibers import _wire
from fibers._errors import SerializationError, UnexpectedFlowEndException
from fibers._flow_logic import FlowInfo
from fibers._identity import Party
from fibers._messages import Confirm, Data, End, ErrorEnd, Reject, SessionBody


@dataclass(slots=True, eq=False)
class FlowSession:
    """The state of one session as seen by one of its two flows.

    A session is named by ``(initiator party, session_id)``; ``we_initiated`` says which side this
    is. ``owner_index`` is the index, within its flow run, of the flow that owns the session (the
    initiating flow that opened it, or the responder it was opened for).
    """

    peer: Party
    session_id: int
    we_initiated: bool
    owner_index: int
    # Invariant: next_send_seq is the number the next message we send in this session carries.
    next_send_seq: int = 1
    # Invariant: next_recv_seq is the number of the next message from the peer we may process;
    # messages numbered lower were processed already and are dropped as duplicates.
    next_recv_seq: int = 0
    # Payloads received and not yet consumed by the flow, with their sequence numbers.
    # A list, not a deque: it holds a message or two, and an empty deque costs 600 bytes in
    # every one of possibly 100,000 parked sessions.
    inbound: list[tuple[int, bytes]] = field(default_factory=list)
    # Messages that arrived ahead of their turn, by number; None until the first one does.
    out_of_order: dict[int, SessionBody] | None = None
    peer_info: FlowInfo | None = None
    peer_error: BaseException | None = None
    peer_ended: bool = False
    rejected: str | None = None
    closed: bool = False

    def routing_key(self, our_name: str) -> tuple[str, int, bool]:
        """The key the node routes this session's inbound messages by."""
        initiator = our_name if self.we_initiated else self.peer.name
        return (initiator, self.session_id, self.we_initiated)

    def inbox_key(self) -> tuple[str, int, bool]:
        """How stored messages from the peer in this session are keyed: (peer name, session id,
        direction of those messages, i.e. whether they go to the initiator)."""
        return (self.peer.name, self.session_id, self.we_initiated)

    def apply(self, seq: int, body: SessionBody) -> None:
        """Record the effect of the peer's message number ``seq`` (processed in order)."""
        if isinstance(body, Data):
            self.inbound.append((seq, body.payload))
        elif isinstance(body, Confirm):
            self.peer_info = FlowInfo(body.flow_version, body.app_name)
        elif isinstance(body, Reject):
            self.rejected = body.message
        elif isinstance(body, End):
            self.peer_ended = True
        elif isinstance(body, ErrorEnd):
            self.peer_ended = True
            self.peer_error = _peer_exception(self.peer, body)

    def take_seq(self) -> int:
        """The number for the next message we send, advancing the counter."""
        seq = self.next_send_seq
        self.next_send_seq += 1
        return seq


def _peer_exception(peer: Party, body: ErrorEnd) -> BaseException:
    """What a flow raises at its next receive when ``peer`` ended with ``body``: the peer's
    FlowException itself, or a generic end that leaks nothing."""
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
