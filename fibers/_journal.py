"""Journal entries and frame-snapshot summaries: what a checkpoint says a flow did.

A journal entry is a tuple whose first element names the request, followed by the request's
identifying fields and then its recorded result. Replay compares the identifying prefix with
what the code does now and answers with the recorded result:

=====================================  ===============================================
``("open", owner, peer, session_id)``  a session opened by this flow (the id was random)
``("send", owner, peer, digest)``      a payload sent (its SHA-256 prefix, for checking)
``("recv", owner, peer, data, seq)``   a payload received (encoded bytes, its number)
``("recv_end", owner, peer, error)``   a receive that raised: the counterparty ended/failed
``("info", owner, peer, ver, app)``    the counterparty's FlowInfo
``("now", datetime)``                  the clock read by ``now()``
``("sleep", deadline)``                the deadline a ``sleep`` waits for
``("sub_flow", index, class)``         a sub-flow entered
``("service", op, args, result)``       a journaled service call: its operation, the digest
                                       of its arguments and its pickled result
``("random", count, bytes)``           random bytes drawn by the flow
``("event", key)``                     a wait for an event that had happened (re-checked)
=====================================  ===============================================

``owner`` is the index (within the run) of the flow owning the session, ``peer`` a party name.
Entries are encoded with the wire codec: plain values only, deterministic, no code on decode.

Replay is complete: a restored flow must make exactly the recorded requests, in order, and then
the checkpoint's pending request (the one its snapshot waits in). Ending, failing or making any
other request first parks it with a NondeterminismError naming the record, before anything it
produced can leave the node. The format, and the golden files pinning it, are described in
docs/checkpoint-format.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fibers import _wire
from fibers._errors import FlowException, SerializationError, UnexpectedFlowEndException
from fibers._flow_logic import FlowInfo
from fibers._session import FlowSession

JournalEntry = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a suspended flow stands: its ``@suspendable`` call chain (qualnames, outermost
    first), their current lines, what it waits for, and the encoded frame snapshots (locals)."""

    call_chain: tuple[str, ...]
    lines: tuple[int, ...]
    waiting: str
    frames: bytes


def digest(payload: bytes) -> bytes:
    """A short fingerprint of a sent payload, to check a replayed send against."""
    return hashlib.sha256(payload).digest()[:8]


def digest_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """A fingerprint of a journaled call's arguments, the same in every process: values the
    wire codec encodes count by their encoding (deterministic, see ``fibers._wire``); others
    (services, callables, unregistered classes) by their type's or function's qualified name,
    never by ``repr`` (which may hold a memory address)."""
    canonical = (tuple(_canonical(a) for a in args),
                 tuple(sorted((k, _canonical(v)) for k, v in kwargs.items())))
    return hashlib.sha256(_wire.encode(canonical)).digest()[:8]


def _canonical(value: object) -> bytes:
    try:
        return b"v" + _wire.encode(value)
    except SerializationError:
        pass
    if isinstance(value, (tuple, list)):
        return b"s" + _wire.encode(tuple(_canonical(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return b"u" + _wire.encode(tuple(sorted(_canonical(v) for v in value)))
    if isinstance(value, dict):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        return b"m" + _wire.encode(tuple(items))
    named = value if isinstance(value, type) or callable(value) else type(value)
    module = getattr(named, "__module__", None) or type(named).__module__
    qualname = getattr(named, "__qualname__", None) or type(named).__qualname__
    return b"t" + f"{module}:{qualname}".encode()


def encode_error(error: BaseException) -> bytes:
    """A counterparty error as recorded in the journal: the exception itself when it can cross
    the wire (FlowExceptions), else an UnexpectedFlowEndException with its message."""
    if isinstance(error, FlowException):
        try:
            return _wire.encode(error)
        except SerializationError:
            pass
    return _wire.encode(UnexpectedFlowEndException(str(error)))


def decode_error(data: bytes) -> BaseException:
    """The exception recorded by ``encode_error``."""
    error = _wire.decode(data)
    if not isinstance(error, BaseException):
        raise SerializationError(f"not a recorded error: {type(error).__qualname__}")
    return error


def replay_payload(entry: JournalEntry) -> bytes:
    """The payload of a ``recv`` entry."""
    return _typed(entry, 3, bytes)


def replay_seq(entry: JournalEntry) -> int:
    """The sequence number of a ``recv`` entry."""
    return _typed(entry, 4, int)


def replay_random(entry: JournalEntry) -> bytes:
    """The bytes of a ``random`` entry."""
    return _typed(entry, 2, bytes)


def replay_int(entry: JournalEntry) -> int:
    """The session id of an ``open`` entry."""
    return _typed(entry, 3, int)


def replay_datetime(entry: JournalEntry) -> datetime:
    """The time in a ``now`` or ``sleep`` entry."""
    return _typed(entry, 1, datetime)


def replay_flow_info(entry: JournalEntry) -> FlowInfo:
    """The FlowInfo in an ``info`` entry."""
    return FlowInfo(_typed(entry, 3, int), _typed(entry, 4, str))


T = TypeVar("T")


def _typed(entry: JournalEntry, index: int, kind: type[T]) -> T:
    value = entry[index] if len(entry) > index else None
    if not isinstance(value, kind):
        raise SerializationError(f"journal entry {entry[0]!r} has no {kind.__name__} at {index}")
    return value


def describe_entry(entry: tuple[Any, ...]) -> str:
    """A journal entry (or the request key the code made) in words, for NondeterminismError."""
    kind, rest = entry[0], entry[1:]
    if kind in ("open", "send", "recv", "recv_end", "info") and len(rest) >= 2:
        verb = {"open": "open a session with", "send": "send to", "recv": "receive from",
                "recv_end": "see the end of the session with",
                "info": "ask for the flow info of"}[kind]
        return f"{verb} {rest[1]} (session of flow #{rest[0]})"
    if kind == "sub_flow" and len(rest) >= 2:
        return f"start sub-flow #{rest[0]} {rest[1]}"
    if kind == "service" and rest:
        arguments = f" with arguments #{rest[1].hex()}" if len(rest) > 1 and isinstance(
            rest[1], bytes) else ""
        return f"call the service operation {rest[0]}{arguments}"
    if kind == "event" and rest:
        return f"wait for the event {rest[0]}"
    return {"now": "read the clock", "sleep": "sleep", "random": "draw random bytes"}.get(
        kind, repr(kind))


def describe_wait(wait: object) -> str:
    """What a suspended flow waits for, in words."""
    if isinstance(wait, FlowSession):
        return f"a message from {wait.peer}"
    if isinstance(wait, datetime):
        return f"a timer until {wait.isoformat()}"
    key = getattr(wait, "key", None)
    if isinstance(key, str):
        return f"the event {key}"
    return "nothing"
