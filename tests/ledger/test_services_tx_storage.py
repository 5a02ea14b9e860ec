"""Transaction storage: recording once, the track feed, persistence, and commits that fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable
from fibers._node import Node
from fibers._storage import CorruptRecordError, Txn
from ledger import SecureHash, SignedTransaction, TransactionBuilder, TransactionStorage
from ledger.testing import (
    DummyContract,
    DummyState,
    MockNetwork,
    issue_for_test,
    record_for_test,
    sign_for_test,
)


def unrecorded_issue(node: Node, *magics: int, notary: Party) -> SignedTransaction:
    """An issuance to ``node``, signed by it but recorded nowhere."""
    builder = TransactionBuilder(notary)
    for magic in magics:
        builder.add_output_state(DummyState(node.party, magic), DummyContract)
    builder.add_command(DummyContract.Issue(), node.party.owning_key)
    return sign_for_test(builder.to_signed_transaction([]), node)


def storage_of(node: Node) -> TransactionStorage:
    storage = node.services.validated_transactions
    assert isinstance(storage, TransactionStorage)
    return storage


def failing_writes(monkeypatch: pytest.MonkeyPatch, node: Node) -> None:
    """Make every service write of ``node`` fail when its step commits."""
    original: Callable[[Callable[[Txn], object]], None] = node.step_write

    def step_write(write: Callable[[Txn], object]) -> None:
        def boom(txn: Txn) -> None:
            raise OSError("simulated: the disk is full")

        original(boom)

    monkeypatch.setattr(node, "step_write", step_write)


class Record(FlowLogic[bool]):
    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx

    @suspendable
    def call(self) -> bool:
        return bool(self.service_hub.validated_transactions.record(self.stx))


@initiating_flow
class RecordThenAsk(FlowLogic[tuple[bool, str]]):
    def __init__(self, stx: SignedTransaction, other: Party) -> None:
        self.stx, self.other = stx, other

    @suspendable
    def call(self) -> tuple[bool, str]:
        recorded = bool(self.service_hub.validated_transactions.record(self.stx))
        return recorded, self.receive(self.other, str).unwrap(str)


@initiated_by(RecordThenAsk)
class Answer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "go on")


class WaitForTransaction(FlowLogic[SecureHash]):
    def __init__(self, tx_id: SecureHash) -> None:
        self.tx_id = tx_id

    @suspendable
    def call(self) -> SecureHash:
        stx = self.wait_for_ledger_commit(self.tx_id)
        assert isinstance(stx, SignedTransaction)
        return stx.id


def test_record_stores_once_and_get_finds_it(network: MockNetwork) -> None:
    alice = network.node("Alice")
    stx = unrecorded_issue(alice, 3, notary=network.notary)
    storage = storage_of(alice)
    assert storage.get(stx.id) is None and stx.id not in storage
    assert storage.record(stx) is True
    assert storage.record(stx) is False
    assert storage.get(stx.id) == stx and stx.id in storage
    assert storage.all() == [stx]


def test_all_lists_transactions_in_recording_order(network: MockNetwork) -> None:
    alice = network.node("Alice")
    recorded = [issue_for_test(alice, DummyState(alice.party, magic)) for magic in range(5)]
    assert storage_of(alice).all() == recorded
    alice = network.restart_node(alice)
    assert storage_of(alice).all() == recorded


def test_track_publishes_each_transaction_once_after_it_is_recorded(
    network: MockNetwork,
) -> None:
    alice = network.node("Alice")
    early = issue_for_test(alice, DummyState(alice.party, 1))
    seen: list[SignedTransaction] = []
    storage_of(alice).track().subscribe(seen.append)
    assert seen == [early]  # a stream replays what it published to a late subscriber
    later = unrecorded_issue(alice, 2, notary=network.notary)
    storage_of(alice).record(later)
    storage_of(alice).record(later)
    assert seen == [early, later]


def test_recorded_transactions_survive_a_restart(network: MockNetwork) -> None:
    alice = network.node("Alice")
    stx = issue_for_test(alice, [DummyState(alice.party, 4), DummyState(alice.party, 5)])
    alice = network.restart_node(alice)
    storage = storage_of(alice)
    assert storage.get(stx.id) == stx
    assert storage.get(stx.id) is not stx  # read back from disk, not carried over
    assert storage.record(stx) is False


def test_a_record_made_by_a_flow_commits_with_its_step(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    stx = unrecorded_issue(alice, 6, notary=network.notary)
    handle = alice.start_flow(Record(stx))
    assert handle.result.result(timeout=0) is True
    alice = network.restart_node(alice)
    assert storage_of(alice).get(stx.id) == stx
    assert storage_of(bob).get(stx.id) is None


def test_a_flow_restored_after_recording_does_not_record_again(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    stx = unrecorded_issue(alice, 6, notary=network.notary)
    handle = alice.start_flow(RecordThenAsk(stx, bob.party))
    alice = network.restart_node(alice)
    restored = alice.handle(handle.id)
    seen: list[SignedTransaction] = []
    storage_of(alice).track().subscribe(seen.append)
    network.run_network()
    # The replay answered record() from the journal: True, as live, and nothing re-published.
    assert restored.result.result(timeout=0) == (True, "go on")
    assert storage_of(alice).all() == [stx]
    assert seen == []


def test_wait_for_ledger_commit_wakes_when_the_transaction_is_recorded(
    network: MockNetwork,
) -> None:
    alice = network.node("Alice")
    stx = unrecorded_issue(alice, 2, notary=network.notary)
    handle = alice.start_flow(WaitForTransaction(stx.id))
    assert not handle.result.done()
    record_for_test(stx, alice)
    assert handle.result.result(timeout=0) == stx.id


def test_a_failed_commit_leaves_memory_as_storage_and_the_retry_records(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    stx = unrecorded_issue(alice, 8, notary=network.notary)
    storage = storage_of(alice)
    published: list[SignedTransaction] = []
    storage.track().subscribe(published.append)
    waiter = alice.start_flow(WaitForTransaction(stx.id))
    failing_writes(monkeypatch, alice)
    handle = alice.start_flow(RecordThenAsk(stx, bob.party))
    # The step was lost: the node reloaded the services, so neither storage nor the vault
    # shows the transaction, nothing was published and the waiting flow still waits.
    assert not handle.result.done()
    assert stx.id not in storage and storage.all() == []
    assert alice.services.vault.query(DummyState) == []
    assert published == [] and not waiter.result.done()
    monkeypatch.undo()
    network.advance_time(1)  # the engine retries the flow from its checkpoint
    retried = alice.handle(handle.id)
    assert storage.all() == [stx] and published == [stx]
    assert waiter.result.result(timeout=0) == stx.id
    assert [s.state.data for s in alice.services.vault.query(DummyState)] == [
        DummyState(alice.party, 8)]
    network.run_network()
    assert retried.result.result(timeout=0) == (True, "go on")


def test_reload_after_a_failed_write_outside_flows_forgets_it(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = network.node("Alice")
    kept = issue_for_test(alice, DummyState(alice.party, 1))
    lost = unrecorded_issue(alice, 2, notary=network.notary)
    failing_writes(monkeypatch, alice)
    storage_of(alice).record(lost)
    monkeypatch.undo()
    for service in alice.services.installed.values():
        reload: Any = getattr(service, "reload_from_storage", None)
        if reload is not None:
            reload()
    assert storage_of(alice).all() == [kept]
    assert [s.ref.txhash for s in alice.services.vault.query(DummyState)] == [kept.id]


def test_a_tampered_record_is_refused_when_loaded(network: MockNetwork) -> None:
    alice = network.node("Alice")
    stx = issue_for_test(alice, DummyState(alice.party, 1))
    storage = alice.storage
    assert storage is not None

    def tamper(txn: Txn) -> None:
        blob = storage.get(txn, "transactions", stx.id.bytes)
        assert blob is not None
        storage.put(txn, "transactions", stx.id.bytes, blob[:-1] + bytes([blob[-1] ^ 1]))

    with storage.group() as group:
        assert group.step(tamper) is None
    with pytest.raises(CorruptRecordError, match="transactions"):
        storage_of(alice).reload_from_storage()


def test_a_node_without_storage_keeps_transactions_in_memory(tmp_path: Path) -> None:
    with MockNetwork(tmp_path / "memory", durable=False) as network:
        network.create_notary_node()
        alice = network.create_node("Alice")
        seen: list[SignedTransaction] = []
        storage_of(alice).track().subscribe(seen.append)
        stx = issue_for_test(alice, DummyState(alice.party, 1))
        assert storage_of(alice).all() == [stx] and seen == [stx]
        handle = alice.start_flow(WaitForTransaction(stx.id))
        assert handle.result.result(timeout=0) == stx.id


def test_record_refuses_what_is_not_a_signed_transaction(network: MockNetwork) -> None:
    stx = unrecorded_issue(network.node("Alice"), 1, notary=network.notary)
    with pytest.raises(TypeError, match="SignedTransaction, got WireTransaction"):
        storage_of(network.node("Alice")).record(stx.tx)  # type: ignore[arg-type]
