"""FinalityFlow: notarise, record, and send to every other participant, who records too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fibers import FlowLogic, suspendable
from fibers._node import Node
from ledger import (
    FinalityFlow,
    NotaryError,
    NotaryException,
    SecureHash,
    SignaturesMissingException,
    SignedTransaction,
    VaultUpdate,
)
from ledger.testing import DummyState, MockNetwork
from tests.ledger.test_flows import (
    Finalise,
    Pay,
    SelfIssue,
    build,
    failure,
    payloads,
    run,
    stored,
)


def network_of(tmp_path: Path, *names: str) -> tuple[MockNetwork, list[Node]]:
    network = MockNetwork(tmp_path / "network")
    network.create_notary_node("Notary")
    return network, [network.create_node(name) for name in names]


def magics(node: Node) -> list[int]:
    return [sar.state.data.magic for sar in node.services.vault.query(DummyState)]


def issued_to(network: MockNetwork, node: Node, *amounts: int) -> SignedTransaction:
    return run(network, node, SelfIssue(network.notary, *amounts))


def test_an_issuance_is_recorded_without_a_notary(tmp_path: Path) -> None:
    network, [alice] = network_of(tmp_path, "Alice")
    stx = issued_to(network, alice, 5)
    assert stored(alice, stx) == [True]
    assert magics(alice) == [5]
    assert network.transcript == []
    network.stop_nodes()


def test_finality_to_one_participant(tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 5)
    stx = run(network, alice, Pay([issued.tx.out_ref(0)], [(bob.party, 5)]))
    stx.verify_signatures()
    assert any(sig.by == network.notary.owning_key for sig in stx.sigs)
    assert stored(alice, issued, stx) == [True, True]
    assert stored(bob, issued, stx) == [True, True]
    assert bob.services.validated_transactions.get(stx.id) == stx
    assert magics(alice) == [] and magics(bob) == [5]
    network.stop_nodes()


def test_finality_to_several_participants_and_extra_recipients(tmp_path: Path) -> None:
    network, nodes = network_of(tmp_path, "Alice", "Bob", "Charlie", "Dave")
    alice, bob, charlie, dave = nodes
    issued = issued_to(network, alice, 10)
    pay = Pay([issued.tx.out_ref(0)], [(charlie.party, 6), (bob.party, 4)], [dave.party])
    stx = run(network, alice, pay)
    for node in nodes:
        assert stored(node, issued, stx) == [True, True], node.party
    assert (magics(alice), magics(bob), magics(charlie), magics(dave)) == ([], [4], [6], [])
    sent_to = [entry.recipient for entry in network.transcript
               if entry.sender == "Alice" and entry.recipient != "Notary"]
    assert list(dict.fromkeys(sent_to)) == ["Bob", "Charlie", "Dave"]
    network.stop_nodes()


def test_vault_query_and_track_after_finality(tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 7)
    alice_updates: list[VaultUpdate] = []
    bob_updates: list[VaultUpdate] = []
    alice.services.vault.track(DummyState).subscribe(alice_updates.append)
    bob.services.vault.track(DummyState).subscribe(bob_updates.append)
    stx = run(network, alice, Pay([issued.tx.out_ref(0)], [(bob.party, 7)]))
    [spent] = alice_updates[-1].consumed
    assert spent.ref == issued.tx.out_ref(0).ref and alice_updates[-1].produced == ()
    [update] = bob_updates
    assert update.consumed == () and [s.ref for s in update.produced] == [stx.tx.out_ref(0).ref]
    [held] = bob.services.vault.query(DummyState)
    assert held.ref == stx.tx.out_ref(0).ref and held.state.data == DummyState(bob.party, 7)
    assert alice.services.vault.query(DummyState) == []
    network.stop_nodes()


def test_progress_of_finality(tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 1)
    stx = build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, 1)])
    handle = alice.start_tracked_flow(Finalise(stx))
    labels: list[str] = []
    handle.progress.subscribe(labels.append)
    network.run_network()
    handle.result.result(timeout=0)
    steps = [FinalityFlow.VERIFYING, FinalityFlow.NOTARISING, FinalityFlow.RECORDING,
             FinalityFlow.BROADCASTING]
    assert [label for label in labels if label in {s.label for s in steps}] == [
        s.label for s in steps]
    assert "Requesting signature by notary service" in labels
    assert labels[-1] == "Done"
    network.stop_nodes()


def test_an_insufficiently_signed_transaction_is_refused_before_anything_is_sent(
        tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 1)
    signed = build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, 1)])
    error = failure(network, alice, Finalise(SignedTransaction(signed.tx, ())))
    assert isinstance(error, SignaturesMissingException)
    assert network.transcript == []
    assert stored(alice, signed) == [False]
    network.stop_nodes()


def test_a_double_spend_is_not_recorded_anywhere(tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 3)
    spend = [issued.tx.out_ref(0)]
    first = run(network, alice, Pay(spend, [(bob.party, 3)]))
    error = failure(network, alice, Pay(spend, [(alice.party, 3)]))
    assert isinstance(error, NotaryException)
    assert isinstance(error.error, NotaryError.Conflict)
    assert error.error.consumed == {spend[0].ref: first.id}
    assert len(alice.services.validated_transactions) == 2
    assert magics(alice) == [] and magics(bob) == [3]
    network.stop_nodes()


class WaitForCommit(FlowLogic[SecureHash]):
    def __init__(self, tx_id: SecureHash) -> None:
        self.tx_id = tx_id

    @suspendable
    def call(self) -> SecureHash:
        stx: Any = self.wait_for_ledger_commit(self.tx_id)
        return stx.id  # type: ignore[no-any-return]


def test_a_participant_waiting_for_the_commit_is_woken(tmp_path: Path) -> None:
    network, [alice, bob] = network_of(tmp_path, "Alice", "Bob")
    issued = issued_to(network, alice, 2)
    stx = build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, 2)])
    waiting = bob.start_flow(WaitForCommit(stx.id))
    assert not waiting.result.done()
    run(network, alice, Finalise(stx))
    assert waiting.result.result(timeout=0) == stx.id
    assert any(isinstance(p, SignedTransaction) for p in payloads(network, recipient="Bob"))
    network.stop_nodes()
