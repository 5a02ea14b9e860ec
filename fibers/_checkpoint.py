"""The checkpoint codec: node-local pickles with service tokens.

Only ever applied to the node's own HMAC-authenticated storage (``fibers._storage``); network
data goes through the wire codec and never reaches an unpickler.

Encoding: the C ``pickle.Pickler`` (protocol 5) first, and only if it fails (lambdas, closures,
local classes...) the whole object again with ``dill`` (~40x slower). A one-byte tag in front says
which unpickler reads it back. Node services (``SerializeAsToken``) are never copied: they pickle
as a persistent id ``("svc", token)`` and load as the live instance registered under that token
in the restoring node's ``TokenContext``. Where these bytes are stored: docs/checkpoint-format.md.
Frame snapshots (a suspended flow's locals, each its own pickle) are ``fibers._frame_snapshots``.
"""

from __future__ import annotations

import _thread
import io
import pickle
import socket
from types import AsyncGeneratorType, CoroutineType, FrameType, GeneratorType
from typing import IO, Final, Protocol

import dill

__all__ = [
    "IN_MEMORY_IO",
    "NEVER_CHECKPOINTED",
    "PROTOCOL",
    "TAG_PICKLE",
    "CheckpointError",
    "CheckpointPickler",
    "SerializeAsToken",
    "TokenContext",
    "dumps",
    "loads",
    "qualified_type_name",
]

PROTOCOL: Final = 5
TAG_PICKLE: Final = b"\x01"
_TAG_DILL: Final = b"\x02"
_SERVICE: Final = "svc"

# OS resources that dill would "successfully" pickle but that are meaningless (or harmful: dill
# re-opens a file by descriptor number) when loaded in another process or after a restart.
_RESOURCE_TYPES: Final = (io.IOBase, _thread.LockType, _thread.RLock)
IN_MEMORY_IO: Final = (io.BytesIO, io.StringIO)
# Values neither pickler can encode (or that we refuse): skipping the dill attempt for them keeps
# a flow holding, say, a lock from paying ~20 µs per suspension.
NEVER_CHECKPOINTED: Final = (
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
                f"{qualified_type_name(obj)} {obj.serialization_token()!r} is not a service "
                "registered on this node, so a checkpoint cannot refer to it"
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


class CheckpointPickler(pickle.Pickler):
    def __init__(self, file: _Writer, tokens: TokenContext) -> None:
        super().__init__(file, protocol=PROTOCOL)
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
        super().__init__(file, protocol=PROTOCOL, byref=False, recurse=False, fmode=0)
        self._tokens = tokens

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, SerializeAsToken):
            return self._tokens.persistent_id(obj)
        if isinstance(obj, _RESOURCE_TYPES) and not isinstance(obj, IN_MEMORY_IO):
            raise TypeError(f"cannot checkpoint {qualified_type_name(obj)}: an OS resource")
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
    for tag, pickler in ((TAG_PICKLE, CheckpointPickler), (_TAG_DILL, _DillPickler)):
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
        f"cannot checkpoint {qualified_type_name(obj)}: {type(error).__name__}: {error}"
    ) from error


def loads(data: bytes, tokens: TokenContext) -> object:
    """The object encoded by ``dumps``, with service tokens resolved in ``tokens``.

    Only call on authenticated local data. Any failure (including a class that no longer
    exists) is raised as ``CheckpointError`` with the original exception as its cause.
    """
    buf = io.BytesIO(data)
    tag = buf.read(1)
    try:
        if tag == TAG_PICKLE:
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


def qualified_type_name(obj: object) -> str:
    """The name of ``obj``'s type as errors and reprs show it (builtins unqualified)."""
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
