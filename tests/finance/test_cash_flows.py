"""CashIssueFlow, CashPaymentFlow, CashExitFlow and CommercialPaperIssueFlow on a MockNetwork."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fibers import FlowLogic
from fibers._annotations import is_startable_by_rpc
from fibers._node import Node
from finance import (
    Amount,
    Cash,
    CashExitFlow,
    CashIssueFlow,
    CashPaymentFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    InsufficientBalanceException,
    Issued,
    dollars,
    euros,
)
from ledger import SignedTransaction
from ledger.testing import MockNetwork

R = TypeVar("R")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    network = MockNetwork(tmp_path / "network")
    network.create_notary_node("Notary")
    network.create_node("Alice")
    network.create_node("Bob")
    yield network
    network.stop_nodes()


def run(network: MockNetwork, node: Node, flow: FlowLogic[R]) -> R:
    handle = node.start_flow(flow)
    network.run_network()
    return handle.result.result(timeout=0)


def failure(network: MockNetwork, node: Node, flow: FlowLogic[Any]) -> BaseException:
    handle = node.start_flow(flow)
    network.run_network()
    error = handle.result.exception(timeout=0)
    assert error is not None, "the flow was expected to fail"
    return error


def cash(node: Node) -> list[tuple[str, str, str]]:
    """(amount, issuer, owner) of each cash state in ``node``'s vault, sorted."""
    return sorted((str(s.state.data.amount.without_issuer()), s.state.data.amount.token.issuer.name,
                   s.state.data.owner.name) for s in node.services.vault.query(Cash.State))


def issue(network: MockNetwork, node: Node, text: str, ref: bytes = b"\x01") -> SignedTransaction:
    return run(network, node, CashIssueFlow(Amount.parse(text), ref, network.notary))


def no_flows_or_locks(*nodes: Node) -> bool:
    return all(node.flows() == [] and not node.services.vault._locks for node in nodes)


def test_issue_creates_cash_owed_and_owned_by_the_node(network: MockNetwork) -> None:
    alice = network.node("Alice")
    stx = issue(network, alice, "1,000.00 USD", b"\x07")
    [state] = alice.services.vault.query(Cash.State)
    assert state.state.data == Cash.State(
        dollars(1000).issued_by(alice.party, b"\x07"), alice.party)
    assert state.ref.txhash == stx.id and state.state.notary == network.notary
    assert network.transcript == []  # no inputs, no time window: nothing to notarise
    assert stx.id in alice.services.validated_transactions


def test_payment_pays_the_recipient_and_returns_the_change(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "100.00 USD")
    stx = run(network, alice, CashPaymentFlow(dollars(30), bob.party))
    assert cash(alice) == [("70.00 USD", "Alice", "Alice")]
    assert cash(bob) == [("30.00 USD", "Alice", "Bob")]
    assert any(sig.by == network.notary.owning_key for sig in stx.sigs)
    assert bob.services.validated_transactions.get(stx.id) == stx
    assert no_flows_or_locks(alice, bob)


