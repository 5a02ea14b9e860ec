"""Finality survives a crash of the notary, the sender or the receiver at every message boundary:
afterwards storage, vaults and the notary agree and nothing is recorded twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import (
    FlowHandle,
    FlowLogic,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._node import Node
from ledger import ReceiveTransactionFlow, SendTransactionFlow, SignedTransaction
from ledger.testing import DummyState, MockNetwork
from tests.ledger.test_flows import (
    Pay,
    SelfIssue,
    chain,
    ledger_network,
    record,
    run,
    stored,
)


def _setup(base: Path) -> tuple[MockNetwork, SignedTransaction]:
    network = MockNetwork(base)
    network.create_notary_node("Notary")
    network.create_node("Alice")
    network.create_node("Bob")
    issued = run(network, network.node("Alice"), SelfIssue(network.notary, 5))
    return network, issued


def _pay(network: MockNetwork, issued: SignedTransaction) -> FlowHandle[SignedTransaction]:
    bob = network.party("Bob")
    return network.node("Alice").start_flow(Pay([issued.tx.out_ref(0)], [(bob, 5)]))


def _message_count(base: Path) -> int:
    network, issued = _setup(base)
    handle = _pay(network, issued)
    count = network.run_network()
    assert handle.result.done()
    network.stop_nodes()
    return count


def _assert_consistent(network: MockNetwork, issued: SignedTransaction,
                       paid: SignedTransaction, where: str) -> None:
    alice, bob, notary = (network.node(name) for name in ("Alice", "Bob", "Notary"))
    for node in (alice, bob, notary):
        assert node.flows() == [] and node.hospital() == [], (where, node.party)
    expected = {alice: [issued.id, paid.id], bob: [issued.id, paid.id], notary: [issued.id]}
    for node, ids in expected.items():
        recorded = [stx.id for stx in node.services.validated_transactions.all()]
        assert recorded == ids, (where, node.party)
    assert bob.services.validated_transactions.get(paid.id) == paid, where
    assert _vault(alice) == [] and _vault(bob) == [(bob.party.name, 5)], where
    assert notary.services.uniqueness.consumed_by(issued.tx.out_ref(0).ref) == paid.id, where


def _vault(node: Node) -> list[tuple[str, int]]:
    return [(sar.state.data.owner.name, sar.state.data.magic)
            for sar in node.services.vault.query(DummyState)]


@pytest.mark.parametrize("victim", ["Notary", "Alice", "Bob"])
def test_finality_survives_a_restart_at_every_message(tmp_path: Path, victim: str) -> None:
    count = _message_count(tmp_path / "reference")
    assert count > 10  # notarisation, resolution and broadcast all happened
    for after in range(count + 1):
        where = f"{victim} restarted after {after} of {count} messages"
        network, issued = _setup(tmp_path / f"run-{after}")
        handle = _pay(network, issued)
        network.run_network(max_messages=after)
        restarted = network.restart_node(network.node(victim))
        if victim == "Alice" and not handle.result.done():
            handle = restarted.handle(handle.id)
        network.run_network()
        paid = handle.result.result(timeout=0)
        _assert_consistent(network, issued, paid, where)
        network.stop_nodes()


def test_finality_survives_restarting_everyone_twice(tmp_path: Path) -> None:
    network, issued = _setup(tmp_path / "network")
    handle = _pay(network, issued)
    for _ in range(2):
        network.run_network(max_messages=3)
        for name in ("Notary", "Alice", "Bob"):
            restarted = network.restart_node(network.node(name))
            if name == "Alice" and not handle.result.done():
                handle = restarted.handle(handle.id)
    network.run_network()
    _assert_consistent(network, issued, handle.result.result(timeout=0), "twice")
    network.stop_nodes()


@initiating_flow
class SendThenGreet(FlowLogic[None]):
    def __init__(self, other: Party, stx: SignedTransaction) -> None:
        self.other, self.stx = other, stx

    @suspendable
    def call(self) -> None:
        self.sub_flow(SendTransactionFlow(self.other, self.stx))
        self.send(self.other, "bye")


@initiated_by(SendThenGreet)
class ReceiveThenListen(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.sub_flow(ReceiveTransactionFlow(self.other))
        return self.receive(self.other, str).unwrap(str)


def test_a_receiver_restored_after_recording_replays_its_resolution(tmp_path: Path) -> None:
    # Bob records the history and then waits: replay must fetch what it fetched live, although
    # the transactions are in its storage by then.
    txs = chain(3)
    for after in range(12):
        network = ledger_network(tmp_path / f"run-{after}", "Alice", "Bob")
        alice = network.node("Alice")
        record(network, alice, *txs)
        handle = alice.start_flow(SendThenGreet(network.party("Bob"), txs[2]))
        network.run_network(max_messages=after)
        network.restart_node(network.node("Bob"))
        network.run_network()
        handle.result.result(timeout=0)
        bob = network.node("Bob")
        assert bob.flows() == [] and bob.hospital() == [], f"restart after {after}"
        assert stored(bob, *txs) == [True] * 3
        assert len(bob.services.validated_transactions) == 3
        network.stop_nodes()


def test_a_fresh_ledger_network_on_the_same_directory_finishes_a_payment(
    tmp_path: Path,
) -> None:
    """The whole network stops mid-payment; a new MockNetwork on the same directory re-creates
    the notary and both parties with their keys, and the payment completes."""
    network, issued = _setup(tmp_path / "network")
    parties = [network.party(name) for name in ("Notary", "Alice", "Bob")]
    handle = _pay(network, issued)
    network.run_network(max_messages=4)
    network.stop_nodes()

    again = MockNetwork(tmp_path / "network")
    for name in ("Bob", "Alice"):  # Alice's peers come back after her, in any order
        again.create_node(name)
    again.create_notary_node("Notary")
    assert [again.party(name) for name in ("Notary", "Alice", "Bob")] == parties
    if handle.id in [f.run_id for f in again.node("Alice").flows()]:
        handle = again.node("Alice").handle(handle.id)
    again.run_network()
    paid = handle.result.result(timeout=0)
    _assert_consistent(again, issued, paid, "fresh network")
    again.stop_nodes()
