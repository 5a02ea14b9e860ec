"""A node's storage. ``Storage`` is the interface the engine and the ledger use (with the opaque
transaction ``Txn`` and the group commit ``WriteGroup``); its docstring says which part writes
which engine database (``ENGINE_DB_WRITERS``). ``NodeStorage`` implements it on LMDB:
``NodeStorage.open(directory, sync=...)`` opens the directory a node keeps
its checkpoints, journal, inbox and outbox in (and what its services add), for
``Node(..., storage=...)``. ``CorruptRecordError`` is raised for a record that fails its
authentication check, ``TamperedDatabaseError`` (by ``open``) for a guarded database that no
longer holds what the node last wrote. The node secret may come from the environment variable
named by ``SECRET_ENV`` (``FIBERS_NODE_SECRET``) or the file named by ``SECRET_FILE_ENV``
(``FIBERS_NODE_SECRET_FILE``); see docs/security.md. ``stored_identity(storage, name)`` is the
node's identity kept in its storage, encrypted under the node secret (made on first use), as a
node process loads it. ``Txn`` is the transaction a node service's write function is given
(see ``fibers.services.NodeService``). Failures are injected through the interface for tests:
``storage.inject_faults(FaultPlan().fail_next_writes(2))`` makes writes or commits raise
``InjectedStorageFault``. ``SnapshotLocals`` is the type of a node's snapshot policy
(``Node(snapshot_locals=...)``, docs/checkpoint-format.md), ``check_snapshot_locals`` checks
a configured value against it."""

from fibers._identity import stored_identity
from fibers._locals import SnapshotLocals, check_snapshot_locals
from fibers._storage import CorruptRecordError, NodeStorage, TamperedDatabaseError
from fibers._storage_api import ENGINE_DB_WRITERS, Storage, Txn, WriteGroup
from fibers._storage_faults import FaultPlan, InjectedStorageFault
from fibers._storage_secret import SECRET_ENV, SECRET_FILE_ENV

__all__ = ["ENGINE_DB_WRITERS", "SECRET_ENV", "SECRET_FILE_ENV", "CorruptRecordError",
           "FaultPlan", "InjectedStorageFault", "NodeStorage", "SnapshotLocals", "Storage",
           "TamperedDatabaseError", "Txn", "WriteGroup", "check_snapshot_locals",
           "stored_identity"]
