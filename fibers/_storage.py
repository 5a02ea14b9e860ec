"""The node's single LMDB environment: named databases, authenticated records, group commit.

One environment per node (``<base_dir>/node.lmdb``) holds every named database, so one write
transaction can span flows, step records, outbox, dedup ids and whatever the ledger adds.

Group commit: ``write_each`` writes a scheduling round's steps in one flat write transaction,
redoing it without a step whose writes raise (that step fails alone). ``group`` is the older
form, a ``WriteGroup`` (``fibers._write_group``): one outer write transaction whose steps run
in nested (child) transactions; a step that raises aborts alone, the others are committed (and
fsynced when ``sync=True``) together when the group ends. Work that must only happen once the
data is durable (sending messages, acknowledging inbound ones) is registered with
``WriteGroup.after_commit``.

Authenticated records: ``seal`` prefixes a payload with a version byte and a 32-byte keyed
BLAKE2b MAC under a key derived from the node-local secret, bound to the version, the database
name and the key; ``unseal`` raises ``CorruptRecordError`` before anything is decoded, so
checkpoint bytes that were tampered with, moved to another key or written by another node are
never unpickled. A sealed record is::

    version (1 byte, 3) | MAC (32 bytes) | payload
    MAC = BLAKE2b(key=seal key, digest_size=32) of
          version | len(db name) (u16 BE) | db name (UTF-8) | len(key) (u32 BE) | key | payload

Version 3 replaced version 2's HMAC-SHA256 by keyed BLAKE2b, which costs about a third as much
on the records the engine writes (mostly under 300 bytes; ``benchmarks/storage_probe.py``
measures both). Records of versions 1 and 2 are refused as "bad version", not migrated.

Injected failures: ``NodeStorage.inject_faults(FaultPlan())`` makes chosen writes or group
commits raise ``InjectedStorageFault`` (``fibers._storage_faults``), to test what the engine
does when the disk fails.

Keys: the node secret (32 bytes) is never used directly. Sealing uses a key derived from it by
HKDF-SHA256; ``encryption_key(purpose)`` derives a separate key per purpose (key management
encrypts private keys with one), and tamper detection another. The secret comes from, in
order: the ``secret_file`` argument of ``open``; the environment variable
``FIBERS_NODE_SECRET`` (64 hex digits); the file named by ``FIBERS_NODE_SECRET_FILE``; else
``<base_dir>/node.secret``, created on first open (``fibers._storage_secret``). Keeping it
outside the node directory means someone who copies the directory cannot read or forge its
sealed records (docs/security.md).

Tamper detection: a database registered with ``guard(name)`` has a running digest updated with
every write and checked by ``open`` (see ``fibers._storage_guard``), so a deleted or rolled-back
record stops the node from starting with ``TamperedDatabaseError``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar, cast

import lmdb
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fibers._storage_api import Txn
from fibers._storage_faults import FaultPlan
from fibers._storage_guard import GUARD_DB, StorageGuard, TamperedDatabaseError
from fibers._storage_secret import resolve_secret
from fibers._write_group import DbHandle, LmdbTxn, WriteGroup, WriterSlot

__all__ = [
    "ENGINE_DATABASES",
    "CorruptRecordError",
    "NodeStorage",
    "TamperedDatabaseError",
    "Txn",
    "journal_key",
]


def _lmdb(txn: Txn) -> LmdbTxn:
    # Only this module looks inside a Txn: the ones it is given are the ones it handed out.
    return cast("LmdbTxn", txn)

ENGINE_DATABASES: Final = ("flows", "steps", "journal", "snapshots", "outbox", "dedup", "meta")
"""Named databases the engine uses; opened eagerly by ``NodeStorage.open``."""

_T = TypeVar("_T")

SEAL_VERSION: Final = 3  # 2: HKDF-derived key (was the secret); 3: keyed BLAKE2b (was HMAC)
_VERSION: Final = bytes((SEAL_VERSION,))
_MAC_LEN: Final = 32
_SEAL_OVERHEAD: Final = 1 + _MAC_LEN
_SEAL_INFO: Final = b"fibers/storage/v1: record sealing"
_GUARD_INFO: Final = b"fibers/storage/v1: tamper detection"
_ENCRYPTION_INFO: Final = b"fibers/storage/v1: encryption: "
_ENV_DIR: Final = "node.lmdb"
_MAX_DBS: Final = 32
_RUN_ID_LEN: Final = 16
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


class CorruptRecordError(Exception):
    """A sealed record failed its integrity check and was not decoded.

    ``reason`` is one of ``"truncated"``, ``"bad version"`` or ``"authentication failed
    (tampered or written by another node)"``.
    """

    TRUNCATED: Final = "truncated"
    BAD_VERSION: Final = "bad version"
    AUTH_FAILED: Final = "authentication failed (tampered or written by another node)"

    def __init__(self, db_name: str, key: bytes, reason: str) -> None:
        super().__init__(db_name, key, reason)
        self.db_name = db_name
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"corrupt record in database {self.db_name!r} at key {self.key.hex()}: "
            f"{self.reason}; the record was not decoded"
        )


def journal_key(run_id: bytes, index: int) -> bytes:
    """Key of journal record ``index`` of flow ``run_id``.

    The 16-byte run id followed by the big-endian 32-bit index, so a prefix scan over a run id
    yields that flow's records in order.
    """
    if len(run_id) != _RUN_ID_LEN:
        raise ValueError(f"run id must be {_RUN_ID_LEN} bytes, got {len(run_id)}")
    if not 0 <= index < 1 << 32:
        raise ValueError(f"journal index {index} is outside 0..2**32-1")
    return run_id + _U32.pack(index)


class NodeStorage:
    """The node's LMDB environment and its node-local secret. Create with ``NodeStorage.open``.

    Invariant: at most one write transaction (a ``WriteGroup``) is active at a time, and it is
    used only by the thread that opened it (LMDB binds write transactions to their thread).
    """

    def __init__(self, env: lmdb.Environment, base_dir: Path, secret: bytes) -> None:
        """Internal: use ``NodeStorage.open``."""
        self._env = env
        self._base_dir = base_dir
        self._secret = secret
        self._seal_key = _derive(secret, _SEAL_INFO)
        # Keyed BLAKE2b before any input: copying it is cheaper than keying a new one.
        self._mac_base = hashlib.blake2b(key=self._seal_key, digest_size=_MAC_LEN)
        self._mac_heads: dict[tuple[bytes, str], bytes] = {}  # see _mac_of
        self._seal_heads: dict[str, bytes] = {}  # _mac_of's header per database, this version
        self._guard = StorageGuard(_derive(secret, _GUARD_INFO), self.seal, self.unseal)
        self._dbs: dict[str, DbHandle] = {}
        self._writer = WriterSlot()  # the thread of the active WriteGroup or write_each
        self._closed = False
        self._faults: FaultPlan | None = None

    @classmethod
    def open(cls, base_dir: Path, *, sync: bool = True, map_size: int = 1 << 34,
             secret_file: Path | None = None) -> NodeStorage:
        """Open (creating if needed) the storage under ``base_dir``.

        With ``sync=True`` every group commit is flushed to disk before it returns; with
        ``sync=False`` commits are atomic and consistent but the last ones may be lost on a
        machine crash (never on a process crash). ``map_size`` is the maximum database size.
        The secret comes from ``secret_file``, else the environment (module docstring), else
        ``base_dir/node.secret``. Raises ``PermissionError`` or ``ValueError`` if the secret
        file exists but is not a private 32-byte file, or the variable is not 64 hex digits;
        ``TamperedDatabaseError`` naming the database if a guarded database does not hold what
        this node last wrote to it.
        """
        base_dir = Path(base_dir)
        base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = resolve_secret(base_dir, secret_file)
        # writemap/map_async are deliberately off: LMDB refuses nested write transactions on a
        # writemap environment (MDB_BAD_TXN), and group commit depends on them.
        env = lmdb.open(
            str(base_dir / _ENV_DIR),
            map_size=map_size,
            max_dbs=_MAX_DBS,
            sync=sync,
            metasync=sync,
            mode=0o700,
        )
        storage = cls(env, base_dir, secret)
        try:
            # Open every existing database now: a handle opened later cannot be used by
            # transactions that began before it (LMDB answers EINVAL).
            existing = [name.decode() for name in env.dbs()]
            for name in (*ENGINE_DATABASES, GUARD_DB, *existing):
                storage.db(name)
            storage._check_guarded()
        except BaseException:
            env.close()
            raise
        return storage

    def __repr__(self) -> str:
        return f"<NodeStorage {str(self._base_dir)!r}>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("NodeStorage holds the node secret and an open database; not picklable")

    def __enter__(self) -> NodeStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the environment. Idempotent."""
        if not self._closed:
            self._closed = True
            self._dbs.clear()
            self._env.sync(True)
            self._env.close()

    def inject_faults(self, plan: FaultPlan | None) -> FaultPlan | None:
        """Make this storage fail writes and commits as ``plan`` says (None: stop failing).
        For tests of fault paths; returns ``plan``."""
        self._faults = plan
        return plan

    @property
    def faults(self) -> FaultPlan | None:
        """The installed fault plan, if any."""
        return self._faults

    @property
    def base_dir(self) -> Path:
        """The directory holding ``node.lmdb`` and ``node.secret``."""
        return self._base_dir

    @property
    def secret(self) -> bytes:
        """The 32-byte node-local secret. Never log it; derive purpose-specific keys from it."""
        return self._secret

    def encryption_key(self, purpose: str) -> bytes:
        """A 32-byte key for encrypting data at rest for ``purpose`` (say
        ``"ledger/key-management"``), derived from the node secret by HKDF-SHA256: distinct
        from the sealing key and from every other purpose's key."""
        return _derive(self._secret, _ENCRYPTION_INFO + purpose.encode())

    def db(self, name: str) -> DbHandle:
        """The handle of named database ``name``, creating the database if it does not exist.

        The engine's databases and every database that already exists are opened by ``open``;
        a service that adds a database calls ``db(name)`` when it starts. The record helpers
        below only use open databases, because LMDB forbids using a handle in a transaction
        that began before it was opened, and opening needs the write lock that a running
        ``WriteGroup`` holds.
        """
        handle = self._dbs.get(name)
        if handle is not None:
            return handle
        if self._writer.held_here():
            raise RuntimeError(
                f"cannot open database {name!r} inside a write group: this thread holds LMDB's "
                f"write lock. Call storage.db({name!r}) when the service starts."
            )
        handle = self._env.open_db(name.encode())
        self._dbs[name] = handle
        return handle

    # -- tamper detection (fibers._storage_guard) ------------------------------------------------

    def prepare(self, name: str) -> None:
        """Open database ``name`` (``db``), for parts and services that use it by name."""
        self.db(name)

    def guard(self, name: str) -> None:
        """Open database ``name`` and detect tampering with it from now on: every later write
        updates its running digest, and ``open`` refuses a database that no longer matches.
        Call it when the service that owns the database starts, while the database is still
        empty (``TamperedDatabaseError`` if it holds records but was never guarded). Idempotent.
        """
        handle = self.db(name)
        if name in self._guard.guarded:
            return
        if self._writer.held_here():
            raise RuntimeError(f"cannot start guarding database {name!r} inside a write group; "
                               f"call storage.guard({name!r}) when the service starts")
        with self._env.begin(write=True) as txn:
            self._guard.guard(txn, self._open_db(GUARD_DB), name, handle)

    def _check_guarded(self) -> None:
        guard_db = self._open_db(GUARD_DB)
        with self._env.begin(write=False) as txn:
            # A directory where nothing was ever stored (new, or its first open crashed before
            # writing the root) gets an empty root; one with records but no root was tampered.
            fresh = all(txn.stat(handle)["entries"] == 0 for handle in self._dbs.values())
        if fresh:
            with self._env.begin(write=True) as txn:
                self._guard.create_root(txn, guard_db)
        with self.read() as txn:
            self._guard.verify(_lmdb(txn), guard_db, self._open_db)

    def _guard_write(self, txn: Txn, db_name: str, key: bytes, new: bytes | None) -> None:
        if db_name in self._guard.guarded:
            raw = _lmdb(txn)
            old = raw.get(key, db=self._open_db(db_name))
            self._guard.on_write(raw, self._open_db(GUARD_DB), db_name, key, old=old, new=new)

    def _open_db(self, name: str) -> DbHandle:
        try:
            return self._dbs[name]
        except KeyError:
            raise RuntimeError(
                f"database {name!r} is not open; call storage.db({name!r}) when the service "
                "starts, before any transaction that uses it begins"
            ) from None

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only snapshot transaction, ended when the block exits."""
        txn = self._env.begin(write=False)
        try:
            yield txn
        finally:
            txn.abort()

    def group(self) -> WriteGroup:
        """A write group: one outer write transaction whose steps run in nested transactions.

        Use as a context manager; see ``WriteGroup``.
        """
        return WriteGroup(self._env, self._writer, self._before_commit)

    def write_each(self, items: list[_T], write: Callable[[Txn, _T], object]) -> list[
            Exception | None]:
        """Run ``write(txn, item)`` for every item in ONE flat write transaction and commit it
        (synced when opened with ``sync=True``). An item whose write raises is isolated: the
        transaction is aborted and redone without it (its error is returned at its index, the
        others' writes are run again, so they must only write through ``txn``), so a failing
        item never takes the others down and no nested transaction is paid for on the common
        path. Returns, per item, None (committed) or the exception its write raised. Raises
        (nothing committed) when the commit itself fails, or a ``BaseException`` that is not an
        ``Exception`` escapes a write.
        """
        if self._writer.held_here():
            raise RuntimeError("a write group is already active on this thread; write_each "
                               "opens its own transaction")
        errors: list[Exception | None] = [None] * len(items)
        while True:
            txn = self._env.begin(write=True)
            self._writer.take()
            try:
                failed = False
                for index, item in enumerate(items):
                    if errors[index] is not None:
                        continue
                    try:
                        write(txn, item)
                    except Exception as error:
                        errors[index], failed = error, True
                        break
                if failed:
                    txn.abort()
                    continue
                self._before_commit()
                txn.commit()
                return errors
            except BaseException:
                txn.abort()
                raise
            finally:
                self._writer.release()

    def _before_commit(self) -> None:
        if self._faults is not None:
            self._faults.before_commit()

    # -- plain records -------------------------------------------------------------------------

    def put(self, txn: Txn, db_name: str, key: bytes, value: bytes) -> None:
        """Store ``value`` at ``key`` in database ``db_name``, replacing any previous value."""
        if self._faults is not None:
            self._faults.before_write("put", db_name)
        if db_name in self._guard.guarded:
            self._guard_write(txn, db_name, key, value)
        handle = self._dbs.get(db_name)
        raw: LmdbTxn = txn  # type: ignore[assignment]  # (see _lmdb; no call on this path)
        raw.put(key, value, db=self._open_db(db_name) if handle is None else handle)

    def get(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        """The value at ``key`` in database ``db_name``, or None."""
        handle = self._dbs.get(db_name)
        raw: LmdbTxn = txn  # type: ignore[assignment]  # (see _lmdb; no call on this path)
        return raw.get(key, db=self._open_db(db_name) if handle is None else handle)

    def delete(self, txn: Txn, db_name: str, key: bytes) -> bool:
        """Delete ``key`` from database ``db_name``; returns whether it existed."""
        if self._faults is not None:
            self._faults.before_write("delete", db_name)
        if db_name in self._guard.guarded:
            self._guard_write(txn, db_name, key, None)
        handle = self._dbs.get(db_name)
        raw: LmdbTxn = txn  # type: ignore[assignment]  # (see _lmdb; no call on this path)
        return raw.delete(key, db=self._open_db(db_name) if handle is None else handle)

    def prefix_items(self, txn: Txn, db_name: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Lazily yield ``(key, value)`` for every key starting with ``prefix``, in key order.

        The iterator is only valid while ``txn`` is; do not write to ``db_name`` in between.
        """
        cursor = _lmdb(txn).cursor(db=self._open_db(db_name))
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def delete_prefix(self, txn: Txn, db_name: str, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` from ``db_name``; returns how many."""
        if self._faults is not None:
            self._faults.before_write("delete_prefix", db_name)
        cursor = _lmdb(txn).cursor(db=self._open_db(db_name))
        deleted = 0
        if not cursor.set_range(prefix):
            return 0
        guarded = db_name in self._guard.guarded
        while True:
            key = cursor.key()
            # Past the last record the cursor reports an empty key (LMDB keys are never empty).
            if not key or not key.startswith(prefix):
                return deleted
            if guarded:
                self._guard_write(txn, db_name, key, None)
            cursor.delete()
            deleted += 1

    # -- authenticated records -----------------------------------------------------------------

    def seal(self, db_name: str, key: bytes, payload: bytes) -> bytes:
        """``payload`` prefixed with the seal version and a MAC bound to ``db_name`` and ``key``."""
        return _VERSION + self._mac_of(_VERSION, db_name, key, payload) + payload

    def unseal(self, db_name: str, key: bytes, blob: bytes) -> bytes:
        """The payload of a record sealed for ``db_name``/``key``.

        Raises ``CorruptRecordError`` if the record is truncated, has an unknown version, or its
        MAC does not match (tampered, moved from another key or database, or sealed by another
        node's secret).
        """
        if len(blob) < _SEAL_OVERHEAD:
            raise CorruptRecordError(db_name, key, CorruptRecordError.TRUNCATED)
        if blob[0] != SEAL_VERSION:
            raise CorruptRecordError(db_name, key, CorruptRecordError.BAD_VERSION)
        payload = blob[_SEAL_OVERHEAD:]
        expected = self._mac_of(blob[:1], db_name, key, payload)
        if not hmac.compare_digest(expected, blob[1:_SEAL_OVERHEAD]):
            raise CorruptRecordError(db_name, key, CorruptRecordError.AUTH_FAILED)
        return payload

    def put_sealed(self, txn: Txn, db_name: str, key: bytes, payload: bytes) -> None:
        """``put`` of ``seal(db_name, key, payload)`` (one write for a ``FaultPlan``)."""
        # ``put`` and ``_mac_of`` inlined: this runs for every record of every step.
        if self._faults is not None:
            self._faults.before_write("put", db_name)
        head = self._seal_heads.get(db_name)
        if head is None:
            name = db_name.encode()
            head = self._seal_heads[db_name] = _VERSION + _U16.pack(len(name)) + name
        mac = self._mac_base.copy()
        mac.update(b"".join((head, _U32.pack(len(key)), key, payload)))
        value = b"".join((_VERSION, mac.digest(), payload))
        if db_name in self._guard.guarded:
            self._guard_write(txn, db_name, key, value)
        handle = self._dbs.get(db_name)
        raw: LmdbTxn = txn  # type: ignore[assignment]  # (see _lmdb)
        raw.put(key, value, db=self._open_db(db_name) if handle is None else handle)

    def get_sealed(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        """``unseal`` of the record at ``key``, or None if absent; may raise CorruptRecordError."""
        blob = self.get(txn, db_name, key)
        return None if blob is None else self.unseal(db_name, key, blob)

    def _mac_of(self, version: bytes, db_name: str, key: bytes, payload: bytes) -> bytes:
        # Both the name and the key are length-prefixed so no (name, key) pair can be re-split
        # into another. Keyed BLAKE2b is a MAC by construction (no HMAC nesting needed), and one
        # call with a fresh object beats HMAC-SHA256 up to ~1 KB, where the engine's records are.
        # The version and name part of the header is the same for every record of a database.
        # (``put_sealed`` computes the same inline.)
        head = self._mac_heads.get((version, db_name))
        if head is None:
            name = db_name.encode()
            head = self._mac_heads[(version, db_name)] = version + _U16.pack(len(name)) + name
        mac = self._mac_base.copy()
        mac.update(b"".join((head, _U32.pack(len(key)), key, payload)))
        return mac.digest()


def _derive(secret: bytes, info: bytes) -> bytes:
    """A 32-byte key for ``info`` derived from ``secret`` by HKDF-SHA256."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(secret)
