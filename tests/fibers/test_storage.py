"""Node storage: named databases, the node secret, sealed records and group commit."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fibers._storage import (
    CorruptRecordError,
    NodeStorage,
    Txn,
    journal_key,
)
from fibers._storage_faults import FaultPlan, InjectedStorageFault

RUN_A = bytes(range(16))
RUN_B = bytes(range(1, 17))
AUTH_FAILED = "authentication failed (tampered or written by another node)"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[NodeStorage]:
    with NodeStorage.open(tmp_path / "node") as opened:
        yield opened


def write(storage: NodeStorage, db_name: str, key: bytes, value: bytes) -> None:
    with storage.group() as group:
        error = group.step(lambda txn: storage.put(txn, db_name, key, value))
    assert error is None


def read(storage: NodeStorage, db_name: str, key: bytes) -> bytes | None:
    with storage.read() as txn:
        return storage.get(txn, db_name, key)


# -- environment and secret --------------------------------------------------------------------


def test_named_databases_persist_across_close_and_reopen(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        storage.db("vault")
        write(storage, "flows", b"k", b"flow")
        write(storage, "vault", b"k", b"state")
    with NodeStorage.open(tmp_path) as storage:
        assert read(storage, "flows", b"k") == b"flow"
        assert read(storage, "vault", b"k") == b"state"
        assert read(storage, "journal", b"k") is None


def test_open_creates_the_base_directory_and_one_environment(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path / "a" / "b"):
        pass
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["node.lmdb", "node.secret"]


def test_secret_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        first = storage.secret
    mode = (tmp_path / "node.secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert len(first) == 32
    with NodeStorage.open(tmp_path) as storage:
        assert storage.secret == first


def test_secret_is_not_in_the_repr(storage: NodeStorage) -> None:
    assert storage.secret.hex() not in repr(storage)
    assert repr(storage.secret) not in repr(storage)


def test_storage_refuses_to_be_pickled(storage: NodeStorage) -> None:
    import pickle

    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(storage)


def test_open_refuses_a_group_readable_secret(tmp_path: Path) -> None:
    NodeStorage.open(tmp_path).close()
    os.chmod(tmp_path / "node.secret", 0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        NodeStorage.open(tmp_path)


def test_open_refuses_a_secret_of_the_wrong_length(tmp_path: Path) -> None:
    NodeStorage.open(tmp_path).close()
    (tmp_path / "node.secret").write_bytes(b"short")
    with pytest.raises(ValueError, match="holds 5 bytes, expected 32"):
        NodeStorage.open(tmp_path)


def test_existing_databases_are_opened_on_reopen(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path) as storage:
        storage.db("vault")
    with NodeStorage.open(tmp_path) as storage, storage.read() as txn:
        assert storage.get(txn, "vault", b"k") is None


def test_records_need_their_database_opened_first(storage: NodeStorage) -> None:
    with storage.group() as group:
        unopened = group.step(lambda txn: storage.put(txn, "late", b"k", b"v"))
        inside = group.step(lambda txn: storage.db("late"))
    assert isinstance(unopened, RuntimeError)
    assert str(unopened) == (
        "database 'late' is not open; call storage.db('late') when the service starts, "
        "before any transaction that uses it begins"
    )
    assert isinstance(inside, RuntimeError) and "inside a write group" in str(inside)
    storage.db("late")
    write(storage, "late", b"k", b"v")
    assert read(storage, "late", b"k") == b"v"


# -- sealed records ----------------------------------------------------------------------------


def test_seal_unseal_round_trip(storage: NodeStorage) -> None:
    key = journal_key(RUN_A, 3)
    blob = storage.seal("journal", key, b"payload")
    assert blob.endswith(b"payload") and len(blob) == 1 + 32 + len(b"payload")
    assert storage.unseal("journal", key, blob) == b"payload"
    assert storage.unseal("journal", key, storage.seal("journal", key, b"")) == b""


def test_sealed_record_format_is_stable(tmp_path: Path) -> None:
    # Golden bytes: changing the layout makes every existing checkpoint unreadable.
    fd = os.open(tmp_path / "node.secret", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, bytes(range(32)))
    os.close(fd)
    key = journal_key(bytes(16), 7)
    with NodeStorage.open(tmp_path) as storage:
        blob = storage.seal("journal", key, b"payload")
    # Version 3: keyed BLAKE2b-256 under HKDF-SHA256(secret, info) (docs: fibers/_storage.py).
    seal_key = HKDF(algorithm=SHA256(), length=32, salt=None,
                    info=b"fibers/storage/v1: record sealing").derive(bytes(range(32)))
    mac_input = b"\x03" + b"\x00\x07journal" + b"\x00\x00\x00\x14" + key + b"payload"
    expected_mac = hashlib.blake2b(mac_input, key=seal_key, digest_size=32).digest()
    assert blob == b"\x03" + expected_mac + b"payload"
    assert blob.hex() == (
        "03882f4b20095349e18f4c5748b1131f629d5f92f3d1212e9d60f6b928af44b70e7061796c6f6164"
    )


def test_version_2_record_is_refused_not_decoded(tmp_path: Path) -> None:
    # A record sealed the old way (HMAC-SHA256, version byte 2) with this very node's key is
    # refused: version 3 does not read version 2 (no node written by it exists outside tests).
    fd = os.open(tmp_path / "node.secret", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, bytes(range(32)))
    os.close(fd)
    key = journal_key(bytes(16), 7)
    seal_key = HKDF(algorithm=SHA256(), length=32, salt=None,
                    info=b"fibers/storage/v1: record sealing").derive(bytes(range(32)))
    mac_input = b"\x02" + b"\x00\x07journal" + b"\x00\x00\x00\x14" + key + b"payload"
    v2_blob = b"\x02" + hmac.digest(seal_key, mac_input, "sha256") + b"payload"
    with NodeStorage.open(tmp_path) as storage, pytest.raises(CorruptRecordError) as raised:
        storage.unseal("journal", key, v2_blob)
    assert raised.value.reason == "bad version"


def test_put_sealed_get_sealed(storage: NodeStorage) -> None:
    with storage.group() as group:
        group.step(lambda txn: storage.put_sealed(txn, "snapshots", b"k", b"frames"))
    with storage.read() as txn:
        assert storage.get_sealed(txn, "snapshots", b"k") == b"frames"
        assert storage.get_sealed(txn, "snapshots", b"missing") is None
        assert storage.get(txn, "snapshots", b"k") != b"frames"


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(lambda blob: flip(blob, len(blob) - 1), AUTH_FAILED, id="payload-byte"),
        pytest.param(lambda blob: flip(blob, 5), AUTH_FAILED, id="mac-byte"),
        pytest.param(lambda blob: blob[:20], "truncated", id="truncated"),
        pytest.param(lambda blob: b"", "truncated", id="empty"),
        pytest.param(lambda blob: b"\x01" + blob[1:], "bad version", id="version"),
    ],
)
def test_tampered_record_is_rejected(
    storage: NodeStorage, tamper: Callable[[bytes], bytes], reason: str
) -> None:
    key = b"\x00\xffkey"
    blob = storage.seal("flows", key, b"x" * 100)
    with pytest.raises(CorruptRecordError) as raised:
        storage.unseal("flows", key, tamper(blob))
    assert raised.value.reason == reason
    assert str(raised.value) == (
        f"corrupt record in database 'flows' at key 00ff6b6579: {reason}; "
        "the record was not decoded"
    )


def test_record_moved_to_another_key_or_database_is_rejected(storage: NodeStorage) -> None:
    blob = storage.seal("journal", journal_key(RUN_A, 1), b"payload")
    for db_name, key in [("journal", journal_key(RUN_A, 2)), ("snapshots", journal_key(RUN_A, 1))]:
        with pytest.raises(CorruptRecordError, match="authentication failed") as raised:
            storage.unseal(db_name, key, blob)
        assert raised.value.db_name == db_name and raised.value.key == key


def test_record_sealed_by_another_node_is_rejected(tmp_path: Path) -> None:
    with NodeStorage.open(tmp_path / "a") as a, NodeStorage.open(tmp_path / "b") as b:
        blob = a.seal("flows", b"k", b"payload")
        with pytest.raises(CorruptRecordError, match="written by another node"):
            b.unseal("flows", b"k", blob)


# -- group commit ------------------------------------------------------------------------------


def test_failing_step_aborts_only_its_own_writes(storage: NodeStorage) -> None:
    def failing(txn: Txn) -> None:
        storage.put(txn, "flows", b"b", b"2")
        storage.put(txn, "journal", b"b", b"2")
        raise ValueError("step failed")

    with storage.group() as group:
        first = group.step(lambda txn: storage.put(txn, "flows", b"a", b"1"))
        second = group.step(failing)
        third = group.step(lambda txn: storage.put(txn, "journal", b"c", b"3"))

    assert first is None and third is None
    assert isinstance(second, ValueError) and str(second) == "step failed"
    assert read(storage, "flows", b"a") == b"1"
    assert read(storage, "journal", b"c") == b"3"
    assert read(storage, "flows", b"b") is None
    assert read(storage, "journal", b"b") is None


def test_later_steps_see_earlier_steps_writes(storage: NodeStorage) -> None:
    seen: list[bytes | None] = []
    with storage.group() as group:
        group.step(lambda txn: storage.put(txn, "meta", b"k", b"v"))
        group.step(lambda txn: seen.append(storage.get(txn, "meta", b"k")))
    assert seen == [b"v"]


def test_after_commit_callbacks_run_after_commit_in_order(storage: NodeStorage) -> None:
    events: list[str] = []
    with storage.group() as group:
        group.step(lambda txn: storage.put(txn, "outbox", b"m", b"msg"))
        group.after_commit(lambda: events.append(f"first saw {read(storage, 'outbox', b'm')!r}"))
        group.after_commit(lambda: events.append("second"))
        events.append("body done")
    assert events == ["body done", "first saw b'msg'", "second"]


def test_callbacks_registered_by_a_failed_step_are_dropped(storage: NodeStorage) -> None:
    events: list[str] = []

    def failing(txn: Txn) -> None:
        group.after_commit(lambda: events.append("from failed step"))
        raise ValueError

    with storage.group() as group:
        group.step(lambda txn: group.after_commit(lambda: events.append("from good step")))
        group.step(failing)
    assert events == ["from good step"]


def test_error_in_group_body_rolls_back_everything_and_runs_no_callback(
    storage: NodeStorage,
) -> None:
    events: list[str] = []
    with pytest.raises(KeyError), storage.group() as group:
        group.step(lambda txn: storage.put(txn, "flows", b"a", b"1"))
        group.after_commit(lambda: events.append("ran"))
        raise KeyError("scheduler bug")
    assert events == []
    assert read(storage, "flows", b"a") is None
    write(storage, "flows", b"a", b"after")  # the write lock was released
    assert read(storage, "flows", b"a") == b"after"


class _FailingCommitTxn:
    def __init__(self) -> None:
        self.aborted = False

    def commit(self) -> None:
        raise OSError("disk full")

    def abort(self) -> None:
        self.aborted = True


class _FailingCommitEnv:
    def __init__(self) -> None:
        self.txn = _FailingCommitTxn()

    def begin(self, write: bool = False, parent: object = None) -> _FailingCommitTxn:
        assert write and parent is None
        return self.txn


def test_failed_commit_propagates_and_runs_no_callback() -> None:
    env = _FailingCommitEnv()
    storage = NodeStorage(env, Path("unused"), b"\x00" * 32)  # type: ignore[arg-type]
    events: list[str] = []
    with pytest.raises(OSError, match="disk full"), storage.group() as group:
        group.after_commit(lambda: events.append("ran"))
    assert events == []
    assert env.txn.aborted


def test_all_callbacks_run_even_if_one_fails(storage: NodeStorage) -> None:
    events: list[str] = []

    def boom() -> None:
        raise RuntimeError("send failed")

    with pytest.raises(RuntimeError, match="send failed"), storage.group() as group:
        group.after_commit(boom)
        group.after_commit(lambda: events.append("second ran"))
    assert events == ["second ran"]


def test_groups_and_steps_do_not_nest(storage: NodeStorage) -> None:
    with storage.group() as group:
        with pytest.raises(RuntimeError, match="groups do not nest"), storage.group():
            pass
        error = group.step(lambda txn: group.step(lambda inner: None))
        assert isinstance(error, RuntimeError) and "steps do not nest" in str(error)


def test_group_cannot_be_used_after_it_ended(storage: NodeStorage) -> None:
    with storage.group() as group:
        pass
    with pytest.raises(RuntimeError, match="not active"):
        group.step(lambda txn: None)


def test_reads_in_a_read_transaction_see_a_snapshot(storage: NodeStorage) -> None:
    write(storage, "flows", b"k", b"old")
    with storage.read() as txn:
        write(storage, "flows", b"k", b"new")
        assert storage.get(txn, "flows", b"k") == b"old"
    assert read(storage, "flows", b"k") == b"new"


# -- keys and prefix scans ---------------------------------------------------------------------


def test_journal_key_layout() -> None:
    assert journal_key(RUN_A, 258) == RUN_A + b"\x00\x00\x01\x02"
    with pytest.raises(ValueError, match="16 bytes"):
        journal_key(b"short", 0)
    with pytest.raises(ValueError, match="outside"):
        journal_key(RUN_A, 1 << 32)


def test_prefix_scan_returns_journal_records_in_order(storage: NodeStorage) -> None:
    indexes = [300, 2, 0, 256, 1, 65536]
    with storage.group() as group:
        for i in indexes:
            group.step(
                lambda txn, i=i: storage.put(txn, "journal", journal_key(RUN_A, i), b"%d" % i)
            )
        group.step(lambda txn: storage.put(txn, "journal", journal_key(RUN_B, 0), b"other"))
    with storage.read() as txn:
        items = list(storage.prefix_items(txn, "journal", RUN_A))
    assert [key for key, _ in items] == [journal_key(RUN_A, i) for i in sorted(indexes)]
    assert [value for _, value in items] == [b"%d" % i for i in sorted(indexes)]


def test_delete_prefix_removes_only_matching_keys(storage: NodeStorage) -> None:
    with storage.group() as group:
        for key in [journal_key(run, i) for run in (RUN_A, RUN_B) for i in range(5)]:
            group.step(lambda txn, key=key: storage.put(txn, "journal", key, b"v"))
    with storage.group() as group:
        counts: list[int] = []
        group.step(lambda txn: counts.append(storage.delete_prefix(txn, "journal", RUN_A)))
        group.step(lambda txn: counts.append(storage.delete_prefix(txn, "journal", b"\xff")))
    assert counts == [5, 0]
    with storage.read() as txn:
        assert list(storage.prefix_items(txn, "journal", RUN_A)) == []
        assert len(list(storage.prefix_items(txn, "journal", RUN_B))) == 5
        assert len(list(storage.prefix_items(txn, "journal", b""))) == 5


def test_delete_prefix_to_the_end_of_the_database(storage: NodeStorage) -> None:
    with storage.group() as group:
        group.step(lambda txn: [storage.put(txn, "dedup", bytes([i]), b"") for i in range(1, 4)])
        deleted: list[int] = []
        group.step(lambda txn: deleted.append(storage.delete_prefix(txn, "dedup", b"")))
    assert deleted == [3]


def test_delete_reports_whether_the_key_existed(storage: NodeStorage) -> None:
    write(storage, "outbox", b"m", b"1")
    results: list[bool] = []
    with storage.group() as group:
        group.step(lambda txn: results.extend(storage.delete(txn, "outbox", b"m") for _ in "ab"))
    assert results == [True, False]


# -- injected failures (FaultPlan) ----------------------------------------------------------------


def _put(storage: NodeStorage, db_name: str, key: bytes) -> Callable[[Txn], None]:
    return lambda txn: storage.put(txn, db_name, key, b"v")


def test_the_nth_write_fails_alone_and_is_not_stored(storage: NodeStorage) -> None:
    plan = storage.inject_faults(FaultPlan().fail_writes(1))
    assert plan is not None
    with storage.group() as group:
        errors = [group.step(_put(storage, "meta", key)) for key in (b"a", b"b", b"c")]
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], InjectedStorageFault)
    assert "write 1 (put to 'meta')" in str(errors[1])
    assert [read(storage, "meta", k) for k in (b"a", b"b", b"c")] == [b"v", None, b"v"]
    assert (plan.writes, plan.injected) == (3, 1)


def test_a_disarmed_write_number_no_longer_fails_and_others_still_do(
        storage: NodeStorage) -> None:
    plan = storage.inject_faults(FaultPlan().fail_writes(1, 2))
    assert plan is not None
    plan.disarm_write(1)
    plan.disarm_write(7)  # never planned: nothing to disarm, nothing else changes
    with storage.group() as group:
        errors = [group.step(_put(storage, "meta", key)) for key in (b"a", b"b", b"c")]
    assert errors[0] is None and errors[1] is None
    assert isinstance(errors[2], InjectedStorageFault)
    assert "write 2 (put to 'meta')" in str(errors[2])
    assert [read(storage, "meta", k) for k in (b"a", b"b", b"c")] == [b"v", b"v", None]
    assert (plan.writes, plan.injected) == (3, 1)


def test_every_kind_of_write_counts_and_can_fail(storage: NodeStorage) -> None:
    plan = storage.inject_faults(FaultPlan().fail_next_writes(4))
    assert plan is not None
    kinds: list[Callable[[Txn], object]] = [
        lambda txn: storage.put(txn, "meta", b"k", b"v"),
        lambda txn: storage.put_sealed(txn, "flows", b"k", b"v"),
        lambda txn: storage.delete(txn, "meta", b"k"),
        lambda txn: storage.delete_prefix(txn, "journal", b""),
    ]
    with storage.group() as group:
        errors = [group.step(kind) for kind in kinds]
    assert all(isinstance(e, InjectedStorageFault) for e in errors)
    assert plan.writes == 4  # put_sealed is one write, not two


def test_writes_to_one_database_fail(storage: NodeStorage) -> None:
    storage.inject_faults(FaultPlan().fail_writes_to("outbox", 1))
    with storage.group() as group:
        assert group.step(_put(storage, "meta", b"a")) is None
        assert isinstance(group.step(_put(storage, "outbox", b"a")), InjectedStorageFault)
        assert group.step(_put(storage, "outbox", b"b")) is None  # only the next one
    assert read(storage, "outbox", b"a") is None and read(storage, "outbox", b"b") == b"v"


def test_a_failed_group_commit_stores_nothing_and_runs_no_callback(storage: NodeStorage) -> None:
    events: list[str] = []
    storage.inject_faults(FaultPlan().fail_commits(1))
    write(storage, "meta", b"first", b"v")  # commit 0 passes
    with pytest.raises(InjectedStorageFault, match="group commit 1"), storage.group() as group:
        group.step(_put(storage, "meta", b"second"))
        group.after_commit(lambda: events.append("ran"))
    assert events == [] and read(storage, "meta", b"second") is None
    write(storage, "meta", b"third", b"v")  # the write lock was released; commit 2 passes
    assert read(storage, "meta", b"third") == b"v"


def test_random_failures_are_reproducible_and_can_be_disarmed(storage: NodeStorage) -> None:
    def failures(seed: int) -> list[int]:
        plan = FaultPlan().fail_at_random(0.3, seed=seed)
        storage.inject_faults(plan)
        failed = []
        with storage.group() as group:
            for n in range(50):
                if group.step(_put(storage, "meta", b"%d" % n)) is not None:
                    failed.append(n)
        plan.clear()
        with storage.group() as group:
            assert group.step(_put(storage, "meta", b"x")) is None
        storage.inject_faults(None)
        return failed

    first = failures(7)
    assert 5 < len(first) < 30 and failures(7) == first and failures(8) != first


# -- flat group commit (write_each) --------------------------------------------------------------


def test_write_each_commits_every_item_in_one_transaction(storage: NodeStorage) -> None:
    plan = storage.inject_faults(FaultPlan())
    assert plan is not None
    errors = storage.write_each(
        [(b"a", b"1"), (b"b", b"2")],
        lambda txn, item: storage.put(txn, "journal", item[0], item[1]))
    assert errors == [None, None]
    assert plan.commits == 1
    assert read(storage, "journal", b"a") == b"1" and read(storage, "journal", b"b") == b"2"


def test_write_each_isolates_a_failing_item_and_commits_the_others(storage: NodeStorage) -> None:
    """The failing item's earlier writes are rolled back with it; the items before and after
    it commit, each written exactly once in what committed."""
    boom = ValueError("item 1 cannot be stored")

    def write_item(txn: Txn, item: int) -> None:
        storage.put(txn, "journal", b"%d-first" % item, b"x")
        if item == 1:
            raise boom
        storage.put(txn, "journal", b"%d-second" % item, b"y")

    errors = storage.write_each([0, 1, 2], write_item)
    assert errors == [None, boom, None]
    with storage.read() as txn:
        keys = [key for key, _ in storage.prefix_items(txn, "journal", b"")]
    assert keys == [b"0-first", b"0-second", b"2-first", b"2-second"]


def test_write_each_with_an_injected_write_fault_fails_only_that_item(
    storage: NodeStorage,
) -> None:
    storage.inject_faults(FaultPlan().fail_writes_to("snapshots"))
    errors = storage.write_each(
        ["journal", "snapshots", "journal"],
        lambda txn, db: storage.put(txn, db, db.encode() + b"-key", b"v"))
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], InjectedStorageFault)
    assert read(storage, "snapshots", b"snapshots-key") is None
    assert read(storage, "journal", b"journal-key") == b"v"


def test_write_each_whose_commit_fails_stores_nothing(storage: NodeStorage) -> None:
    storage.inject_faults(FaultPlan().fail_next_commits(1))
    with pytest.raises(InjectedStorageFault):
        storage.write_each([b"a"], lambda txn, key: storage.put(txn, "journal", key, b"v"))
    assert read(storage, "journal", b"a") is None
    # The storage is usable afterwards (the writer slot was released).
    assert storage.write_each([b"a"], lambda txn, key: storage.put(txn, "journal", key, b"v")) \
        == [None]
    assert read(storage, "journal", b"a") == b"v"


def test_write_each_lets_a_base_exception_through_and_stores_nothing(
    storage: NodeStorage,
) -> None:
    def interrupt(txn: Txn, key: bytes) -> None:
        storage.put(txn, "journal", key, b"v")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storage.write_each([b"a"], interrupt)
    assert read(storage, "journal", b"a") is None


def test_put_sealed_stores_exactly_what_seal_makes_and_binds_db_and_key(
        storage: NodeStorage) -> None:
    """``put_sealed`` computes its MAC inline (a copied keyed BLAKE2b, a per-database header
    cache of its own): its bytes must be ``seal``'s for every database, key and payload, and
    a record copied to another database or key must not unseal there."""
    cases = [("inbox", b"k", b""), ("outbox", b"\xff", b"p"), ("steps", b"\x00" * 300, b"x" * 5000),
             ("d\u00e9j\u00e0", b"k", b"v"), ("inbox", b"k2", b"v2")]
    for db in {db for db, _, _ in cases}:
        storage.db(db)
    with storage.group() as group:
        for db, key, payload in cases:
            assert group.step(lambda txn, d=db, k=key, p=payload:  # type: ignore[misc]
                              storage.put_sealed(txn, d, k, p)) is None
    with storage.read() as txn:
        for db, key, payload in cases:
            blob = storage.get(txn, db, key)
            assert blob == storage.seal(db, key, payload)
            assert storage.unseal(db, key, blob) == payload
            with pytest.raises(CorruptRecordError):
                storage.unseal("journal", key, blob)
            with pytest.raises(CorruptRecordError):
                storage.unseal(db, key + b"x", blob)
