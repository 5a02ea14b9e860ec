"""Someone with the node's disk deletes or rolls back ledger records: the node refuses to start
(issue 15). Without the check, a notary whose record of a consumed state was deleted signs a
double spend of it."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from fibers._node import Node
from fibers._storage import TamperedDatabaseError
from ledger import NotaryFlow, SignedTransaction
from ledger._services import ref_key
from ledger.testing import DummyState, MockNetwork, issue_for_test
from tests.ledger._helpers import read_record
from tests.ledger.test_flows import build, run


def delete_record(network: MockNetwork, node: Node, db_name: str, key: bytes) -> None:
    """Stop ``node`` and delete ``key`` from its database ``db_name`` with LMDB directly."""
    network.stop_node(node)
    env = lmdb.open(str(network.base_dir / node.party.name / "node.lmdb"), max_dbs=32)
    try:
        db = env.open_db(db_name.encode())
        with env.begin(write=True) as txn:
            assert txn.delete(key, db=db)
    finally:
        env.close()


def put_record(network: MockNetwork, node: Node, db_name: str, key: bytes,
               value: bytes) -> None:
    """Stop ``node`` and put ``value`` at ``key`` in its database ``db_name`` directly."""
    network.stop_node(node)
    env = lmdb.open(str(network.base_dir / node.party.name / "node.lmdb"), max_dbs=32)
    try:
        db = env.open_db(db_name.encode())
        with env.begin(write=True) as txn:
            txn.put(key, value, db=db)
    finally:
        env.close()


@pytest.fixture
def network(tmp_path: Path) -> MockNetwork:
    network = MockNetwork(tmp_path / "network")
    network.create_notary_node("Notary", validating=False)
    network.create_node("Alice")
    network.create_node("Bob")
    return network


def spend(network: MockNetwork) -> tuple[SignedTransaction, SignedTransaction]:
    """Alice's state, notarised as spent to Bob; and a second spend of it, not notarised."""
    alice, bob = network.node("Alice"), network.node("Bob")
    issued = issue_for_test(alice, DummyState(alice.party, 5))
    first = build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, 5)])
    second = build(alice, [issued.tx.out_ref(0)], [DummyState(alice.party, 5)], salt=b"\x07" * 32)
    run(network, alice, NotaryFlow.Client(first))
    return first, second


def test_a_deleted_notary_record_stops_the_notary_from_starting(network: MockNetwork) -> None:
    first, _ = spend(network)
    notary = network.node("Notary")
    delete_record(network, notary, "notary_commits", ref_key(first.tx.inputs[0]))
    with pytest.raises(TamperedDatabaseError, match="database 'notary_commits' was tampered "
                                                    "with") as caught:
        network.restart_node(notary)
    assert caught.value.db_name == "notary_commits"
    network.stop_nodes()


def test_an_untouched_notary_restarts_and_still_refuses_the_double_spend(
    network: MockNetwork,
) -> None:
    _, second = spend(network)
    network.restart_node(network.node("Notary"))
    handle = network.node("Alice").start_flow(NotaryFlow.Client(second))
    network.run_network()
    assert "double spend" in str(handle.result.exception(timeout=0))
    network.stop_nodes()


def test_a_vault_state_put_back_among_the_unspent_stops_the_node(
    network: MockNetwork,
) -> None:
    alice = network.node("Alice")
    issued = issue_for_test(alice, DummyState(alice.party, 5))
    key = ref_key(issued.tx.out_ref(0).ref)
    unspent = read_record(alice, "vault_states", key)
    moved = build(alice, [issued.tx.out_ref(0)], [DummyState(network.party("Bob"), 5)])
    signed = moved.with_additional_signatures(run(network, alice, NotaryFlow.Client(moved)))
    alice.services.validated_transactions.record(signed)
    # Put the state back among the unspent ones, with its own valid seal.
    put_record(network, alice, "vault_states", key, unspent)
    with pytest.raises(TamperedDatabaseError, match="'vault_states'"):
        network.restart_node(alice)
    delete_record(network, network.node("Notary"), "notary_commits",
                  ref_key(moved.tx.inputs[0]))
    with pytest.raises(TamperedDatabaseError, match="'notary_commits'"):
        network.restart_node(network.node("Notary"))
    network.stop_nodes()


def test_a_deleted_transaction_stops_the_node(network: MockNetwork) -> None:
    alice = network.node("Alice")
    issued = issue_for_test(alice, DummyState(alice.party, 5))
    delete_record(network, alice, "transactions", issued.id.bytes)
    with pytest.raises(TamperedDatabaseError, match="'transactions'"):
        network.restart_node(alice)
    network.stop_nodes()
