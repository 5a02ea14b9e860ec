"""Tamper detection for guarded databases: deleted, rolled-back or foreign records.

A seal (``NodeStorage.seal``) proves a record was written by this node, but not that it is the
latest record at its key, nor that no record was deleted. For each *guarded* database the guard
keeps a running digest of the whole database: the count of its records and the sum, modulo
2**256, of a keyed MAC of every ``(key, value)`` pair. Every ``put`` or ``delete`` on a guarded
database updates it in the same (nested) transaction, so the digest commits or rolls back with
the write. The digests of all guarded databases live together in one sealed *root* record
(database ``storage_guard``), and ``NodeStorage.open`` recomputes every guarded database's digest
and compares: a deleted record, a record put back to an older sealed version or a record copied
in from elsewhere changes the sum, and the node refuses to start with ``TamperedDatabaseError``
naming the database.

The MAC key is derived from the node secret, so nobody without the secret can compute the hash
of a record, nor find a set of changes that leaves the sum unchanged. Not covered (see
docs/security.md): rolling back the whole node directory, or every guarded database together
with the root record, to an earlier copy; and databases that are not guarded.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fibers._write_group import DbHandle, LmdbTxn

__all__ = ["GUARD_DB", "StorageGuard", "TamperedDatabaseError"]

GUARD_DB: Final = "storage_guard"
"""The database holding the sealed root record of the guarded databases' digests."""

_ROOT_KEY: Final = b"root"
_MODULUS: Final = 1 << 256
_ENTRY: Final = struct.Struct(">Q32s")  # count, digest
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


class TamperedDatabaseError(Exception):
    """A guarded database does not hold what this node last wrote to it.

    ``db_name`` names the database; the node must not start on it. Restore the whole node
    directory from a backup taken while the node was stopped.
    """

    def __init__(self, db_name: str, reason: str) -> None:
        super().__init__(db_name, reason)
        self.db_name = db_name
        self.reason = reason

    def __str__(self) -> str:
        return (f"database {self.db_name!r} was tampered with: {self.reason}. Refusing to start "
                "on it: restore the whole node directory from a backup taken while the node "
                "was stopped (see docs/security.md)")


class _Entry:
    """The running digest of one guarded database."""

    __slots__ = ("count", "digest")

    def __init__(self, count: int, digest: int) -> None:
        self.count = count
        self.digest = digest


