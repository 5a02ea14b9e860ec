"""Session messages exchanged between nodes (DESIGN.md section 4), and their frame codec.

Routing: a session is named by the initiator's party and the id the initiator chose for it.
``InitialSessionMessage`` opens it; every later message is an ``ExistingSessionMessage`` carrying
that id and the direction, so neither side needs the other's id to address it.

Ordering and exactly-once: each side numbers the messages it sends in a session from 0 (the
initiator's init is its number 0, the responder's confirm or reject is its number 0). A receiver
processes number n only after n - 1 and drops numbers it has already processed, so a message
re-sent after a restart is processed once. It buffers at most ``REORDER_WINDOW`` messages ahead
of its turn (``fibers._inbound``); later ones are dropped unacknowledged and sent again.

Frames: envelopes are fixed-schema msgspec structs encoded as msgpack arrays whose first element
is the message kind; decoding validates every field's type in C and builds nothing else.
Payloads travel inside as bytes already encoded by the whitelisted wire codec
(``fibers._wire``), so a payload this node cannot decode fails the receiving flow at its
``receive`` rather than the node's message handling.

Decoding also checks every field's range and length (``SessionId``, ``Seq``, ``ClassName``...):
a frame a peer could send but this node could not store or route (a negative session id, a
sequence number that does not fit the 32-bit key, a megabyte class name, invalid UTF-8) is a
``SerializationError`` at decode, before any of it reaches routing or storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final

import msgspec

from fibers._errors import SerializationError
from fibers._wire import MAX_MESSAGE_SIZE

SESSION_ID_LIMIT = 1 << 63
"""Session ids are in ``0 .. 2**63 - 1`` (``Node.new_session_id`` draws 63 random bits)."""
SEQ_LIMIT = 1 << 32
"""Sequence numbers are in ``0 .. 2**32 - 1``: the inbox and outbox keys hold them in 4 bytes."""

SessionId = Annotated[int, msgspec.Meta(ge=0, le=SESSION_ID_LIMIT - 1)]
Seq = Annotated[int, msgspec.Meta(ge=0, lt=SEQ_LIMIT)]
Version = Annotated[int, msgspec.Meta(ge=0, lt=1 << 31)]
ClassName = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
AppName = Annotated[str, msgspec.Meta(max_length=1024)]
Reason = Annotated[str, msgspec.Meta(max_length=64 * 1024)]


class InitialSessionMessage(msgspec.Struct, frozen=True, array_like=True, tag=0):
    """Open a session: run the responder registered for ``flow_class`` on the receiving node."""

    initiator_session_id: SessionId
    flow_class: ClassName
    flow_version: Version
    app_name: AppName
    first_payload: bytes | None


class Confirm(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """The responder started; ``flow_version`` and ``app_name`` describe what it runs."""

    initiated_session_id: SessionId
    flow_version: Version
    app_name: AppName


class Reject(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """The responder could not be started; ``message`` says why."""

    message: Reason


class Data(msgspec.Struct, frozen=True, array_like=True, tag=3):
    """One payload sent with ``send``."""

    payload: bytes


class ErrorEnd(msgspec.Struct, frozen=True, array_like=True, tag=4):
    """The sender's flow failed. ``exception`` is the encoded ``FlowException`` it failed with,
    or None when it failed with anything else (whose details are not leaked)."""

    exception: bytes | None


class End(msgspec.Struct, frozen=True, array_like=True, tag=5):
    """The sender's side of the session ended normally."""


SessionBody = Confirm | Reject | Data | ErrorEnd | End


class ExistingSessionMessage(msgspec.Struct, frozen=True, array_like=True, tag=6):
    """A message in an open session, addressed by the initiator's session id and direction."""

    session_id: SessionId
    to_initiator: bool
    seq: Seq
    body: SessionBody


class Ack(msgspec.Struct, frozen=True, array_like=True, tag=7):
    """The recipient durably stored these messages, each named ``(session_id, to_initiator,
    seq)`` (``to_initiator`` being the direction of the acknowledged message): the sender may
    forget them. A commit's acknowledgements to one peer travel together: on the first
    message sent to it after the commit (``AckedSessionMessage``), else in one Ack."""

    entries: list[tuple[SessionId, bool, Seq]]


class AckedSessionMessage(ExistingSessionMessage, frozen=True, array_like=True, tag=8):
    """An ``ExistingSessionMessage`` that also carries acknowledgements, as an ``Ack`` lists
    them: the acks a node owes a peer after a commit ride on the first message it then sends
    that peer (``with_acks``) instead of costing a frame of their own. Only frames in flight
    carry them: the outbox keeps, and redelivery re-sends, the message without them."""

    acks: list[tuple[SessionId, bool, Seq]]

    def without_acks(self) -> ExistingSessionMessage:
        """The message it carries, as it is stored."""
        return ExistingSessionMessage(self.session_id, self.to_initiator, self.seq, self.body)


SessionMessage = InitialSessionMessage | ExistingSessionMessage
Frame = InitialSessionMessage | ExistingSessionMessage | AckedSessionMessage | Ack

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


encode_message: Final[Callable[[Frame], bytes]] = _encoder.encode
"""The frame bytes of a ``Frame`` (the encoder's own method: a frame costs no Python call)."""


# An encoded ExistingSessionMessage starts with a MessagePack fixarray of 5 (its tag and four
# fields) and its tag; an AckedSessionMessage is the same array with its tag and one more
# element, the acks, at the end.
_PLAIN_HEAD: Final = b"\x95\x06"
_ACKED_HEAD: Final = b"\x96\x08"


def with_acks(frame: bytes, entries: list[tuple[int, bool, int]]) -> bytes | None:
    """The frame of ``frame``'s ``ExistingSessionMessage`` carrying ``entries`` too (the
    encoding of the ``AckedSessionMessage``, made without decoding ``frame``); None when
    ``frame`` is another kind of message or the result would be oversize (send an ``Ack``)."""
    if not frame.startswith(_PLAIN_HEAD):
        return None
    acked = b"".join((_ACKED_HEAD, frame[2:], _encoder.encode(entries)))
    return acked if len(acked) <= MAX_MESSAGE_SIZE else None


def decode_message(frame: bytes) -> Frame:
    """The session message in ``frame``; ``SerializationError`` naming the problem when the frame
    is oversize, is not a well-formed session message, or has a field out of its range."""
    if len(frame) > MAX_MESSAGE_SIZE:
        raise SerializationError(
            f"malformed frame: {len(frame)} bytes is over the {MAX_MESSAGE_SIZE}-byte limit"
        )
    try:
        message: Frame = _decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise SerializationError(f"malformed frame: not a session message ({exc})") from None
    return message
