"""The checkpoint codec: node-local pickles with service tokens, and frame snapshots.

Only ever applied to the node's own HMAC-authenticated storage (``fibers._storage``); network
data goes through the wire codec and never reaches an unpickler.

Encoding: the C ``pickle.Pickler`` (protocol 5) first, and only if it fails (lambdas, closures,
local classes...) the whole object again with ``dill`` (~40x slower). A one-byte tag in front says
which unpickler reads it back. Node services (``SerializeAsToken``) are never copied: they pickle
as a persistent id ``("svc", token)`` and load as the live instance registered under that token
in the restoring node's ``TokenContext``. Where these bytes are stored: docs/checkpoint-format.md.
"""

from __future__ import annotations

import _thread
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import io
import pickle
import reprlib
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import AsyncGeneratorType, CodeType, CoroutineType, FrameType, GeneratorType
from typing import IO, Final, Protocol

import dill

__all__ = [
    "VALUE_THRESHOLD",
    "CheckpointError",
    "FrameSnapshot",
    "SerializeAsToken",
    "SnapshotValues",
    "TokenContext",
    "Unserialisable",
    "capture_frames",
    "code_fingerprint",
    "decode_snapshots",
    "describe_local",
    "describe_value",
    "dumps",
    "encode_snapshots",
    "loads",
    "value_digest",
    "value_of_ref",
]

_PROTOCOL: Final = 5
_TAG_PICKLE: Final = b"\x01"
_TAG_DILL: Final = b"\x02"
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
_SERVICE: Final = "svc"
_REPR_LIMIT: Final = 200
_SNAPSHOT_FORMAT: Final = 1

# OS resources that dill would "successfully" pickle but that are meaningless (or harmful: dill
# re-opens a file by descriptor number) when loaded in another process or after a restart.
_RESOURCE_TYPES: Final = (io.IOBase, _thread.LockType, _thread.RLock)
_IN_MEMORY_IO: Final = (io.BytesIO, io.StringIO)
# Values neither pickler can encode (or that we refuse): skipping the dill attempt for them keeps
# a flow holding, say, a lock from paying ~20 µs per suspension.
_NEVER_CHECKPOINTED: Final = (
    *_RESOURCE_TYPES,
    socket.socket,
    FrameType,
    GeneratorType,
    CoroutineType,
    AsyncGeneratorType,
)


class CheckpointError(Exception):
    """A value could not be checkpointed or restored; the message names the value and cause."""


class SerializeAsToken:
    """Base class of node services: checkpoints refer to them by token instead of copying them.

    A service is a singleton per node, so the default token is the class's module-qualified
    name; override ``serialization_token`` if a node runs several instances of one class.
    """

    __slots__ = ()

    def serialization_token(self) -> str:
        """The name under which this service is registered in its node's ``TokenContext``."""
        return f"{type(self).__module__}:{type(self).__qualname__}"


class TokenContext:
    """The services of one node by token: what service references in checkpoints resolve to."""

    def __init__(self) -> None:
        self._services: dict[str, SerializeAsToken] = {}
        # Invariant: id(service) -> token for every registered service (kept alive by
        # _services, so ids are not reused); spares a serialization_token() call per pickle.
        self._tokens: dict[int, str] = {}

    def register(self, obj: SerializeAsToken) -> None:
        """Make ``obj`` the live instance for its token. Registering it again is a no-op; another
        instance under the same token is a ``CheckpointError``."""
        token = obj.serialization_token()
        current = self._services.setdefault(token, obj)
        if current is not obj:
            raise CheckpointError(
                f"service token {token!r} is already registered to another instance "
                f"({current!r}); give each instance its own serialization_token()"
            )
        self._tokens[id(obj)] = token

    def resolve(self, token: str) -> object:
        """The live service registered under ``token``; ``CheckpointError`` if there is none."""
        try:
            return self._services[token]
        except KeyError:
            raise CheckpointError(
                f"checkpoint refers to service {token!r}, which is not registered on this node; "
                "register it with TokenContext.register before restoring flows"
            ) from None

    def persistent_id(self, obj: SerializeAsToken) -> tuple[str, str]:
        """How a checkpoint refers to the registered service ``obj``."""
        token = self._tokens.get(id(obj))
        if token is None:
            # Resolving by token would silently substitute this node's service for another one.
            raise CheckpointError(
                f"{_type_name(obj)} {obj.serialization_token()!r} is not a service registered "
                "on this node, so a checkpoint cannot refer to it"
            )
        return (_SERVICE, token)

    def persistent_load(self, pid: object) -> object:
        """The live service a checkpoint's reference ``pid`` names."""
        if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _SERVICE):
            raise CheckpointError(f"unknown persistent id {pid!r} in checkpoint")
        token = pid[1]
        if not isinstance(token, str):
            raise CheckpointError(f"malformed service token {token!r} in checkpoint")
        return self.resolve(token)


