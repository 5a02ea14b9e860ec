"""A node's storage: ``NodeStorage.open(directory, sync=...)`` opens the directory a node keeps
its checkpoints, journal, inbox and outbox in (and what its services add), for
``Node(..., storage=...)``. ``CorruptRecordError`` is raised for a record that fails its
authentication check. ``stored_identity(storage, name)`` is the node's identity kept in its
storage, encrypted under the node secret (made on first use), as a node process loads it."""

from fibers._identity import stored_identity
from fibers._storage import CorruptRecordError, NodeStorage

__all__ = ["CorruptRecordError", "NodeStorage", "stored_identity"]
