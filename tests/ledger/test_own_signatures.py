"""The signatures a node made itself are remembered by its key management: per node, stored,
surviving a restart (issue 15; they used to live in a module-level dictionary)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from fibers import FlowLogic, suspendable
from fibers._node import Node
from fibers._storage import TamperedDatabaseError
from ledger import DigitalSignature, SecureHash
from ledger._keys import OWN_SIGNATURES_KEPT
from ledger._tx_flows import _own_signatures_over, remember_own_signatures
from ledger.testing import MockNetwork

TX = SecureHash.sha256(b"tx")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    network = MockNetwork(tmp_path / "network")
    network.create_node("Alice")
    network.create_node("Bob")
    try:
        yield network
    finally:
        network.stop_nodes()


class Remember(FlowLogic[DigitalSignature]):
    """Sign ``tx_id`` with this node's key and remember it, along with ``others``."""

    def __init__(self, tx_id: SecureHash, others: tuple[DigitalSignature, ...] = ()) -> None:
        self.tx_id, self.others = tx_id, others

    @suspendable
    def call(self) -> DigitalSignature:
        sig = self.service_hub.key_management.sign(self.tx_id.bytes,
                                                   self.our_identity.owning_key)
        remember_own_signatures(self, self.tx_id, [sig, *self.others])
        return sig


class Lookup(FlowLogic[frozenset[DigitalSignature]]):
    def __init__(self, tx_id: SecureHash, forget: bool = False) -> None:
        self.tx_id, self.forget = tx_id, forget

    @suspendable
    def call(self) -> frozenset[DigitalSignature]:
        return _own_signatures_over(self, self.tx_id, forget=self.forget)


def run(node: Node, flow: FlowLogic[object]) -> object:
    return node.start_flow(flow).result.result(timeout=0)


def test_own_signatures_are_per_node_and_survive_a_restart(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    bobs = run(bob, Remember(SecureHash.sha256(b"other")))
    assert isinstance(bobs, DigitalSignature)
    sig = run(alice, Remember(TX, (bobs,)))  # Bob's signature is not Alice's to remember
    assert run(alice, Lookup(TX)) == {sig}
    assert run(bob, Lookup(TX)) == frozenset()
    alice = network.restart_node(alice)
    assert run(alice, Lookup(TX)) == {sig}
    assert run(alice, Lookup(TX, forget=True)) == {sig}
    assert run(alice, Lookup(TX)) == frozenset()
    alice = network.restart_node(alice)
    assert run(alice, Lookup(TX)) == frozenset()


def test_only_the_most_recent_transactions_are_remembered(network: MockNetwork) -> None:
    alice = network.node("Alice")
    keys = alice.services.key_management
    ids = [SecureHash.sha256(b"%d" % i) for i in range(OWN_SIGNATURES_KEPT + 2)]
    for tx_id in ids:
        keys.remember_signatures(tx_id, [keys.sign(tx_id.bytes, alice.party.owning_key)])
    keys.remember_signatures(ids[2], [keys.sign(b"again", alice.party.owning_key)])
    newest = SecureHash.sha256(b"newest")
    keys.remember_signatures(newest, [keys.sign(newest.bytes, alice.party.owning_key)])
    alice = network.restart_node(alice)
    keys = alice.services.key_management
    assert keys.own_signatures_over(ids[0]) == frozenset()
    assert keys.own_signatures_over(ids[1]) == frozenset()
    assert len(keys.own_signatures_over(ids[2])) == 2  # refreshed, so kept
    assert keys.own_signatures_over(ids[3]) == frozenset()  # the oldest after the refresh
    assert len(keys.own_signatures_over(ids[4])) == 1
    assert len(keys.own_signatures_over(newest)) == 1


def test_a_planted_record_is_refused_at_start(network: MockNetwork) -> None:
    alice = network.node("Alice")
    storage = alice.storage
    assert storage is not None
    run(alice, Remember(TX))
    with storage.read() as txn:
        blob = storage.get(txn, "own_signatures", TX.bytes)
    assert blob is not None
    other = SecureHash.sha256(b"planted")
    network.stop_node(alice)
    env = lmdb.open(str(network.base_dir / "Alice" / "node.lmdb"), max_dbs=32)
    db = env.open_db(b"own_signatures")
    with env.begin(write=True) as txn:
        txn.put(other.bytes, blob, db=db)  # a valid record moved to another transaction
    env.close()
    with pytest.raises(TamperedDatabaseError, match="'own_signatures'"):
        network.restart_node(alice)
