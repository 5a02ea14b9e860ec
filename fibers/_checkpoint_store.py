"""Where a node keeps its flows' checkpoints, and how a step's effects are written.

Databases (all values sealed with the node's HMAC, see ``Storage.seal``):

* ``flows``:        run id -> the flow object as it was started, plus how it was started
* ``flow_status``:  run id -> ("HOSPITALIZED", None, diagnosis) for parked flows only; a stored
                    flow without one is resumable (its progress and wait come back by replay)
* ``steps``:        run id + index of the step's first journal entry -> one step record: the
                    step's journal entries and the frame snapshot it suspended in (one seal)
* ``locals``:       run id -> the flow's locals captured outside its steps (hospital,
                    hibernation; ``fibers._locals``), overwritten by the next capture
* ``values``:       run id + BLAKE2b of a pickle -> a large frozen value snapshots reference
* ``outbox``:       message key -> frame sent but not yet acknowledged by its recipient
* ``inbox``:        message key -> frame received (and acknowledged) but not yet consumed
* ``dedup``:        sender + session id -> sessions opened towards this node, never started twice;
                    pruned once ended on both sides (``fibers._dedup`` says how growth is bounded)
* ``wake_routes``:  session routing key -> the run id of the flow it goes to: how a message for
                    a hibernated flow finds it (``fibers._hibernation``)
* ``wake_waits``:   run id -> the deadline or event a flow waits for, for flows that wait for
                    one (``INDEX_MARKER`` in ``meta`` says the index is kept); both are
                    read and written by ``fibers._wake_index``

A message key is ``peer name, 0, session id (8 bytes), direction (1 byte), seq (4 bytes)``, so
a prefix scan returns one session's messages in order. docs/checkpoint-format.md describes every
record, its encoding and sealing; tests/fibers/golden pins them byte for byte.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fibers import _dedup as dedup
from fibers import _wire
from fibers._checkpoint import CheckpointError, TokenContext, dumps, loads
from fibers._flow_logic import FlowLogic, StateMachineRunId
from fibers._frame_snapshots import (
    SnapshotCache,
    SnapshotValues,
    Unserialisable,
    capture_frames,
    encode_snapshots,
    value_digest,
)
from fibers._identity import Party
from fibers._journal import JournalEntry, Snapshot
from fibers._locals import CapturedLocals, decode_locals, encode_locals
from fibers._messages import AckedSessionMessage, ExistingSessionMessage, encode_message
from fibers._step_record import decode_step, encode_step
from fibers._storage import CorruptRecordError, journal_key
from fibers._storage_api import Storage, Txn
from fibers._wake_index import NO_WAIT, IndexWrite, Wait, WakeIndex

if TYPE_CHECKING:
    from fibers._stack import FlowStack

DATABASES = ("flows", "flow_status", "steps", "locals", "values", "outbox", "inbox", "dedup",
             "wake_routes", "wake_waits")
_SESSION = struct.Struct(">QB")
_SEQ = struct.Struct(">I")
log = logging.getLogger("fibers.node")


def message_key(peer: str, session_id: int, to_initiator: bool, seq: int) -> bytes:
    """The outbox/inbox key of one session message exchanged with ``peer``."""
    name = _PEER_PREFIXES.get(peer)
    if name is None:
        name = _peer_prefix(peer)
    return name + _MESSAGE.pack(session_id, to_initiator, seq)


def session_prefix(peer: str, session_id: int, to_initiator: bool) -> bytes:
    """The key prefix of one direction of one session with ``peer``."""
    name = _PEER_PREFIXES.get(peer)
    if name is None:
        name = _peer_prefix(peer)
    return name + _SESSION.pack(session_id, to_initiator)


_PEER_PREFIXES: dict[str, bytes] = {}
_MESSAGE = struct.Struct(">QBI")


def _peer_prefix(peer: str) -> bytes:
    """``peer`` as the start of a message key (UTF-8, then a zero byte), kept for reuse: keys
    are made for a few peers many times per step. The cache is bounded by clearing it."""
    if len(_PEER_PREFIXES) >= 4096:
        _PEER_PREFIXES.clear()
    prefix = _PEER_PREFIXES[peer] = peer.encode() + b"\0"
    return prefix


def split_message_key(key: bytes) -> tuple[str, int, bool, int]:
    """The (peer, session id, direction, seq) a message key was made from."""
    name, _, rest = key.partition(b"\0")
    session_id, direction = _SESSION.unpack_from(rest)
    (seq,) = _SEQ.unpack_from(rest, _SESSION.size)
    return name.decode(), session_id, bool(direction), seq


@dataclass(frozen=True, slots=True)
class StartRecord:
    """How a flow was started: by this node, or as the responder to a session init."""

    flow_blob: bytes
    flow_class: str
    # For responders: the initiator, its session id and the FlowInfo it announced.
    peer: Party | None = None
    session_id: int = 0
    peer_version: int = 0
    peer_app: str = ""
    confirm_version: int = 0

    def encode(self) -> bytes:
        """The stored bytes (wire codec: plain values and a Party)."""
        return _wire.encode(tuple(getattr(self, name) for name in _START_FIELDS))

    @classmethod
    def decode(cls, data: bytes) -> StartRecord:
        """A start record from ``encode``'s bytes."""
        values = _wire.decode(data)
        if not isinstance(values, tuple) or len(values) != len(_START_FIELDS):
            raise ValueError("the stored start record has the wrong shape")
        return cls(*values)


