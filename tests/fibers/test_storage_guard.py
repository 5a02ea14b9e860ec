"""Tamper detection and key separation in the storage layer (issue 15).

Each tampering is done the way someone with the node's disk would: with LMDB directly, while
the node is stopped, never through ``NodeStorage``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import pytest

from fibers._storage import (
    CorruptRecordError,
    NodeStorage,
    TamperedDatabaseError,
    Txn,
)
from fibers._storage_secret import SECRET_ENV, SECRET_FILE_ENV


@contextmanager
def raw_db(base_dir: Path, name: str) -> Iterator[tuple[lmdb.Transaction, object]]:
    """A write transaction on database ``name`` of the stopped node under ``base_dir``."""
    env = lmdb.open(str(base_dir / "node.lmdb"), max_dbs=32)
    try:
        db = env.open_db(name.encode())
        with env.begin(write=True) as txn:
            yield txn, db
    finally:
        env.close()


def write(storage: NodeStorage, fn: Callable[[Txn], object]) -> None:
    with storage.group() as group:
        error = group.step(fn)
        assert error is None


def populated(base_dir: Path) -> bytes:
    """Open a node with guarded database ``ledger`` holding k1 (twice written) and k2; return
    the first sealed value of k1 (an older record an attacker could have kept)."""
    with NodeStorage.open(base_dir, sync=False) as storage:
        storage.guard("ledger")
        storage.db("plain")
        write(storage, lambda txn: storage.put_sealed(txn, "ledger", b"k1", b"unspent"))
        with storage.read() as txn:
            old = storage.get(txn, "ledger", b"k1")
        write(storage, lambda txn: storage.put_sealed(txn, "ledger", b"k1", b"spent"))
        write(storage, lambda txn: storage.put_sealed(txn, "ledger", b"k2", b"other"))
        write(storage, lambda txn: storage.put(txn, "plain", b"p", b"v"))
        assert old is not None
        assert storage.unseal("ledger", b"k1", old) == b"unspent"  # the seal alone cannot tell
    return old


def test_an_untouched_guarded_database_opens(tmp_path: Path) -> None:
    populated(tmp_path)
    with NodeStorage.open(tmp_path) as storage, storage.read() as txn:
        assert storage.get_sealed(txn, "ledger", b"k1") == b"spent"


def test_a_deleted_record_stops_the_node_naming_the_database(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_db(tmp_path, "ledger") as (txn, db):
        assert txn.delete(b"k2", db=db)
    with pytest.raises(TamperedDatabaseError, match=r"database 'ledger' was tampered with: it "
                                                    r"holds 1 records where this node last "
                                                    r"stored 2") as caught:
        NodeStorage.open(tmp_path)
    assert caught.value.db_name == "ledger"


def test_an_older_sealed_record_is_detected_though_its_seal_is_valid(tmp_path: Path) -> None:
    old = populated(tmp_path)
    with raw_db(tmp_path, "ledger") as (txn, db):
        txn.put(b"k1", old, db=db)
    with pytest.raises(TamperedDatabaseError, match=r"'ledger'.*put back to an older version"):
        NodeStorage.open(tmp_path)


def test_a_record_moved_to_another_key_or_added_stops_the_node(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_db(tmp_path, "ledger") as (txn, db):
        value = txn.get(b"k1", db=db)
        txn.put(b"k3", value, db=db)
    with pytest.raises(TamperedDatabaseError, match="'ledger'"):
        NodeStorage.open(tmp_path)


def test_a_deleted_guard_root_stops_the_node(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_db(tmp_path, "storage_guard") as (txn, db):
        assert txn.delete(b"root", db=db)
    with pytest.raises(TamperedDatabaseError, match=r"'storage_guard'.*root record is missing"):
        NodeStorage.open(tmp_path)


def test_a_guarded_database_emptied_with_its_entry_cannot_be_guarded_again(
    tmp_path: Path,
) -> None:
    with NodeStorage.open(tmp_path) as storage:
        storage.db("late")
        write(storage, lambda txn: storage.put(txn, "late", b"k", b"v"))
    with NodeStorage.open(tmp_path) as storage, pytest.raises(
            TamperedDatabaseError, match=r"'late'.*holds 1 records but has no running digest"):
        storage.guard("late")


def test_unguarded_databases_are_not_checked(tmp_path: Path) -> None:
    populated(tmp_path)
    with raw_db(tmp_path, "plain") as (txn, db):
        txn.delete(b"p", db=db)
    NodeStorage.open(tmp_path).close()


def test_failed_steps_deletes_and_prefix_deletes_keep_the_digest_true(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path, sync=False) as storage:
        storage.guard("ledger")

        def fails(txn: Txn) -> None:
            storage.put(txn, "ledger", b"lost", b"x")
            raise OSError("simulated: the step fails after its write")

        with storage.group() as group:
            assert isinstance(group.step(fails), OSError)
            group.step(lambda txn: [storage.put(txn, "ledger", b"a/%d" % i, b"v") for i in
                                    range(5)])
            group.step(lambda txn: storage.put(txn, "ledger", b"b", b"v"))
        write(storage, lambda txn: storage.delete_prefix(txn, "ledger", b"a/"))
        write(storage, lambda txn: storage.delete(txn, "ledger", b"missing"))
        write(storage, lambda txn: storage.put(txn, "ledger", b"b", b"w"))
    with NodeStorage.open(tmp_path) as storage, storage.read() as txn:
        assert list(storage.prefix_items(txn, "ledger", b"")) == [(b"b", b"w")]


def test_a_group_rolled_back_whole_leaves_the_digest_true(tmp_path: Path) -> None:
    """The guard remembers the root it last wrote; one rolled back must not be built on."""
    with NodeStorage.open(tmp_path, sync=False) as storage:
        storage.guard("ledger")
        write(storage, lambda txn: storage.put(txn, "ledger", b"a", b"1"))
        with pytest.raises(OSError, match="simulated"), storage.group() as group:
            assert group.step(lambda txn: storage.put(txn, "ledger", b"b", b"2")) is None
            raise OSError("simulated: the group fails before it commits")
        write(storage, lambda txn: storage.put(txn, "ledger", b"c", b"3"))
    with NodeStorage.open(tmp_path) as storage, storage.read() as txn:
        assert [key for key, _ in storage.prefix_items(txn, "ledger", b"")] == [b"a", b"c"]


# ----- the secret and the keys derived from it -----------------------------------------------


def test_sealing_and_encryption_keys_are_derived_and_distinct(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        keys = {storage.secret, storage.encryption_key("a"), storage.encryption_key("b"),
                storage._seal_key}
        assert len(keys) == 4 and all(len(key) == 32 for key in keys)
        assert storage.encryption_key("a") == storage.encryption_key("a")


def _private_file(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)


def test_the_secret_can_live_outside_the_node_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_dir, outside = tmp_path / "node", tmp_path / "vault"
    outside.mkdir()
    secret_file = outside / "secret"
    _private_file(secret_file, bytes(range(32)))
    with NodeStorage.open(node_dir, secret_file=secret_file) as storage:
        assert storage.secret == bytes(range(32))
        write(storage, lambda txn: storage.put_sealed(txn, "flows", b"k", b"v"))
    assert not (node_dir / "node.secret").exists()
    monkeypatch.setenv(SECRET_FILE_ENV, str(secret_file))
    with NodeStorage.open(node_dir) as storage, storage.read() as txn:
        assert storage.get_sealed(txn, "flows", b"k") == b"v"
    monkeypatch.delenv(SECRET_FILE_ENV)
    monkeypatch.setenv(SECRET_ENV, bytes(range(32)).hex())
    with NodeStorage.open(node_dir) as storage, storage.read() as txn:
        assert storage.get_sealed(txn, "flows", b"k") == b"v"
    assert not (node_dir / "node.secret").exists()


def test_without_the_outside_secret_the_directory_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_dir = tmp_path / "node"
    monkeypatch.setenv(SECRET_ENV, "ab" * 32)
    with NodeStorage.open(node_dir) as storage:
        write(storage, lambda txn: storage.put_sealed(txn, "flows", b"k", b"v"))
    monkeypatch.delenv(SECRET_ENV)
    # A copy of the directory alone: a new secret is made, and nothing written before unseals.
    with pytest.raises(TamperedDatabaseError, match=r"'storage_guard'.*does not unseal"):
        NodeStorage.open(node_dir)


@pytest.mark.parametrize("value", ["", "ab" * 31, "zz" * 32, "ab" * 33])
def test_a_malformed_secret_variable_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    with pytest.raises(ValueError, match=f"{SECRET_ENV} must hold the node secret") as caught:
        NodeStorage.open(tmp_path)
    assert value == "" or value not in str(caught.value)


def test_a_record_sealed_by_another_secret_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "01" * 32)
    with NodeStorage.open(tmp_path / "a") as first:
        blob = first.seal("flows", b"k", b"v")
    monkeypatch.setenv(SECRET_ENV, "02" * 32)
    with NodeStorage.open(tmp_path / "b") as second, pytest.raises(CorruptRecordError):
        second.unseal("flows", b"k", blob)


def test_a_first_open_that_crashed_before_writing_the_root_opens_again(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    env = lmdb.open(str(tmp_path / "node.lmdb"), max_dbs=32)
    env.open_db(b"flows")  # databases created, nothing stored, no root yet
    env.close()
    with NodeStorage.open(tmp_path) as storage:
        storage.guard("ledger")
        write(storage, lambda txn: storage.put(txn, "ledger", b"k", b"v"))
    NodeStorage.open(tmp_path).close()


def test_guarding_inside_a_write_group_is_refused(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        storage.db("ledger")
        with storage.group(), pytest.raises(RuntimeError, match="inside a write group"):
            storage.guard("ledger")
