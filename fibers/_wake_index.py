"""The wake index: how a hibernated or not yet restored flow is found without reading them all.

Two databases of the node's storage (prepared by ``fibers._checkpoint_store``), derived from
the flows' own records and written in the same group commit as the step that changes them:

* ``wake_routes``:  session routing key -> the run id of the flow it goes to: how a message for
                    a hibernated flow finds it (``fibers._hibernation``)
* ``wake_waits``:   run id -> the deadline or event a flow waits for, for flows that wait for
                    one (``INDEX_MARKER`` in ``meta`` says the index is kept)

docs/checkpoint-format.md ("The wake index") describes the records.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from fibers import _wire
from fibers._flow_logic import StateMachineRunId
from fibers._storage import CorruptRecordError
from fibers._storage_api import Storage, Txn

INDEX_MARKER = b"wake-index-v1"
"""The key in ``meta`` saying the wake index is kept: storage written before the index
existed lacks it and is restored eagerly, once."""
Wait = tuple[datetime | None, str | None, bool]
"""What wakes a flow besides messages: (deadline, event key, whether it is replayed as soon
as the node restarts: ``fibers.services.wake_on_restart``); ``NO_WAIT`` for none of them."""
NO_WAIT: Wait = (None, None, False)
log = logging.getLogger("fibers.node")


@dataclass(slots=True)
class IndexWrite:
    """A step's changes to the wake index (docs/checkpoint-format.md, "The wake index"): the
    routes of sessions it opened (or all its open ones), the routes to forget (its end), and
    what it now waits for besides messages (``put_wait``; ``NO_WAIT`` deletes the record)."""

    routes: list[bytes] = field(default_factory=list)
    forget: list[bytes] = field(default_factory=list)
    put_wait: Wait | None = None


class WakeIndex:
    """Reads and writes a node's wake index records (scheduler thread only)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, txn: Txn, run: bytes, index: IndexWrite) -> None:
        """Apply one step's ``index`` changes for the flow ``run`` (inside its group commit)."""
        s = self.storage
        for route in index.routes:
            s.put_sealed(txn, "wake_routes", route, run)
        for route in index.forget:
            s.delete(txn, "wake_routes", route)
        wait = index.put_wait
        if wait is not None:
            if wait == NO_WAIT:
                s.delete(txn, "wake_waits", run)
            else:
                s.put_sealed(txn, "wake_waits", run, _wire.encode(wait))

    def mark_indexed(self, txn: Txn) -> None:
        """Record that this storage keeps the wake index (see ``INDEX_MARKER``)."""
        self.storage.put_sealed(txn, "meta", INDEX_MARKER, b"1")

    def stored_wait(self, run: bytes, sealed: bytes) -> Wait | None:
        """A flow's wait record, or None when it fails its check: the index is derived from
        the flow's own records, so an unreadable one costs the flow nothing (its next step
        writes it again; meanwhile it is woken at every restart)."""
        try:
            return _wait_of(_wire.decode(self.storage.unseal("wake_waits", run, sealed)))
        except CorruptRecordError as exc:
            log.error("a wake index wait record is unreadable, written again with its flow's "
                      "next step: %s", exc)
        except (_wire.SerializationError, ValueError) as exc:
            log.error("a wake index wait record at key %s does not decode, written again with "
                      "its flow's next step: %s", run.hex(), exc)
        return None

    def indexed(self) -> bool:
        """Whether this storage keeps the wake index (written by this release or later)."""
        with self.storage.read() as txn:
            return self.storage.get(txn, "meta", INDEX_MARKER) is not None

    def waits(self) -> list[tuple[StateMachineRunId, Wait | CorruptRecordError]]:
        """Every flow's wake index record of what it waits for besides messages (a record
        that fails its check comes as its error)."""
        s = self.storage
        found: list[tuple[StateMachineRunId, Wait | CorruptRecordError]] = []
        with s.read() as txn:
            for key, blob in s.prefix_items(txn, "wake_waits", b""):
                if len(key) != 16:
                    continue
                wait: Wait | CorruptRecordError
                try:
                    wait = _wait_of(_wire.decode(s.unseal("wake_waits", key, blob)))
                except CorruptRecordError as exc:
                    wait = exc
                except (ValueError, _wire.SerializationError) as exc:
                    wait = CorruptRecordError("wake_waits", key, f"undecodable: {exc}")
                found.append((StateMachineRunId(_uuid(key)), wait))
        return found

    def route_owner(self, route: bytes) -> StateMachineRunId | CorruptRecordError | None:
        """The run id the wake index routes ``route`` (a session prefix) to, if any; the error
        when its record fails its check (it names no flow that can be trusted)."""
        try:
            with self.storage.read() as txn:
                run = self.storage.get_sealed(txn, "wake_routes", route)
        except CorruptRecordError as exc:
            return exc
        return None if run is None or len(run) != 16 else StateMachineRunId(_uuid(run))


def _wait_of(values: object) -> Wait:
    if not (isinstance(values, tuple) and len(values) == 3
            and (values[0] is None or isinstance(values[0], datetime))
            and (values[1] is None or isinstance(values[1], str))
            and isinstance(values[2], bool)):
        raise ValueError("the stored wait is not (deadline, event, wake on restart)")
    return values[0], values[1], values[2]


def _uuid(key: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=key)
