"""A node's storage: ``NodeStorage.open(directory, sync=...)`` opens the directory a node keeps
its checkpoints, journal, inbox and outbox in (and what its services add), for
``Node(..., storage=...)``. ``CorruptRecordError`` is raised for a record that fails its
authentication check, ``TamperedDatabaseError`` (by ``open``) for a guarded database that no
longer holds what the node last wrote. The node secret may come from the environment variable
named by ``SECRET_ENV`` (``FIBERS_NODE_SECRET``) or the file named by ``SECRET_FILE_ENV``
(``FIBERS_NODE_SECRET_FILE``); see docs/security.md. ``stored_identity(storage, name)`` is the
node's identity kept in its storage, encrypted under the node secret (made on first use), as a
node process loads it. ``Txn`` is the transaction a node service's write function is given
(see ``fibers.services.NodeService``)."""

from fibers._identity import stored_identity
from fibers._storage import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    CorruptRecordError,
    NodeStorage,
    TamperedDatabaseError,
    Txn,
)

__all__ = ["SECRET_ENV", "SECRET_FILE_ENV", "CorruptRecordError", "NodeStorage",
           "TamperedDatabaseError", "Txn", "stored_identity"]