_START_FIELDS = ("flow_blob", "flow_class", "peer", "session_id", "peer_version", "peer_app",
                 "confirm_version")


@dataclass(slots=True)
class StoredFlow:
    """A flow read back from storage, or the reason it could not be."""

    run_id: StateMachineRunId
    flow_class: str
    status: str = "RUNNABLE"
    start: StartRecord | None = None
    flow: FlowLogic[Any] | None = None
    journal: list[JournalEntry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    diagnosis: str | None = None
    # What its wake index record says it waits for (see ``IndexWrite``); None when that
    # record is unreadable.
    wait: Wait | None = NO_WAIT


class CheckpointStore:
    """Reads and writes flow checkpoints in a node's storage (scheduler thread only)."""

    def __init__(self, storage: Storage, tokens: TokenContext) -> None:
        self.storage = storage
        self.tokens = tokens
        self.wake_index = WakeIndex(storage)
        for name in (*DATABASES, "meta"):
            storage.prepare(name)  # open outside any write group (LMDB needs its own txn for it)

    # ----- capture (in the flow's greenlet, at a suspension) ---------------------------------

    def snapshot(
        self, stack: FlowStack, waiting: str, cache: SnapshotCache | None,
        values: SnapshotValues | None = None, stored: set[bytes] | None = None,
    ) -> Snapshot:
        """The snapshot of a flow suspended with ``stack`` (see ``fibers._stack``): its
        ``@suspendable`` call chain, lines and wait, and their locals when ``values`` is given
        (else only what verifying a restored flow's place needs). The large frozen values
        among the locals are referenced and appended to ``values`` unless in ``stored`` (see
        ``capture_frames``); ``cache`` is the flow's own."""
        if values is None:
            return Snapshot(stack.call_chain, stack.lines, waiting, b"")
        return Snapshot(
            call_chain=stack.call_chain,
            lines=stack.lines,
            waiting=waiting,
            frames=encode_snapshots(capture_frames(stack.suspendable, self.tokens,
                                                   _summarise_flow, cache,
                                                   values=values, stored=stored)),
        )

    def start_record(self, flow: FlowLogic[Any], flow_class: str, **responder: Any) -> bytes:
        """The encoded start record of ``flow``, taken before its ``call`` runs."""
        return StartRecord(dumps(flow, self.tokens), flow_class, **responder).encode()

    # ----- writing (inside a group commit) -------------------------------------------------------

    def write_step(self, txn: Txn, step: StepWrite) -> None:
        """Write everything one step of one flow produced: its one step record (journal
        entries and snapshot, one seal), its outbox, the inbox records it consumed and the
        service writes made on its behalf."""
        s, run = self.storage, step.run_id.uuid.bytes
        if step.start_record is not None:
            s.put_sealed(txn, "flows", run, step.start_record)
        if step.finished:
            self._delete_flow(txn, run)
        elif step.journal or step.snapshot is not None:
            s.put_sealed(txn, "steps", journal_key(run, step.journal_start),
                         encode_step(step.journal_start, step.journal, step.snapshot))
            for digest, pickled in step.values:
                s.put_sealed(txn, "values", run + digest, pickled)
        for _, key, frame in step.outbox:
            s.put_sealed(txn, "outbox", key, frame)
        for key in step.consumed:
            s.delete(txn, "inbox", key)
        for prefix in step.inbox_prefixes_done:
            s.delete_prefix(txn, "inbox", prefix)
        if step.index is not None:
            self.wake_index.write(txn, run, step.index)
        for write in step.extra_writes:
            write(txn)

    def write_unit(self, txn: Txn, unit: _HasWrites) -> None:
        """Write a commit unit: first the received messages it keeps in the inbox (encoded
        here), then its write functions and steps in order."""
        if unit.inbox:
            s = self.storage
            for key, received in unit.inbox.items():
                # (Acks a message carried were for this node only: not stored.)
                s.put_sealed(txn, "inbox", message_key(*key), encode_message(
                    received.without_acks() if type(received) is AckedSessionMessage
                    else received))
        for write in unit.writes:
            if type(write) is StepWrite:
                self.write_step(txn, write)
            else:
                write(txn)  # type: ignore[operator]

    def _delete_flow(self, txn: Txn, run: bytes) -> None:
        s = self.storage
        s.delete(txn, "flows", run)
        s.delete(txn, "flow_status", run)
        s.delete(txn, "wake_waits", run)
        s.delete_prefix(txn, "steps", run)
        s.delete(txn, "locals", run)
        s.delete_prefix(txn, "values", run)

    def write_locals(self, txn: Txn, captured: CapturedLocals) -> None:
        """Store a flow's locals captured outside its steps (``locals`` record, replacing the
        one before) with the values they reference that it carries (``values`` records). A
        write function of the group commit: run it in a unit of the commit stage."""
        s, run = self.storage, captured.run_id.uuid.bytes
        s.put_sealed(txn, "locals", run, encode_locals(captured))
        for digest, pickled in captured.values:
            s.put_sealed(txn, "values", run + digest, pickled)

    def stored_locals(self, run_id: StateMachineRunId) -> tuple[int, Snapshot] | None:
        """The flow's stored ``locals`` record as (journal length, snapshot), or None; raises
        ``CorruptRecordError`` or ``ValueError`` naming it when it fails its check."""
        with self.storage.read() as txn:
            payload = self.storage.get_sealed(txn, "locals", run_id.uuid.bytes)
        return None if payload is None else decode_locals(payload)

    def stored_value(self, run_id: StateMachineRunId, digest: bytes) -> bytes:
        """The pickle of a content-addressed value of the flow; ``CheckpointError`` (or
        ``CorruptRecordError``) naming the record when it is missing or not what its key
        says."""
        key = run_id.uuid.bytes + digest
        with self.storage.read() as txn:
            pickled = self.storage.get_sealed(txn, "values", key)
        if pickled is None:
            raise CheckpointError(f"the value record {key.hex()} (database 'values') of flow "
                                  f"{run_id} is missing")
        if value_digest(pickled) != digest:
            raise CheckpointError(f"the value record {key.hex()} (database 'values') of flow "
                                  f"{run_id} does not hold the value its key names")
        return pickled

    def mark_hospitalized(self, txn: Txn, run_id: StateMachineRunId, diagnosis: str,
                          start_record: bytes | None = None) -> None:
        """Record that the flow is in the hospital (its checkpoint stays as it was); a flow
        parked in its very first step also gets its ``start_record``, so it stays retryable."""
        if start_record is not None:
            self.storage.put_sealed(txn, "flows", run_id.uuid.bytes, start_record)
        status = ("HOSPITALIZED", None, diagnosis)
        self.storage.put_sealed(txn, "flow_status", run_id.uuid.bytes, _wire.encode(status))

    def mark_running(self, txn: Txn, run_id: StateMachineRunId) -> None:
        """Forget that the flow was in the hospital (it runs again)."""
        self.storage.delete(txn, "flow_status", run_id.uuid.bytes)

    # ----- reading (at start) --------------------------------------------------------------------

    def load_flows(self) -> Iterator[StoredFlow]:
        """Every stored flow; a flow whose records fail their check carries a diagnosis instead
        of its objects (nothing of it is unpickled)."""
        s = self.storage
        with s.read() as txn:
            keys = [key for key, _ in s.prefix_items(txn, "flows", b"")]
        for key in keys:
            if len(key) != 16:  # not written by the engine: nothing to restore it as
                log.error("skipped a record in database 'flows' at key %s: not a run id",
                          key.hex())
                continue
            yield self.load_flow(StateMachineRunId(_uuid(key)))

    def load_flow(self, run_id: StateMachineRunId) -> StoredFlow:
        """One stored flow (see ``load_flows``)."""
        s, run = self.storage, run_id.uuid.bytes
        stored = StoredFlow(run_id, "?")
        try:
            with s.read() as txn:
                start_blob = s.get_sealed(txn, "flows", run)
                status_blob = s.get_sealed(txn, "flow_status", run)
                wait_blob = s.get(txn, "wake_waits", run)
                steps = [(k, s.unseal("steps", k, v)) for k, v in s.prefix_items(txn, "steps", run)]
                if not steps:
                    _refuse_legacy(s, txn, run)
            assert start_blob is not None
            start = StartRecord.decode(start_blob)
            stored.start, stored.flow_class = start, start.flow_class
            if status_blob is not None:
                stored.status = str(_wire.decode(status_blob)[0])  # type: ignore[index]
                if stored.status == "HOSPITALIZED":
                    stored.diagnosis = str(_wire.decode(status_blob)[2])  # type: ignore[index]
            flow = loads(start.flow_blob, self.tokens)
            if not isinstance(flow, FlowLogic):
                raise TypeError(f"the stored flow is a {type(flow).__qualname__}")
            stored.flow = flow
            stored.journal, stored.snapshot = _replay_steps(steps)
            if wait_blob is not None:
                stored.wait = self.wake_index.stored_wait(run, wait_blob)
        except Exception as exc:
            stored.flow = None
            stored.status = "HOSPITALIZED"
            stored.diagnosis = f"checkpoint unreadable: {type(exc).__name__}: {exc}"
        return stored

    def run_ids(self) -> tuple[list[StateMachineRunId], list[StateMachineRunId]]:
        """The run ids of every stored flow, and of those parked in the hospital, read from
        the keys only (no record is unsealed or decoded)."""
        s = self.storage
        with s.read() as txn:
            every = [StateMachineRunId(_uuid(k)) for k, _ in s.prefix_items(txn, "flows", b"")
                     if len(k) == 16]
            parked = [StateMachineRunId(_uuid(k))
                      for k, _ in s.prefix_items(txn, "flow_status", b"") if len(k) == 16]
        return every, parked

    def flow_class(self, run_id: StateMachineRunId) -> str | None:
        """The class name in a flow's start record (its flow object is not unpickled); None
        when it is missing or unreadable."""
        try:
            with self.storage.read() as txn:
                blob = self.storage.get_sealed(txn, "flows", run_id.uuid.bytes)
            return None if blob is None else StartRecord.decode(blob).flow_class
        except Exception:  # the flow's wake diagnoses it; a listing shows "?"
            return None

    def stored_from_start(self, run_id: StateMachineRunId, start_blob: bytes) -> StoredFlow:
        """A flow whose first step never committed, rebuilt from its start record."""
        start = StartRecord.decode(start_blob)
        flow = loads(start.flow_blob, self.tokens)
        assert isinstance(flow, FlowLogic)
        return StoredFlow(run_id, start.flow_class, start=start, flow=flow)

    def inbox(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Stored inbound frames under ``prefix``, in key order."""
        s = self.storage
        with s.read() as txn:
            return [(k, s.unseal("inbox", k, v)) for k, v in s.prefix_items(txn, "inbox", prefix)]

    def outbox(self, peer: str | None = None) -> list[tuple[bytes, bytes | CorruptRecordError]]:
        """Every unacknowledged outbound frame (to ``peer`` only, when given), in key order; a
        record that fails its check comes as its ``CorruptRecordError`` (so one bad record
        does not hide the others)."""
        s = self.storage
        prefix = b"" if peer is None else _PEER_PREFIXES.get(peer) or _peer_prefix(peer)
        with s.read() as txn:
            return [(k, _unseal_or_error(s, "outbox", k, v))
                    for k, v in s.prefix_items(txn, "outbox", prefix)]

    def outbox_records(self, keys: list[bytes]) -> list[tuple[bytes, bytes | None]]:
        """The outbound frames at ``keys`` (None where acknowledged meanwhile, or unreadable:
        a corrupt record is reported at the next restart's re-send)."""
        s, found = self.storage, []
        with s.read() as txn:
            for key in keys:
                try:
                    found.append((key, s.get_sealed(txn, "outbox", key)))
                except CorruptRecordError:
                    found.append((key, None))
        return found

    def seen_init(self, sender: str, session_id: int) -> bool:
        """Whether a session init from ``sender`` with this id was already accepted."""
        with self.storage.read() as txn:
            return dedup.seen(self.storage, txn, session_prefix(sender, session_id, False))


class _HasWrites(Protocol):
    @property
    def writes(self) -> Sequence[Callable[[Txn], object] | StepWrite]: ...
    @property
    def inbox(self) -> Mapping[tuple[str, int, bool, int], ExistingSessionMessage] | None: ...


@dataclass(slots=True)
class StepWrite:
    """What one step of one flow writes, captured when the step ended."""

    run_id: StateMachineRunId
    finished: bool
    journal_start: int
    journal: list[JournalEntry]
    snapshot: Snapshot | None
    outbox: list[tuple[Party, bytes, bytes]]  # (recipient, outbox key, frame)
    consumed: list[bytes]
    inbox_prefixes_done: list[bytes]
    start_record: bytes | None = None
    extra_writes: list[Callable[[Txn], object]] = field(default_factory=list)
    # Content-addressed values the snapshot references, new for this flow: (digest, pickle).
    values: Sequence[tuple[bytes, bytes]] = ()
    index: IndexWrite | None = None


def _unseal_or_error(
    s: Storage, db_name: str, key: bytes, blob: bytes
) -> bytes | CorruptRecordError:
    try:
        return s.unseal(db_name, key, blob)
    except CorruptRecordError as exc:
        return exc


FLOW_SUMMARY = "<the flow "
"""How a flow object among a snapshot's locals is summarised (``_summarise_flow``)."""


def _summarise_flow(value: object) -> Unserialisable | None:
    """Flow objects in frames (``self``) are shown by their fields' reprs, not pickled: the
    start record holds the flow and replay rebuilds it, so pickling it again at every
    suspension would only cost time (a third of a snapshot)."""
    if not isinstance(value, FlowLogic):
        return None
    fields = ", ".join(name for name in vars(value) if not name.startswith("_"))
    return Unserialisable(flow_type_name(value),
                          f"{FLOW_SUMMARY}{type(value).__qualname__} (fields: {fields})>")


def flow_type_name(flow: FlowLogic[Any]) -> str:
    """The type name a flow's summary among snapshot locals carries (``_summarise_flow``):
    inspection finds the live flow object by it."""
    kind = type(flow)
    return f"{kind.__module__}.{kind.__qualname__}"


def _refuse_legacy(s: Storage, txn: Txn, run: bytes) -> None:
    """A flow checkpointed before step records (its journal and snapshot in the databases
    ``journal`` and ``snapshots``) must not be replayed as if it had done nothing yet: it
    would run its requests again. It is refused (and parked) instead."""
    if s.get(txn, "snapshots", run) is not None or next(
            s.prefix_items(txn, "journal", run), None) is not None:
        raise ValueError(
            "its journal and snapshot are in the format before step records (databases "
            "'journal' and 'snapshots', see docs/checkpoint-format.md); this release does not "
            "replay them: finish the flow with the release that wrote it, or kill it")


def _replay_steps(
    steps: list[tuple[bytes, bytes]],
) -> tuple[list[JournalEntry], Snapshot | None]:
    """A flow's journal and latest snapshot from its step records in key order. Each record
    must start where the previous ones ended (its key says where): a missing or misplaced
    record is refused, naming its key."""
    journal: list[JournalEntry] = []
    snapshot: Snapshot | None = None
    for key, payload in steps:
        start, entries, step_snapshot = decode_step(payload)
        (keyed,) = _SEQ.unpack_from(key, 16)
        if start != keyed or start != len(journal):
            raise ValueError(
                f"step record at key {key.hex()} starts at journal entry {start}, but "
                f"{len(journal)} entries precede it: a step record is missing or misplaced")
        journal.extend(entries)
        if step_snapshot is not None:
            snapshot = step_snapshot
    return journal, snapshot


def _uuid(key: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=key)

