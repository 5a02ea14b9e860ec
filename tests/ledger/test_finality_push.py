"""Finality as in Corda 4: a node records a finalised transaction only when one of its own
responders asked for it (ReceiveFinalityFlow), never because a peer pushed it."""

from __future__ import annotations

from pathlib import Path

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    UnexpectedFlowEndException,
    initiating_flow,
    suspendable,
)
from fibers._errors import FlowConfigurationError
from ledger import FinalityFlow, ReceiveFinalityFlow, SecureHash, SignedTransaction
from ledger.testing import DummyState
from tests.ledger.test_finality import issued_to, magics, network_of
from tests.ledger.test_flows import build, failure, payloads, run, stored


@initiating_flow
class Push(FlowLogic[SignedTransaction]):
    """A peer's own initiating flow that finalises ``stx``: no node registered a responder."""

    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(FinalityFlow(self.stx))


@initiating_flow
class Deliver(FlowLogic[SignedTransaction]):
    """Finalises ``stx`` towards a responder that expects some transaction."""

    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(FinalityFlow(self.stx))


class Expecting(FlowLogic[SignedTransaction]):
    """A responder that records only the transaction ``expected``."""

    def __init__(self, other: Party, expected: SecureHash) -> None:
        self.other, self.expected = other, expected

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveFinalityFlow(self.other, self.expected))


def test_a_finality_flow_started_by_a_peer_records_nothing_on_the_victim(
        tmp_path: Path) -> None:
    network, [mallory, bob] = network_of(tmp_path, "Mallory", "Bob")
    issued = issued_to(network, mallory, 5)
    gift = build(mallory, [issued.tx.out_ref(0)], [DummyState(bob.party, 5)])
    error = failure(network, mallory, FinalityFlow(gift))
    assert isinstance(error, FlowConfigurationError)
    assert "only flows annotated @initiating_flow" in str(error)
    assert stored(bob, issued, gift) == [False, False]
    assert magics(bob) == [] and len(bob.services.validated_transactions) == 0
    assert bob.flows() == [] and bob.hospital() == []
    network.stop_nodes()


def test_an_unsolicited_push_is_refused_and_records_nothing(tmp_path: Path) -> None:
    network, [mallory, bob] = network_of(tmp_path, "Mallory", "Bob")
    issued = issued_to(network, mallory, 5)
    gift = build(mallory, [issued.tx.out_ref(0)], [DummyState(bob.party, 5)])
    error = failure(network, mallory, Push(gift))
    assert isinstance(error, UnexpectedFlowEndException)
    assert "is not registered" in str(error)
    assert stored(bob, issued, gift) == [False, False]
    assert magics(bob) == [] and len(bob.services.validated_transactions) == 0
    assert bob.services.vault.query(DummyState) == []
    assert payloads(network, sender="Bob") == []  # Bob asked for no history either
    # Refused before notarisation: the pusher's input is not consumed, nothing recorded.
    assert stored(mallory, gift) == [False]
    notary = network.node("Notary")
    assert notary.services.uniqueness.consumed_by(issued.tx.out_ref(0).ref) is None
    network.stop_nodes()


def test_a_responder_refuses_a_transaction_other_than_the_one_it_expects(
        tmp_path: Path) -> None:
    network, [mallory, bob] = network_of(tmp_path, "Mallory", "Bob")
    issued = issued_to(network, mallory, 5, 6)
    expected = build(mallory, [issued.tx.out_ref(0)], [DummyState(bob.party, 5)])
    other = build(mallory, [issued.tx.out_ref(1)], [DummyState(bob.party, 6)])
    bob.register_initiated_flow(Deliver, lambda party: Expecting(party, expected.id))
    error = failure(network, mallory, Deliver(other))
    assert isinstance(error, FlowException)
    assert f"sent transaction {other.id}, but Bob expects transaction {expected.id}" in str(
        error)
    assert stored(bob, issued, other) == [False, False]  # refused before resolving
    assert payloads(network, sender="Bob") == [] and magics(bob) == []
    network.stop_nodes()


def test_a_responder_records_the_transaction_it_expects_and_only_its_states(
        tmp_path: Path) -> None:
    network, [alice, bob, charlie] = network_of(tmp_path, "Alice", "Bob", "Charlie")
    issued = issued_to(network, alice, 9)
    pay = build(alice, [issued.tx.out_ref(0)],
                [DummyState(bob.party, 5), DummyState(charlie.party, 4)])
    for node in (bob, charlie):
        node.register_initiated_flow(Deliver, lambda party: Expecting(party, pay.id))
    final = run(network, alice, Deliver(pay))
    assert stored(bob, issued, final) == [True, True]
    assert magics(bob) == [5] and magics(charlie) == [4]
    network.stop_nodes()
