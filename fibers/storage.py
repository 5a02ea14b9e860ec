"""A node's storage: ``NodeStorage.open(directory, sync=...)`` opens the directory a node keeps
its checkpoints, journal, inbox and outbox in (and what its services add), for
``Node(..., storage=...)``. ``CorruptRecordError`` is raised for a record that fails its
authentication check."""

from fibers._storage import CorruptRecordError, NodeStorage

__all__ = ["CorruptRecordError", "NodeStorage"]