def test_payment_spends_the_fewest_states_of_the_currency_asked(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    for text in ("10.00 USD", "20.00 USD", "50.00 USD", "500.00 EUR"):
        issue(network, alice, text)
    stx = run(network, alice, CashPaymentFlow(dollars(60), bob.party))
    assert len(stx.tx.inputs) == 2  # 50 + 20, largest first; the euros are untouched
    assert cash(alice) == [("10.00 USD", "Alice", "Alice"), ("10.00 USD", "Alice", "Alice"),
                           ("500.00 EUR", "Alice", "Alice")]
    assert cash(bob) == [("60.00 USD", "Alice", "Bob")]


def test_an_issued_amount_is_paid_only_in_that_token(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "100.00 USD", b"\x01")
    issue(network, alice, "100.00 USD", b"\x02")
    token = Issued(alice.party, b"\x02", "USD")
    run(network, alice, CashPaymentFlow(Amount(6000, token), bob.party))
    error = failure(network, alice, CashPaymentFlow(Amount(5000, token), bob.party))
    assert isinstance(error, InsufficientBalanceException)
    assert error.available == Amount(4000, token)  # the other reference's 100.00 do not count
    assert [s.state.data.amount.token.reference for s in bob.services.vault.query(Cash.State)] == [
        b"\x02"]


def test_paying_more_than_held_names_the_amounts_needed_and_available(
        network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "60.00 USD")
    issue(network, alice, "40.00 USD")
    error = failure(network, alice, CashPaymentFlow(dollars(150), bob.party))
    assert isinstance(error, InsufficientBalanceException)
    assert (error.needed, error.available) == (dollars(150), dollars(100))
    assert "150.00 USD needed" in str(error) and "100.00 USD available" in str(error)
    assert cash(alice) == [("40.00 USD", "Alice", "Alice"), ("60.00 USD", "Alice", "Alice")]
    assert cash(bob) == [] and no_flows_or_locks(alice)


def test_paying_zero_is_refused_before_the_flow_starts(network: MockNetwork) -> None:
    with pytest.raises(ValueError, match=r"cannot pay 0\.00 USD: the amount must be positive"):
        CashPaymentFlow(dollars(0), network.party("Bob"))
    with pytest.raises(TypeError, match="cannot pay"):
        CashPaymentFlow(1000, network.party("Bob"))  # type: ignore[arg-type]


def test_cash_soft_locked_by_a_running_payment_is_not_spent_twice(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "100.00 USD")
    first = alice.start_flow(CashPaymentFlow(dollars(60), bob.party))
    assert alice.services.vault.soft_locked(first.id)  # waiting for the notary, states held
    second = alice.start_flow(CashPaymentFlow(dollars(60), bob.party))
    network.run_network()
    first.result.result(timeout=0)
    error = second.result.exception(timeout=0)
    assert isinstance(error, InsufficientBalanceException)
    assert error.available == dollars(0)
    assert cash(bob) == [("60.00 USD", "Alice", "Bob")] and no_flows_or_locks(alice)


def test_exit_takes_the_issuers_own_cash_off_the_ledger(network: MockNetwork) -> None:
    alice = network.node("Alice")
    issue(network, alice, "100.00 USD", b"\x01")
    issue(network, alice, "30.00 USD", b"\x02")
    stx = run(network, alice, CashExitFlow(dollars(40), b"\x01"))
    [exit_command] = [c.value for c in stx.tx.commands if isinstance(c.value, Cash.Exit)]
    assert exit_command == Cash.Exit(dollars(40).issued_by(alice.party, b"\x01"))
    assert cash(alice) == [("30.00 USD", "Alice", "Alice"), ("60.00 USD", "Alice", "Alice")]
    error = failure(network, alice, CashExitFlow(dollars(61), b"\x01"))
    assert isinstance(error, InsufficientBalanceException)
    assert error.available == dollars(60).issued_by(alice.party, b"\x01")
    with pytest.raises(ValueError, match="must be positive"):
        CashExitFlow(dollars(0), b"\x01")


def test_exit_refuses_cash_issued_by_someone_else(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "100.00 USD")
    run(network, alice, CashPaymentFlow(dollars(100), bob.party))
    error = failure(network, bob, CashExitFlow(dollars(10), b"\x01"))
    assert isinstance(error, InsufficientBalanceException)
    assert cash(bob) == [("100.00 USD", "Alice", "Bob")]


def test_commercial_paper_issue_is_notarised_within_a_window_before_maturity(
        network: MockNetwork) -> None:
    alice = network.node("Alice")
    maturity = network.clock.now() + timedelta(days=30)
    stx = run(network, alice, CommercialPaperIssueFlow(euros(500), maturity, network.notary))
    [paper] = alice.services.vault.query(CommercialPaper.State)
    data = paper.state.data
    assert (data.owner, data.issuance.party, data.maturity) == (alice.party, alice.party, maturity)
    assert data.face_value == euros(500).issued_by(alice.party, b"\x01")
    window = stx.tx.time_window
    assert window is not None and window.until_time is not None
    assert window.until_time <= maturity
    assert any(sig.by == network.notary.owning_key for sig in stx.sigs)


def test_matured_commercial_paper_is_not_issued(network: MockNetwork) -> None:
    alice = network.node("Alice")
    flow = CommercialPaperIssueFlow(euros(5), network.clock.now(), network.notary)
    error = failure(network, alice, flow)
    assert isinstance(error, ValueError) and "already" in str(error)
    assert alice.services.vault.query(CommercialPaper.State) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        CommercialPaperIssueFlow(euros(5), network.clock.now().replace(tzinfo=None),
                                 network.notary)


def test_payment_progress(network: MockNetwork) -> None:
    alice, bob = network.node("Alice"), network.node("Bob")
    issue(network, alice, "5.00 USD")
    handle = alice.start_tracked_flow(CashPaymentFlow(dollars(5), bob.party))
    labels: list[str] = []
    handle.progress.subscribe(labels.append)
    network.run_network()
    handle.result.result(timeout=0)
    ours = [CashPaymentFlow.GENERATING.label, CashPaymentFlow.SIGNING.label,
            CashPaymentFlow.FINALISING.label]
    assert [label for label in labels if label in ours] == ours
    assert "Notarising the transaction" in labels and labels[-1] == "Done"


def test_the_cash_flows_are_startable_by_rpc() -> None:
    for flow in (CashIssueFlow, CashPaymentFlow, CashExitFlow, CommercialPaperIssueFlow):
        assert is_startable_by_rpc(flow), flow
