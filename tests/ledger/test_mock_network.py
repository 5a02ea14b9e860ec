"""``ledger.testing.MockNetwork``: ledger services on every node, notaries, restarts, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fibers import FlowLogic, Party, SerializeAsToken, initiated_by, initiating_flow, suspendable
from fibers.testing import MockNetwork as EngineMockNetwork
from ledger import (
    KeyManagementService,
    LedgerServiceHub,
    TransactionStorage,
    UniquenessProvider,
    VaultService,
    install_ledger_services,
)
from ledger.testing import DummyState, MockNetwork, issue_for_test, spend_for_test


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    network = MockNetwork(tmp_path / "network")
    try:
        yield network
    finally:
        network.stop_nodes()


class Marker(SerializeAsToken):
    """A service that is not the ledger's."""


@initiating_flow
class CountAroundAWait(FlowLogic[tuple[int, int]]):
    """Reads the vault before and after waiting for ``other``: the first read is replayed when
    the node restarts, so the services must be there before restored flows run."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[int, int]:
        before = len(self.service_hub.vault.query(DummyState))
        self.receive(self.other, str)
        return before, len(self.service_hub.vault.query(DummyState))


@initiated_by(CountAroundAWait)
class Reply(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "now")


def test_every_node_has_the_ledger_services(network: MockNetwork) -> None:
    alice = network.create_node("Alice")
    hub = alice.services
    assert isinstance(hub.validated_transactions, TransactionStorage)
    assert isinstance(hub.vault, VaultService)
    assert isinstance(hub.key_management, KeyManagementService)
    assert not hasattr(hub, "uniqueness")
    assert (hub.is_notary, hub.notary_validating) == (False, False)


def test_notary_nodes_are_known_to_every_node(network: MockNetwork) -> None:
    alice = network.create_node("Alice")
    first = network.create_notary_node()
    second = network.create_notary_node("Lazy Notary", validating=False)
    assert network.notary == first.party
    for node in (alice, first, second):
        assert node.services.notary_identities() == [first.party, second.party]
    assert (first.services.is_notary, first.services.notary_validating) == (True, True)
    assert (second.services.is_notary, second.services.notary_validating) == (True, False)
    assert isinstance(second.services.uniqueness, UniquenessProvider)


def test_a_network_without_a_notary_says_how_to_make_one(network: MockNetwork) -> None:
    alice = network.create_node("Alice")
    with pytest.raises(LookupError, match="create_notary_node"):
        _ = network.notary
    with pytest.raises(ValueError, match="create_notary_node"):
        issue_for_test(alice, DummyState(alice.party, 1))


def test_a_name_taken_twice_is_refused_and_forgotten(network: MockNetwork) -> None:
    network.create_node("Alice")
    with pytest.raises(ValueError, match="already exists"):
        network.create_notary_node("Alice")
    alice = network.restart_node(network.node("Alice"))
    assert alice.services.is_notary is False


def test_a_restarted_node_gets_fresh_ledger_services_and_keeps_the_others(
    network: MockNetwork,
) -> None:
    network.create_notary_node()
    alice = network.create_node("Alice")
    marker = Marker()
    alice.services.install("marker", marker)
    issue_for_test(alice, DummyState(alice.party, 1))
    old_vault = alice.services.vault
    restarted = network.restart_node(alice)
    assert restarted.services.vault is not old_vault
    assert restarted.services.get(Marker) is marker
    assert len(restarted.services.vault.query(DummyState)) == 1
    notary = network.restart_node(network.node("Notary"))
    assert notary.services.is_notary and isinstance(notary.services.uniqueness,
                                                    UniquenessProvider)
    assert notary.services.notary_identities() == [notary.party]


def test_restored_flows_find_the_ledger_services_when_they_replay(network: MockNetwork) -> None:
    network.create_notary_node()
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    issue_for_test(alice, DummyState(alice.party, 1))
    handle = alice.start_flow(CountAroundAWait(bob.party))
    alice = network.restart_node(alice)
    alice.wake_hibernated()  # restore is lazy: this replays it (and its first read) now
    restored = alice.handle(handle.id)
    assert alice.hospital() == []
    issue_for_test(alice, DummyState(alice.party, 2))
    network.run_network()
    assert restored.result.result(timeout=0) == (1, 2)


def test_helpers_build_transactions_that_verify(network: MockNetwork) -> None:
    notary = network.create_notary_node()
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    issued = issue_for_test(alice, [DummyState(alice.party, 3), DummyState(alice.party, 4)])
    issued.verify(alice.services.vault.resolve_state)
    moved = spend_for_test(alice, alice.services.vault.query(DummyState),
                           [DummyState(bob.party, 7)], signers=[notary])
    moved.verify(alice.services.vault.resolve_state)
    assert moved.tx.notary == notary.party


def test_ledger_services_need_a_node_built_with_the_ledger_hub(tmp_path: Path) -> None:
    with EngineMockNetwork(tmp_path / "engine") as network:
        node = network.create_node("Alice")
        with pytest.raises(TypeError, match=r"built with a ServiceHub.*hub=LedgerServiceHub"):
            install_ledger_services(node)  # mypy refuses this call as well
        assert node.services.installed == {}


def test_ledger_services_install_on_an_engine_node(tmp_path: Path) -> None:
    with EngineMockNetwork(tmp_path / "engine", hub=LedgerServiceHub) as network:
        node = network.create_node("Notary")
        install_ledger_services(node, notary=True, validating=False)
        assert node.services.notary_identities() == [node.party]
        assert node.services.notary_validating is False
        with pytest.raises(ValueError, match="already has ledger services"):
            install_ledger_services(node)


def test_nodes_without_storage_run_the_ledger_in_memory(tmp_path: Path) -> None:
    with MockNetwork(tmp_path / "memory", durable=False) as network:
        notary = network.create_notary_node()
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        stx = issue_for_test(alice, DummyState(alice.party, 5))
        fresh = alice.services.key_management.fresh_key()
        assert alice.services.key_management.our_keys_in([fresh]) == {fresh}
        spend_for_test(alice, alice.services.vault.query(DummyState),
                       [DummyState(bob.party, 5)], signers=[notary])
        assert alice.services.vault.query(DummyState) == []
        assert alice.services.validated_transactions.get(stx.id) == stx
