"""The storage interface (public as ``fibers.storage.Storage``; docs/architecture.md, "Storage").

The engine and the ledger reach a node's storage only through ``Storage``, ``WriteGroup`` and
the opaque ``Txn``: ``fibers._storage.NodeStorage`` (LMDB) implements them, and another
implementation (or a wrapper around one, as tests/fibers/test_storage_interface.py plugs into
nodes) fits without touching engine code.

One writer per database. The engine's databases are written only by the parts that own them:

* ``flows``, ``steps``, ``flow_status``: the checkpoint store (``fibers._checkpoint_store``);
  ``journal`` and ``snapshots`` held flows' checkpoints before step records and are only
  read (docs/checkpoint-format.md);
* ``inbox``, ``outbox``: the commit stage (``fibers._commit``; ``fibers._commit_acks`` deletes
  acknowledged outbox records) and the checkpoint store (a step consumes inbox records and
  queues outbox frames);
* ``dedup``: the session dedup records (``fibers._dedup``), called by the commit stage only;
* ``wake_routes``, ``wake_waits``: the wake index (``fibers._wake_index``); the checkpoint
  store deletes a finished flow's ``wake_waits`` record with its other records;
* ``meta``: the node's stored identity (``fibers._identity``) and the wake index's marker
  (``fibers._wake_index``).

``ENGINE_DB_WRITERS`` names them; every write runs inside the commit stage's group commit
(``Storage.write_each``). A node service writes only databases of its own
(``fibers.services.NodeService``), never an engine database. tests/fibers/test_storage_interface.py
checks both over real runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from fibers._storage_faults import FaultPlan

__all__ = ["ENGINE_DB_WRITERS", "Storage", "Txn", "WriteGroup"]

_T = TypeVar("_T")

ENGINE_DB_WRITERS: Final[dict[str, frozenset[str]]] = {
    "flows": frozenset({"fibers._checkpoint_store"}),
    "steps": frozenset({"fibers._checkpoint_store"}),
    "locals": frozenset({"fibers._checkpoint_store"}),
    "values": frozenset({"fibers._checkpoint_store"}),
    "journal": frozenset({"fibers._checkpoint_store"}),
    "snapshots": frozenset({"fibers._checkpoint_store"}),
    "flow_status": frozenset({"fibers._checkpoint_store"}),
    "inbox": frozenset({"fibers._commit", "fibers._checkpoint_store"}),
    "outbox": frozenset({"fibers._commit", "fibers._commit_acks", "fibers._checkpoint_store"}),
    "dedup": frozenset({"fibers._dedup"}),
    "wake_routes": frozenset({"fibers._wake_index"}),
    "wake_waits": frozenset({"fibers._wake_index", "fibers._checkpoint_store"}),
    "meta": frozenset({"fibers._identity", "fibers._wake_index"}),
}
"""The engine's databases, each with the modules allowed to write it (see the docstring)."""


class Txn(Protocol):
    """A storage transaction, opaque to its users: only the ``Storage`` that handed it out
    (``Storage.read``, ``WriteGroup.step``) may look inside it."""


class WriteGroup(Protocol):
    """One outer write transaction shared by many steps (group commit), used as
    ``with storage.group() as group``: on a normal exit everything the steps wrote commits at
    once (durably when the storage syncs) and then the ``after_commit`` callbacks run in
    order; if the block raises or the commit fails, nothing is written, no callback runs and
    the error propagates."""

    def __enter__(self) -> WriteGroup:
        """Open the group's write transaction."""

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Commit the group (then run its callbacks), or abort it when the block raised."""

    def step(self, fn: Callable[[Txn], object]) -> Exception | None:
        """Run ``fn(txn)`` in a nested transaction: None if it returned (its writes join the
        group), else the exception it raised, with only its own writes and callbacks
        discarded."""

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback()`` once the group has committed; dropped with a failing step."""


class Storage(Protocol):
    """A node's storage: named databases of byte keys and values, read in snapshot
    transactions and written in group commits, with records sealed (authenticated) by the node
    secret. Single-writer: only the thread running a node's steps writes.

    Failures are injectable: ``inject_faults(FaultPlan)`` makes writes and commits raise
    ``InjectedStorageFault`` as the plan says, for tests of fault paths."""

    @property
    def base_dir(self) -> Path:
        """The directory the storage lives in."""

    @property
    def secret(self) -> bytes:
        """The node-local secret keys are derived from. Never log it."""

    @property
    def faults(self) -> FaultPlan | None:
        """The installed fault plan, if any."""

    def inject_faults(self, plan: FaultPlan | None) -> FaultPlan | None:
        """Fail writes and commits as ``plan`` says (None: stop failing); returns ``plan``."""

    def encryption_key(self, purpose: str) -> bytes:
        """A 32-byte key for encrypting data at rest for ``purpose``, distinct per purpose."""

    def prepare(self, name: str) -> None:
        """Make database ``name`` usable (creating it if needed). Call it when a part or
        service starts, outside any write group."""

    def guard(self, name: str) -> None:
        """Prepare database ``name`` and detect records deleted or rolled back behind the
        node's back at the next open (docs/security.md)."""

    def read(self) -> AbstractContextManager[Txn]:
        """A read-only snapshot transaction, ended when the block exits."""

    def group(self) -> WriteGroup:
        """A new write group (see ``WriteGroup``)."""

    def write_each(self, items: list[_T], write: Callable[[Txn, _T], object]) -> list[
            Exception | None]:
        """Run ``write(txn, item)`` for every item in one flat write transaction and commit it;
        an item whose write raises is isolated (the transaction is redone without it, so
        ``write`` must only write through ``txn``). Per item: None (committed) or its error;
        raises, with nothing committed, when the commit itself fails."""

    def put(self, txn: Txn, db_name: str, key: bytes, value: bytes) -> None:
        """Store ``value`` at ``key``, replacing any previous value."""

    def get(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""

    def delete(self, txn: Txn, db_name: str, key: bytes) -> bool:
        """Delete ``key``; whether it existed."""

    def prefix_items(self, txn: Txn, db_name: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` for every key starting with ``prefix``, in key order, valid while
        ``txn`` is and ``db_name`` is not written."""

    def delete_prefix(self, txn: Txn, db_name: str, prefix: bytes) -> int:
        """Delete every key starting with ``prefix``; how many."""

    def seal(self, db_name: str, key: bytes, payload: bytes) -> bytes:
        """``payload`` with a MAC bound to ``db_name`` and ``key`` (docs/checkpoint-format.md)."""

    def unseal(self, db_name: str, key: bytes, blob: bytes) -> bytes:
        """The payload of a sealed record; ``CorruptRecordError`` if it fails its check."""

    def put_sealed(self, txn: Txn, db_name: str, key: bytes, payload: bytes) -> None:
        """``put`` of ``seal(db_name, key, payload)``."""

    def get_sealed(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        """``unseal`` of the record at ``key``, or None if absent."""

    def close(self) -> None:
        """Flush and close. Idempotent."""