class StorageGuard:
    """The running digests of a ``NodeStorage``'s guarded databases (see the module docstring).

    ``seal``/``unseal`` are the storage's record sealing; ``mac_key`` a key derived from the
    node secret for this purpose only.

    Invariant: ``guarded`` names exactly the databases in the stored root record; it only grows.
    """

    def __init__(self, mac_key: bytes, seal: Callable[[str, bytes, bytes], bytes],
                 unseal: Callable[[str, bytes, bytes], bytes]) -> None:
        self._key = mac_key
        self._seal = seal
        self._unseal = unseal
        self.guarded: frozenset[str] = frozenset()
        # The root record this guard last wrote or unsealed, and its entries as (count,
        # digest): a root read back byte for byte equal is that content, so it is neither
        # unsealed nor parsed again (one guarded write after another reads the root each time).
        self._last: tuple[bytes, dict[str, tuple[int, int]]] | None = None

    # -- the root record -----------------------------------------------------------------------

    def create_root(self, txn: LmdbTxn, guard_db: DbHandle) -> None:
        """Write an empty root (a new node directory)."""
        txn.put(_ROOT_KEY, self._seal(GUARD_DB, _ROOT_KEY, b""), db=guard_db)

    def _load(self, txn: LmdbTxn, guard_db: DbHandle) -> dict[str, _Entry]:
        blob = txn.get(_ROOT_KEY, db=guard_db)
        last = self._last
        if last is not None and blob is not None and bytes(blob) == last[0]:
            return {name: _Entry(*entry) for name, entry in last[1].items()}
        if blob is None:
            raise TamperedDatabaseError(GUARD_DB, "its root record is missing, though the node "
                                                  "directory holds databases")
        try:
            payload = self._unseal(GUARD_DB, _ROOT_KEY, blob)
        except Exception as exc:
            raise TamperedDatabaseError(
                GUARD_DB, "its root record does not unseal: the node secret is not the one this "
                          "directory was written with (check FIBERS_NODE_SECRET, "
                          f"FIBERS_NODE_SECRET_FILE or node.secret), or the record was altered "
                          f"({exc})") from None
        entries = dict(_parse_root(payload))
        self._remember(bytes(blob), entries)
        return entries

    def _store(self, txn: LmdbTxn, guard_db: DbHandle, entries: dict[str, _Entry]) -> None:
        payload = b"".join(
            _U16.pack(len(name.encode())) + name.encode()
            + _ENTRY.pack(e.count, e.digest.to_bytes(32, "big"))
            for name, e in sorted(entries.items()))
        blob = self._seal(GUARD_DB, _ROOT_KEY, payload)
        txn.put(_ROOT_KEY, blob, db=guard_db)
        self._remember(blob, entries)

    def _remember(self, blob: bytes, entries: dict[str, _Entry]) -> None:
        self._last = (blob, {name: (e.count, e.digest) for name, e in entries.items()})

    # -- checks --------------------------------------------------------------------------------

    def verify(self, txn: LmdbTxn, guard_db: DbHandle, handles: Callable[[str], DbHandle]) -> None:
        """Recompute every guarded database's digest; raise ``TamperedDatabaseError`` naming
        the first that differs from the root record. Sets ``guarded``."""
        entries = self._load(txn, guard_db)
        for name, entry in sorted(entries.items()):
            count, digest = self._digest_of(name, _items(txn, handles(name)))
            if count != entry.count:
                raise TamperedDatabaseError(
                    name, f"it holds {count} records where this node last stored {entry.count} "
                          "(records were deleted, or added outside this node)")
            if digest != entry.digest:
                raise TamperedDatabaseError(
                    name, "its records differ from those this node last stored (a record was "
                          "put back to an older version, replaced or moved)")
        self.guarded = frozenset(entries)

    def guard(self, txn: LmdbTxn, guard_db: DbHandle, name: str, db: DbHandle) -> None:
        """Start guarding the empty database ``name``; ``TamperedDatabaseError`` if it already
        holds records (they were written before it was guarded, or its guard was removed)."""
        if name in self.guarded:
            return
        entries = self._load(txn, guard_db)
        count, digest = self._digest_of(name, _items(txn, db))
        if count:
            raise TamperedDatabaseError(
                name, f"it holds {count} records but has no running digest (its entry in the "
                      "guard's root record is gone, or it was written by an older version)")
        entries[name] = _Entry(0, digest)
        self._store(txn, guard_db, entries)
        self.guarded = self.guarded | {name}

    # -- updates -------------------------------------------------------------------------------

    def on_write(self, txn: LmdbTxn, guard_db: DbHandle, name: str, key: bytes, *,
                 old: bytes | None, new: bytes | None) -> None:
        """Account for ``key`` changing from ``old`` to ``new`` (None: absent) in guarded
        database ``name``, in ``txn``: the same transaction as the write itself."""
        entries = self._load(txn, guard_db)
        entry = entries[name]
        if old is not None:
            entry.count -= 1
            entry.digest = (entry.digest - self._hash(name, key, old)) % _MODULUS
        if new is not None:
            entry.count += 1
            entry.digest = (entry.digest + self._hash(name, key, new)) % _MODULUS
        self._store(txn, guard_db, entries)

    def _digest_of(self, name: str, items: Iterator[tuple[bytes, bytes]]) -> tuple[int, int]:
        count = digest = 0
        for key, value in items:
            count += 1
            digest += self._hash(name, key, value)
        return count, digest % _MODULUS

    def _hash(self, name: str, key: bytes, value: bytes) -> int:
        raw = name.encode()
        header = b"".join((_U16.pack(len(raw)), raw, _U32.pack(len(key)), key))
        return int.from_bytes(hmac.digest(self._key, header + value, "sha256"), "big")


def _items(txn: LmdbTxn, db: DbHandle) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    if cursor.first():
        yield from cursor.iternext()


def _parse_root(payload: bytes) -> Iterator[tuple[str, _Entry]]:
    offset = 0
    while offset < len(payload):
        (size,) = _U16.unpack_from(payload, offset)
        offset += _U16.size
        name = payload[offset:offset + size].decode()
        offset += size
        count, digest = _ENTRY.unpack_from(payload, offset)
        offset += _ENTRY.size
        yield name, _Entry(count, int.from_bytes(digest, "big"))
