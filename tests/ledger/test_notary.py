"""NotaryFlow.Client against validating and non-validating notaries: signatures, time windows,
double spends, idempotence, invalid transactions and what a non-validating notary sees."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from fibers import FlowException
from fibers._node import Node
from ledger import (
    DigitalSignature,
    FilteredTransaction,
    NotaryError,
    NotaryException,
    NotaryFlow,
    SignedTransaction,
    TimeWindow,
    TransactionBuilder,
)
from ledger._notary_flows import NotarisationRequest
from ledger.testing import DummyContract, DummyState, MockNetwork, issue_for_test, sign_for_test
from tests.ledger.test_flows import build, failure, payloads, record, run

VALIDATING = [True, False]


def network_with(tmp_path: Path, validating: bool) -> tuple[MockNetwork, Node, Node, Node]:
    network = MockNetwork(tmp_path / "network")
    notary = network.create_notary_node("Notary", validating=validating)
    return network, network.create_node("Alice"), network.create_node("Bob"), notary


def notarised(network: MockNetwork, node: Node, stx: SignedTransaction) -> DigitalSignature:
    [signature] = run(network, node, NotaryFlow.Client(stx))
    return signature


def refusal(network: MockNetwork, node: Node, stx: SignedTransaction) -> NotaryError:
    error = failure(network, node, NotaryFlow.Client(stx))
    assert isinstance(error, NotaryException), error
    assert error.error.tx_id == stx.id
    return error.error


def alice_pays_bob(alice: Node, bob: Node, magic: int = 5, *,
                   window: TimeWindow | None = None) -> SignedTransaction:
    """Issue ``magic`` to Alice (recorded there) and a move of it to Bob, signed by Alice."""
    issued = issue_for_test(alice, DummyState(alice.party, magic))
    return build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, magic)], window=window)


@pytest.mark.parametrize("validating", VALIDATING)
def test_a_unique_transaction_is_signed(tmp_path: Path, validating: bool) -> None:
    network, alice, bob, notary = network_with(tmp_path, validating)
    stx = alice_pays_bob(alice, bob)
    signature = notarised(network, alice, stx)
    assert signature.by == notary.party.owning_key and signature.is_valid(stx.id.bytes)
    assert notary.services.uniqueness.consumed_by(stx.tx.inputs[0]) == stx.id
    stx.with_additional_signature(signature).verify_signatures()
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_a_transaction_inside_its_time_window_is_signed(tmp_path: Path,
                                                        validating: bool) -> None:
    network, alice, bob, _ = network_with(tmp_path, validating)
    now = network.clock.now()
    window = TimeWindow.between(now - timedelta(minutes=1), now + timedelta(minutes=1))
    stx = alice_pays_bob(alice, bob, window=window)
    assert notarised(network, alice, stx).is_valid(stx.id.bytes)
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_a_transaction_outside_its_time_window_is_refused(tmp_path: Path,
                                                          validating: bool) -> None:
    network, alice, bob, notary = network_with(tmp_path, validating)
    now = network.clock.now()
    window = TimeWindow.from_only(now + timedelta(hours=1))
    stx = alice_pays_bob(alice, bob, window=window)
    error = refusal(network, alice, stx)
    assert isinstance(error, NotaryError.TimeWindowInvalid)
    assert error.time_window == window and error.now == now
    assert notary.services.uniqueness.consumed_by(stx.tx.inputs[0]) is None
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_an_expired_transaction_is_refused_and_a_rebuilt_one_signed(
        tmp_path: Path, validating: bool) -> None:
    network, alice, bob, _ = network_with(tmp_path, validating)
    issued = issue_for_test(alice, DummyState(alice.party, 5))
    spend = [issued.tx.out_ref(0)]
    expiring = build(alice, spend, [DummyState(bob.party, 5)],
                     window=TimeWindow.until_only(network.clock.now() + timedelta(seconds=30)))
    network.advance_time(60)
    error = refusal(network, alice, expiring)
    assert isinstance(error, NotaryError.TimeWindowInvalid)
    assert "build it again with a current time window" in str(error)
    window = TimeWindow.until_only(network.clock.now() + timedelta(seconds=30))
    rebuilt = build(alice, spend, [DummyState(bob.party, 5)], window=window)
    assert notarised(network, alice, rebuilt).is_valid(rebuilt.id.bytes)
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_a_double_spend_is_a_conflict_naming_the_states(tmp_path: Path,
                                                         validating: bool) -> None:
    network, alice, bob, _ = network_with(tmp_path, validating)
    issued = issue_for_test(alice, [DummyState(alice.party, 2), DummyState(alice.party, 3)])
    both = [issued.tx.out_ref(0), issued.tx.out_ref(1)]
    first = build(alice, both, [DummyState(bob.party, 5)])
    second = build(alice, both[1:], [DummyState(alice.party, 3)])
    notarised(network, alice, first)
    error = refusal(network, alice, second)
    assert isinstance(error, NotaryError.Conflict)
    assert error.consumed == {both[1].ref: first.id}
    assert f"input {both[1].ref} was consumed by transaction {first.id}" in str(error)
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_notarising_the_same_transaction_twice_is_idempotent(tmp_path: Path,
                                                             validating: bool) -> None:
    network, alice, bob, _ = network_with(tmp_path, validating)
    stx = alice_pays_bob(alice, bob)
    assert notarised(network, alice, stx) == notarised(network, alice, stx)
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_an_invalid_dependency(tmp_path: Path, validating: bool) -> None:
    network, alice, bob, notary = network_with(tmp_path, validating)
    issued = issue_for_test(alice, DummyState(alice.party, 1))
    # Creates magic from nothing, and is signed by everyone it needs: only contracts catch it.
    forged = sign_for_test(build(alice, [issued.tx.out_ref(0)], [DummyState(alice.party, 1000)]),
                           notary)
    record(network, alice, forged)
    stx = build(alice, [forged.tx.out_ref(0)], [DummyState(bob.party, 1000)])
    if not validating:  # it cannot see the history: that is the participants' business
        assert notarised(network, alice, stx).is_valid(stx.id.bytes)
        return network.stop_nodes()
    error = refusal(network, alice, stx)
    assert isinstance(error, NotaryError.TransactionInvalid)
    assert "a Move conserves magic" in error.reason and str(forged.id) in error.reason
    assert forged.id not in notary.services.validated_transactions
    assert notary.services.uniqueness.consumed_by(stx.tx.inputs[0]) is None
    return network.stop_nodes()


def test_a_validating_notary_names_missing_signatures(tmp_path: Path) -> None:
    network, alice, bob, _ = network_with(tmp_path, True)
    signed = alice_pays_bob(alice, bob)
    error = refusal(network, alice, SignedTransaction(signed.tx, ()))
    assert isinstance(error, NotaryError.TransactionInvalid)
    # Alice owns only an input, which the notary has not resolved yet when it checks: the
    # signatures are checked before the history is downloaded.
    assert f"missing signatures by key {alice.party.owning_key[:4].hex()}" in error.reason
    network.stop_nodes()


@pytest.mark.parametrize("validating", VALIDATING)
def test_a_signature_that_does_not_verify_is_refused(tmp_path: Path, validating: bool) -> None:
    network, alice, bob, _ = network_with(tmp_path, validating)
    signed = alice_pays_bob(alice, bob)
    [good] = signed.sigs
    bad = DigitalSignature(good.by, bytes(64))
    error = refusal(network, alice, SignedTransaction(signed.tx, (bad,)))
    assert isinstance(error, NotaryError.TransactionInvalid)
    assert "does not verify" in error.reason
    network.stop_nodes()


def test_a_non_validating_notary_sees_only_the_filtered_transaction(tmp_path: Path) -> None:
    network, alice, bob, notary = network_with(tmp_path, False)
    stx = alice_pays_bob(alice, bob)
    notarised(network, alice, stx)
    seen = payloads(network, recipient=notary.party.name)
    assert [type(p) for p in seen] == [NotarisationRequest]
    [request] = seen
    assert isinstance(request, NotarisationRequest)
    assert isinstance(request.transaction, FilteredTransaction)
    assert request.transaction.revealed_groups == {"inputs", "notary", "time_window"}
    assert request.transaction.id == stx.id and request.signatures == stx.sigs
    with pytest.raises(LookupError):
        request.transaction.outputs  # noqa: B018
    network.stop_nodes()


def test_a_validating_notary_gets_the_transaction_and_its_history(tmp_path: Path) -> None:
    network, alice, bob, notary = network_with(tmp_path, True)
    stx = alice_pays_bob(alice, bob)
    notarised(network, alice, stx)
    assert any(isinstance(p, SignedTransaction) and p.id == stx.id
               for p in payloads(network, recipient=notary.party.name))
    issued = stx.tx.inputs[0].txhash
    assert issued in notary.services.validated_transactions
    assert stx.id not in notary.services.validated_transactions
    network.stop_nodes()


def test_a_node_that_is_not_a_notary_refuses(tmp_path: Path) -> None:
    network, alice, bob, _ = network_with(tmp_path, True)
    issued = issue_for_test(alice, DummyState(alice.party, 5), notary=bob.party)
    stx = build(alice, [issued.tx.out_ref(0)], [DummyState(bob.party, 5)])
    error = refusal(network, alice, stx)
    assert isinstance(error, NotaryError.TransactionInvalid)
    assert error.reason == "Bob is not a notary"
    network.stop_nodes()


def test_a_transaction_without_a_notary_cannot_be_notarised(tmp_path: Path) -> None:
    network, alice, _, _ = network_with(tmp_path, True)
    builder = TransactionBuilder().add_output_state(
        DummyState(alice.party, 1), DummyContract, notary=network.notary)
    stx = builder.add_command(DummyContract.Issue(), alice.party.owning_key).sign_with()
    error = failure(network, alice, NotaryFlow.Client(stx))
    assert type(error) is FlowException and "names no notary" in str(error)
    network.stop_nodes()
