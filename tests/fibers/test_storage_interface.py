"""``fibers.storage.Storage`` is a seam: a second implementation plugs into engine and ledger
nodes without touching engine code, every engine database has one writer (the parts named by
``ENGINE_DB_WRITERS``), node services write only their own databases, and failures are
injected through the interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from fibers import Node
from fibers.storage import (
    ENGINE_DB_WRITERS,
    FaultPlan,
    InjectedStorageFault,
    NodeStorage,
    Storage,
    Txn,
    WriteGroup,
)
from fibers.testing import MockNetwork as EngineNetwork
from finance import Amount, Cash, CashIssueFlow, CashPaymentFlow
from ledger import LedgerServiceHub
from ledger.testing import MockNetwork as LedgerNetwork
from tests.fibers.test_durability import Collect

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Write:
    operation: str
    db: str
    writer: str  # the module whose code called the storage


class RecordingStorage:
    """A second ``Storage``: records every write, with the module that made it, and delegates
    to the real one. Written against the interface only (no engine or LMDB name)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.writes: list[Write] = []

    def _record(self, operation: str, db: str) -> None:
        frame = inspect.currentframe()
        assert frame is not None and frame.f_back is not None and frame.f_back.f_back is not None
        self.writes.append(Write(operation, db, frame.f_back.f_back.f_globals["__name__"]))

    base_dir = property(lambda self: self.inner.base_dir)
    secret = property(lambda self: self.inner.secret)
    faults = property(lambda self: self.inner.faults)

    def inject_faults(self, plan: FaultPlan | None) -> FaultPlan | None:
        return self.inner.inject_faults(plan)

    def encryption_key(self, purpose: str) -> bytes:
        return self.inner.encryption_key(purpose)

    def prepare(self, name: str) -> None:
        self.inner.prepare(name)

    def guard(self, name: str) -> None:
        self.inner.guard(name)

    def read(self) -> AbstractContextManager[Txn]:
        return self.inner.read()

    def group(self) -> WriteGroup:
        return self.inner.group()

    def write_each(self, items: list[T], write: Callable[[Txn, T], object]) -> list[
            Exception | None]:
        return self.inner.write_each(items, write)  # write's own writes come back through us

    def put(self, txn: Txn, db_name: str, key: bytes, value: bytes) -> None:
        self._record("put", db_name)
        self.inner.put(txn, db_name, key, value)

    def get(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        return self.inner.get(txn, db_name, key)

    def delete(self, txn: Txn, db_name: str, key: bytes) -> bool:
        self._record("delete", db_name)
        return self.inner.delete(txn, db_name, key)

    def prefix_items(self, txn: Txn, db_name: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.inner.prefix_items(txn, db_name, prefix)

    def delete_prefix(self, txn: Txn, db_name: str, prefix: bytes) -> int:
        self._record("delete_prefix", db_name)
        return self.inner.delete_prefix(txn, db_name, prefix)

    def seal(self, db_name: str, key: bytes, payload: bytes) -> bytes:
        return self.inner.seal(db_name, key, payload)

    def unseal(self, db_name: str, key: bytes, blob: bytes) -> bytes:
        return self.inner.unseal(db_name, key, blob)

    def put_sealed(self, txn: Txn, db_name: str, key: bytes, payload: bytes) -> None:
        self._record("put_sealed", db_name)
        self.inner.put_sealed(txn, db_name, key, payload)

    def get_sealed(self, txn: Txn, db_name: str, key: bytes) -> bytes | None:
        return self.inner.get_sealed(txn, db_name, key)

    def close(self) -> None:
        self.inner.close()


def _recorder() -> tuple[list[RecordingStorage], Callable[[Storage], Storage]]:
    made: list[RecordingStorage] = []

    def wrap(inner: Storage) -> Storage:
        made.append(RecordingStorage(inner))
        return made[-1]

    return made, wrap


LedgerNode = Node[LedgerServiceHub]


def _alice_with_100_usd_and_bob(network: LedgerNetwork) -> tuple[LedgerNode, LedgerNode]:
    """A notary, Alice holding 100.00 USD she issued herself, and Bob."""
    network.create_notary_node("Notary")
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    alice.start_flow(CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", network.notary))
    network.run_network()
    return alice, bob


def _writers(stores: list[RecordingStorage]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for store in stores:
        for write in store.writes:
            found.setdefault(write.db, set()).add(write.writer)
    return found


def _assert_one_writer_per_engine_db(writers: dict[str, set[str]]) -> None:
    for db, modules in writers.items():
        if db in ENGINE_DB_WRITERS:
            assert modules <= ENGINE_DB_WRITERS[db], f"{db} written by {modules}"


def test_node_storage_is_a_storage() -> None:
    storage: type[Storage] = NodeStorage  # mypy checks the structural match
    assert storage is NodeStorage


def test_engine_nodes_run_on_a_wrapped_storage_and_each_engine_db_has_its_writers(
    tmp_path: Path,
) -> None:
    made, wrap = _recorder()
    network = EngineNetwork(tmp_path / "net", wrap_storage=wrap)
    try:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        assert isinstance(alice.storage, RecordingStorage)
        handle = alice.start_flow(Collect(bob.party))
        network.run_network()
        assert handle.result.result(timeout=0) == ["apple", "banana"]
    finally:
        network.stop_nodes()
    writers = _writers(made)
    # the run went through the wrapper: checkpoints, step records, inbox/outbox and dedup records
    assert {"flows", "steps", "outbox", "inbox", "dedup", "meta"} <= set(writers)
    _assert_one_writer_per_engine_db(writers)
    assert writers["flows"] == {"fibers._checkpoint_store"}
    assert writers["dedup"] == {"fibers._dedup"}


def test_a_ledger_node_on_a_wrapped_storage_completes_a_payment_and_services_write_their_own_dbs(
    tmp_path: Path,
) -> None:
    made, wrap = _recorder()
    network = LedgerNetwork(tmp_path / "net", wrap_storage=wrap)
    try:
        alice, bob = _alice_with_100_usd_and_bob(network)
        pay = alice.start_flow(CashPaymentFlow(Amount.parse("30.00 USD"), bob.party))
        network.run_network()
        pay.result.result(timeout=0)
        [bobs] = bob.services.vault.query(Cash.State)
        assert str(bobs.state.data.amount.without_issuer()) == "30.00 USD"
    finally:
        network.stop_nodes()
    writers = _writers(made)
    _assert_one_writer_per_engine_db(writers)
    service_dbs = {db: modules for db, modules in writers.items() if db not in ENGINE_DB_WRITERS}
    assert service_dbs, "the ledger's services wrote nothing through the wrapper"
    for db, modules in service_dbs.items():
        # a service's database is written by that service's module alone, never the engine's
        assert len(modules) == 1 and next(iter(modules)).startswith("ledger."), (db, modules)
    for db, modules in writers.items():
        if db in ENGINE_DB_WRITERS:
            assert all(m.startswith("fibers.") for m in modules), (db, modules)


def test_faults_are_injected_through_the_interface_and_the_payment_still_lands_once(
    tmp_path: Path,
) -> None:
    made, wrap = _recorder()
    network = LedgerNetwork(tmp_path / "net", wrap_storage=wrap)
    try:
        alice, bob = _alice_with_100_usd_and_bob(network)
        storage = alice.storage
        assert isinstance(storage, RecordingStorage)
        plan = storage.inject_faults(FaultPlan().fail_next_writes(1).fail_next_commits(1))
        assert plan is not None and storage.inner.faults is plan
        # the plan acts through the interface: the step's write fails, then the commit
        with pytest.raises(InjectedStorageFault), storage.group() as group:
            error = group.step(lambda txn: storage.put(txn, "scratch", b"k", b"v"))
            assert isinstance(error, InjectedStorageFault)
        pay = alice.start_flow(CashPaymentFlow(Amount.parse("30.00 USD"), bob.party))
        for _ in range(20):
            network.run_network()
            if pay.result.done() and all(n.next_deadline() is None for n in network.nodes):
                break
            network.advance_time(1)
        pay.result.result(timeout=0)
        [bobs] = bob.services.vault.query(Cash.State)
        assert str(bobs.state.data.amount.without_issuer()) == "30.00 USD"
        assert alice.flows() == [] and bob.flows() == []
        assert made[1] is storage and any(w.db == "flows" for w in storage.writes)
    finally:
        network.stop_nodes()
