"""Frame snapshots: a suspended flow's ``@suspendable`` frames and their locals, as stored.

Each local is its own checkpoint pickle (``fibers._checkpoint.dumps``), an ``Unserialisable``
stand-in, or a reference to a content-addressed value stored once per flow (``values``
database). ``capture_frames`` encodes them at every suspension (the hot path),
``encode_snapshots``/``decode_snapshots`` give the bytes a step record carries, and
``describe_local`` shows them for ``flow inspect``. Where these bytes are stored:
docs/checkpoint-format.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import io
import pickle
import reprlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Final

from fibers._checkpoint import (
    IN_MEMORY_IO,
    NEVER_CHECKPOINTED,
    PROTOCOL,
    TAG_PICKLE,
    CheckpointError,
    CheckpointPickler,
    TokenContext,
    dumps,
    loads,
    qualified_type_name,
)

__all__ = [
    "VALUE_THRESHOLD",
    "FrameSnapshot",
    "SnapshotCache",
    "SnapshotValues",
    "Unserialisable",
    "capture_frames",
    "code_fingerprint",
    "decode_snapshots",
    "describe_local",
    "describe_value",
    "encode_snapshots",
    "value_digest",
    "value_of_ref",
]

# A frame snapshot's local that is a reference to a content-addressed value (stored once per
# flow in the ``values`` database, docs/checkpoint-format.md): the tag, then the 32-byte digest.
_TAG_VALUE: Final = b"\x03"
_DIGEST_SIZE: Final = 32
# Pickles of frozen values from this size on are stored once by content and referenced. Measured
# with benchmarks/storage_probe.py (``value_costs``; docs/checkpoint-format.md gives figures):
# from 1 KB, carrying the value inline in each step record costs about as much per step as
# hashing it and giving it a record of its own does once, so a value held for two steps or more
# repays it (and step records stop repeating it on disk); at 512 B that takes 4 to 10 steps,
# and a reference also costs a read at inspection.
VALUE_THRESHOLD: Final = 1024
_REPR_LIMIT: Final = 200
_SNAPSHOT_FORMAT: Final = 1


@dataclass(frozen=True)
class Unserialisable:
    """Stands in for a local that could not be checkpointed: its type and (truncated) repr."""

    type_name: str
    repr: str


@dataclass(frozen=True)
class FrameSnapshot:
    """One ``@suspendable`` frame at a suspension point; each local is its ``dumps`` bytes or
    an ``Unserialisable``."""

    module: str
    qualname: str
    filename: str
    line: int
    code_fingerprint: str
    locals: dict[str, bytes | Unserialisable]


SnapshotCache = dict[int, tuple[object, "bytes | Unserialisable"]]

SnapshotValues = list[tuple[bytes, bytes]]
"""Content-addressed values a snapshot references: (digest, checkpoint pickle)."""


def capture_frames(
    frames: Sequence[FrameType],
    tokens: TokenContext,
    summarise: Callable[[object], Unserialisable | None] | None = None,
    cache: SnapshotCache | None = None,
    *,
    values: SnapshotValues | None = None,
    stored: set[bytes] | None = None,
) -> list[FrameSnapshot]:
    """Snapshot ``frames`` (outermost first). Never raises for a local that cannot be encoded:
    it is kept as ``Unserialisable``. ``summarise(value)``, when given and not None for a
    value, is stored instead of pickling it (the engine uses it for the flow objects
    themselves, which the checkpoint's start record and journal already describe).

    A value held by several frames is pickled once. ``cache`` (kept by the caller between
    snapshots of one flow) also remembers the bytes of frozen dataclass instances, which flows
    carry from suspension to suspension (transactions, states), so they are pickled once per
    flow rather than once per suspension; it holds the values themselves, so ids stay valid,
    and only values nothing in which can change (not a frozen dataclass holding a list).

    ``values``, when given, turns content addressing on: a frozen dataclass instance, ``bytes``
    or ``str`` local whose pickle is ``VALUE_THRESHOLD`` bytes or more is kept as a reference
    (``value_of_ref`` reads its digest) and its (digest, pickle) is appended to ``values``,
    unless its digest is in ``stored`` (already written for this flow: neither appended nor,
    when ``cache`` knows the value, pickled again)."""
    encoder = _LocalEncoder(tokens, summarise, cache, values, stored)
    return [
        FrameSnapshot(
            module=str(frame.f_globals.get("__name__", "?")),
            qualname=frame.f_code.co_qualname,
            filename=frame.f_code.co_filename,
            line=frame.f_lineno,
            code_fingerprint=code_fingerprint(frame.f_code),
            locals={name: encoder.encode(value) for name, value in frame.f_locals.items()},
        )
        for frame in frames
    ]


class _LocalEncoder:
    """Encodes locals one by one, each as independent ``dumps`` bytes.

    On the hot path of every suspension: one C pickler is reused for all locals of all frames
    (``clear_memo`` keeps each pickle self-contained) and writes into a list instead of a
    rewound BytesIO; only values the C pickler rejects take the dill path.
    """

    def __init__(
        self,
        tokens: TokenContext,
        summarise: Callable[[object], Unserialisable | None] | None = None,
        cache: SnapshotCache | None = None,
        values: SnapshotValues | None = None,
        stored: set[bytes] | None = None,
    ) -> None:
        self._tokens = tokens
        self._summarise = summarise
        self._seen: SnapshotCache = {}  # this snapshot: a value shared by frames once
        self._kept = cache  # across snapshots: frozen values only
        self._values = values
        self._stored = stored if stored is not None else set()
        self._chunks: list[bytes] = [TAG_PICKLE]
        self._pickler = CheckpointPickler(_ListWriter(self._chunks), tokens)

    def encode(self, value: object) -> bytes | Unserialisable:
        key = id(value)
        hit = self._seen.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        kept = self._kept
        hit = kept.get(key) if kept is not None else None
        if hit is not None and hit[0] is value and self._usable(hit[1]):
            self._seen[key] = hit
            return hit[1]
        encoded = self._encode(value)
        large = type(encoded) is bytes and len(encoded) >= VALUE_THRESHOLD
        # Large bytes and str are frozen values too; small ones are not worth remembering.
        frozen = _is_frozen_dataclass(value) or (large and type(value) in _FROZEN_SCALARS)
        if self._values is not None and frozen and large:
            assert type(encoded) is bytes
            digest = value_digest(encoded)
            if digest not in self._stored:
                self._values.append((digest, encoded))
            encoded = _TAG_VALUE + digest
        self._seen[key] = (value, encoded)
        # Frozen is no promise about what a value holds (a frozen dataclass may hold a list
        # the flow appends to): only a value nothing in which can change is kept by id.
        if kept is not None and frozen and (type(value) in _FROZEN_SCALARS
                                            or _deeply_immutable(value, 0)):
            if len(kept) >= _KEPT_LIMIT:
                kept.clear()
            kept[key] = (value, encoded)
        return encoded

    def _usable(self, encoded: bytes | Unserialisable) -> bool:
        """Whether what the cache kept may stand for the value in this snapshot: a reference
        only when content addressing is on and its value is already stored for this flow (else
        the value is pickled again, so that this snapshot's ``values`` carry it), inline bytes
        only when they are below the threshold or content addressing is off."""
        if type(encoded) is not bytes:
            return True
        if encoded[:1] == _TAG_VALUE:
            return self._values is not None and encoded[1:] in self._stored
        return self._values is None or len(encoded) < VALUE_THRESHOLD

    def _encode(self, value: object) -> bytes | Unserialisable:
        if self._summarise is not None:
            summary = self._summarise(value)
            if summary is not None:
                return summary
        chunks = self._chunks
        del chunks[1:]
        try:
            self._pickler.dump(value)
            return b"".join(chunks)
        except Exception:
            pass
        finally:
            self._pickler.clear_memo()
        try:
            if isinstance(value, IN_MEMORY_IO) or not isinstance(value, NEVER_CHECKPOINTED):
                return dumps(value, self._tokens)
        except Exception:
            pass
        return Unserialisable(qualified_type_name(value), _safe_repr(value))


_KEPT_LIMIT = 64
_FROZEN_SCALARS: Final = (bytes, str)


def value_digest(pickled: bytes) -> bytes:
    """The content address of a value's checkpoint pickle (BLAKE2b, 32 bytes)."""
    return hashlib.blake2b(pickled, digest_size=_DIGEST_SIZE).digest()


def value_of_ref(local: bytes) -> bytes | None:
    """The digest a snapshot local refers to, or None when it holds its pickle inline."""
    if local[:1] == _TAG_VALUE and len(local) == 1 + _DIGEST_SIZE:
        return local[1:]
    return None


def _is_frozen_dataclass(value: object) -> bool:
    params = getattr(type(value), "__dataclass_params__", None)
    return bool(params is not None and params.frozen)


# What a frozen value may hold to be kept by id across snapshots: builtin scalars (their exact
# types: a subclass may carry attributes that change), and these immutable kinds.
_IMMUTABLE_SCALARS: Final = frozenset({str, bytes, int, float, complex, bool, type(None)})
_IMMUTABLE_KINDS: Final = (enum.Enum, datetime.date, datetime.time, datetime.timedelta,
                           decimal.Decimal, uuid.UUID)
_IMMUTABLE_DEPTH: Final = 32


def _deeply_immutable(value: object, depth: int) -> bool:
    """Whether nothing reachable from ``value`` can change: immutable scalars, and tuples,
    frozensets and frozen dataclass instances of them (walked once, when a value is first
    kept; deeper than ``_IMMUTABLE_DEPTH`` counts as mutable)."""
    kind = type(value)
    if kind in _IMMUTABLE_SCALARS or isinstance(value, _IMMUTABLE_KINDS):
        return True
    if depth >= _IMMUTABLE_DEPTH:
        return False
    if kind is tuple or kind is frozenset:
        return all(_deeply_immutable(item, depth + 1)
                   for item in value)  # type: ignore[attr-defined]
    if _is_frozen_dataclass(value):
        return all(_deeply_immutable(getattr(value, f.name, None), depth + 1)
                   for f in dataclasses.fields(value))  # type: ignore[arg-type]
    return False


class _ListWriter:
    __slots__ = ("write",)

    def __init__(self, chunks: list[bytes]) -> None:
        self.write = chunks.append


@functools.lru_cache(maxsize=4096)
def code_fingerprint(code: CodeType) -> str:
    """A short stable hash of what ``code`` does: bytecode, constants (nested code objects
    included), names and local variable names; not its filename or line numbers.

    Informational: moving code or adding comments keeps it, any change to statements (even a
    log line) changes it. The engine decides compatibility by qualnames and journal replay.
    """
    return hashlib.sha256(repr(_canonical_code(code)).encode()).hexdigest()[:16]


def _canonical_code(code: CodeType) -> tuple[object, ...]:
    return (
        code.co_code,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        tuple(_canonical_const(const) for const in code.co_consts),
    )


def _canonical_const(const: object) -> object:
    if isinstance(const, CodeType):
        return ("code", _canonical_code(const))
    if isinstance(const, tuple):
        return ("tuple", tuple(_canonical_const(item) for item in const))
    if isinstance(const, frozenset):
        # Set iteration order depends on string hash randomisation; sort for stability.
        return ("frozenset", tuple(sorted((_canonical_const(i) for i in const), key=repr)))
    return (type(const).__name__, const)


def encode_snapshots(snapshots: Sequence[FrameSnapshot]) -> bytes:
    """Bytes for a list of snapshots (plain tuples; for authenticated local storage only)."""
    rows = tuple(
        (
            s.module,
            s.qualname,
            s.filename,
            s.line,
            s.code_fingerprint,
            tuple(
                (name, value) if isinstance(value, bytes) else (name, value.type_name, value.repr)
                for name, value in s.locals.items()
            ),
        )
        for s in snapshots
    )
    return pickle.dumps((_SNAPSHOT_FORMAT, rows), protocol=PROTOCOL)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"snapshot data refers to {module}.{name}")


def decode_snapshots(data: bytes) -> list[FrameSnapshot]:
    """The snapshots encoded by ``encode_snapshots``; ``CheckpointError`` if malformed."""
    try:
        version, rows = _PlainUnpickler(io.BytesIO(data)).load()
        if version != _SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {version!r}, expected {_SNAPSHOT_FORMAT}")
        return [_snapshot_from_row(row) for row in rows]
    except Exception as error:
        raise CheckpointError(
            f"malformed frame snapshot data: {type(error).__name__}: {error}"
        ) from error


def _snapshot_from_row(row: tuple[object, ...]) -> FrameSnapshot:
    module, qualname, filename, line, fingerprint, local_rows = row
    if not (
        isinstance(module, str)
        and isinstance(qualname, str)
        and isinstance(filename, str)
        and isinstance(line, int)
        and isinstance(fingerprint, str)
        and isinstance(local_rows, tuple)
    ):
        raise TypeError(f"bad frame row {row!r:.200}")
    local_values: dict[str, bytes | Unserialisable] = {}
    for local in local_rows:
        match local:
            case (str(name), bytes(value)):
                local_values[name] = value
            case (str(name), str(type_name), str(text)):
                local_values[name] = Unserialisable(type_name, text)
            case _:
                raise TypeError(f"bad local entry {local!r:.200}")
    return FrameSnapshot(module, qualname, filename, line, fingerprint, local_values)


def describe_local(
    value: bytes | Unserialisable,
    tokens: TokenContext,
    resolve: Callable[[bytes], bytes] | None = None,
) -> str:
    """A short repr of a snapshot local for ``flow inspect``; never raises. A reference to a
    content-addressed value is read with ``resolve(digest)`` (which raises ``CheckpointError``
    or ``CorruptRecordError`` naming the record when it is missing or fails its check)."""
    if isinstance(value, Unserialisable):
        return f"<unserialisable {value.type_name}: {value.repr}>"
    digest = value_of_ref(value)
    try:
        if digest is not None:
            if resolve is None:
                raise CheckpointError(f"no store to read the value {digest.hex()} from")
            value = resolve(digest)
        obj = loads(value, tokens)
    except Exception as error:  # CheckpointError, CorruptRecordError: named, contained
        return f"<unreadable: {error}>"
    return _safe_repr(obj)


_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = _REPR_LIMIT
_reprs.maxlist = _reprs.maxtuple = _reprs.maxset = _reprs.maxdict = 20


def describe_value(obj: object) -> str:
    """A short repr of a live value (as ``describe_local`` shows stored ones); never raises."""
    return _safe_repr(obj)


def _safe_repr(obj: object) -> str:
    try:
        text = _reprs.repr(obj)
    except Exception as error:
        return f"<repr of {qualified_type_name(obj)} failed: {type(error).__name__}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