class _Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Pickler(pickle.Pickler):
    def __init__(self, file: _Writer, tokens: TokenContext) -> None:
        super().__init__(file, protocol=_PROTOCOL)
        self._tokens = tokens

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, SerializeAsToken):
            return self._tokens.persistent_id(obj)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], tokens: TokenContext) -> None:
        super().__init__(file)
        self._tokens = tokens

    def persistent_load(self, pid: object) -> object:
        return self._tokens.persistent_load(pid)


class _DillPickler(dill.Pickler):  # type: ignore[misc]  # dill ships no type information
    def __init__(self, file: IO[bytes], tokens: TokenContext) -> None:
        # Explicit settings: dill.settings is process-global and other code may change it.
        # recurse=False keeps a function's module globals by reference (live on load).
        super().__init__(file, protocol=_PROTOCOL, byref=False, recurse=False, fmode=0)
        self._tokens = tokens

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, SerializeAsToken):
            return self._tokens.persistent_id(obj)
        if isinstance(obj, _RESOURCE_TYPES) and not isinstance(obj, _IN_MEMORY_IO):
            raise TypeError(f"cannot checkpoint {_type_name(obj)}: an OS resource")
        return None


class _DillUnpickler(dill.Unpickler):  # type: ignore[misc]  # dill ships no type information
    def __init__(self, file: IO[bytes], tokens: TokenContext) -> None:
        super().__init__(file, ignore=False)
        self._tokens = tokens

    def persistent_load(self, pid: object) -> object:
        return self._tokens.persistent_load(pid)


def dumps(obj: object, tokens: TokenContext) -> bytes:
    """Checkpoint bytes for ``obj``, with services replaced by their tokens.

    Raises ``CheckpointError`` if neither pickle nor dill can encode ``obj`` or it refers to a
    service not registered in ``tokens``.
    """
    error: Exception | None = None
    # The C pickler first; dill only for what it cannot do (lambdas, local classes, closures).
    for tag, pickler in ((_TAG_PICKLE, _Pickler), (_TAG_DILL, _DillPickler)):
        buf = io.BytesIO()
        buf.write(tag)
        try:
            pickler(buf, tokens).dump(obj)
        except CheckpointError:
            raise
        except Exception as exc:
            error = exc
            continue
        return buf.getvalue()
    assert error is not None
    raise CheckpointError(
        f"cannot checkpoint {_type_name(obj)}: {type(error).__name__}: {error}"
    ) from error


def loads(data: bytes, tokens: TokenContext) -> object:
    """The object encoded by ``dumps``, with service tokens resolved in ``tokens``.

    Only call on authenticated local data. Any failure (including a class that no longer
    exists) is raised as ``CheckpointError`` with the original exception as its cause.
    """
    buf = io.BytesIO(data)
    tag = buf.read(1)
    try:
        if tag == _TAG_PICKLE:
            return _Unpickler(buf, tokens).load()
        if tag == _TAG_DILL:
            return _DillUnpickler(buf, tokens).load()
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"cannot restore checkpoint data: {type(error).__name__}: {error}"
        ) from error
    raise CheckpointError(f"unknown checkpoint codec tag {tag!r}")


# -- frame snapshots -------------------------------------------------------------------------


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
        self._chunks: list[bytes] = [_TAG_PICKLE]
        self._pickler = _Pickler(_ListWriter(self._chunks), tokens)

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
            if isinstance(value, _IN_MEMORY_IO) or not isinstance(value, _NEVER_CHECKPOINTED):
                return dumps(value, self._tokens)
        except Exception:
            pass
        return Unserialisable(_type_name(value), _safe_repr(value))


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
    return pickle.dumps((_SNAPSHOT_FORMAT, rows), protocol=_PROTOCOL)


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
        return f"<repr of {_type_name(obj)} failed: {type(error).__name__}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _type_name(obj: object) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
