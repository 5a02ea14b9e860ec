"""SendTransactionFlow / ReceiveTransactionFlow, and the flows and helpers the other ledger flow
tests share (resolution, notary, finality, properties, restarts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._messages import Data, ExistingSessionMessage, InitialSessionMessage
from fibers._node import Node
from fibers._wire import decode
from ledger import (
    FinalityFlow,
    ReceiveFinalityFlow,
    ReceiveTransactionFlow,
    SecureHash,
    SendTransactionFlow,
    SignaturesMissingException,
    SignedTransaction,
    StateAndRef,
    TimeWindow,
    TransactionBuilder,
)
from ledger._resolution import FetchTransactions
from ledger.testing import DummyContract, DummyState, MockNetwork, sign_for_test
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    NOTARY_KEY,
    issue,
    key_of,
    ledger_network,
    move,
)

R = TypeVar("R")


# ----- running flows on a network -------------------------------------------------------------


def run(network: MockNetwork, node: Node, flow: FlowLogic[R]) -> R:
    """Start ``flow`` on ``node``, deliver every message, and return its result."""
    handle = node.start_flow(flow)
    network.run_network()
    return handle.result.result(timeout=0)


def failure(network: MockNetwork, node: Node, flow: FlowLogic[Any]) -> BaseException:
    """Start ``flow`` on ``node``, deliver every message, and return what it failed with."""
    handle = node.start_flow(flow)
    network.run_network()
    error = handle.result.exception(timeout=0)
    assert error is not None, "the flow was expected to fail"
    return error


def payloads(network: MockNetwork, *, sender: str | None = None,
             recipient: str | None = None) -> list[object]:
    """The decoded payloads of the data messages delivered so far, in order."""
    found: list[object] = []
    for entry in network.transcript:
        if sender not in (None, entry.sender) or recipient not in (None, entry.recipient):
            continue
        message = entry.message
        if isinstance(message, InitialSessionMessage) and message.first_payload is not None:
            found.append(decode(message.first_payload))
        elif isinstance(message, ExistingSessionMessage) and isinstance(message.body, Data):
            found.append(decode(message.body.payload))
    return found


def fetched_ids(network: MockNetwork) -> list[tuple[SecureHash, ...]]:
    """The ids asked for by each FetchTransactions request delivered so far."""
    return [p.tx_ids for p in payloads(network) if isinstance(p, FetchTransactions)]


def stored(node: Node, *txs: SignedTransaction) -> list[bool]:
    """Whether each of ``txs`` is in ``node``'s validated storage."""
    return [tx.id in node.services.validated_transactions for tx in txs]


# ----- transactions built without a network (fixed test keys, see tests.ledger._helpers) ------


def chain(length: int, magic: int = 10) -> list[SignedTransaction]:
    """An issuance to Alice then ``length - 1`` moves back and forth between Alice and Bob."""
    txs = [issue(ALICE, magic)]
    owner = ALICE
    for _ in range(length - 1):
        new_owner = BOB if owner == ALICE else ALICE
        builder = move([txs[-1].tx.out_ref(0)], new_owner)
        txs.append(builder.sign_with(key_of(owner), NOTARY_KEY))
        owner = new_owner
    return txs


def proposal(spent: SignedTransaction) -> SignedTransaction:
    """A move of Alice's output 0 of ``spent`` to Bob, signed by Alice but not the notary."""
    return move([spent.tx.out_ref(0)], BOB).sign_with(ALICE_KEY)


# ----- flows ----------------------------------------------------------------------------------


class Record(FlowLogic[list[bool]]):
    """Record ``txs`` unverified (as if this node had verified them before)."""

    def __init__(self, *txs: SignedTransaction) -> None:
        self.txs = txs

    @suspendable
    def call(self) -> list[bool]:
        return [self.service_hub.validated_transactions.record(tx) for tx in self.txs]


def record(network: MockNetwork, node: Node, *txs: SignedTransaction) -> None:
    """Record ``txs`` on ``node`` in a flow step of its own."""
    run(network, node, Record(*txs))


@initiating_flow
class SendTx(FlowLogic[None]):
    """Send ``stx`` to ``other`` with SendTransactionFlow (responders registered per test)."""

    def __init__(self, other: Party, stx: SignedTransaction) -> None:
        self.other, self.stx = other, stx

    @suspendable
    def call(self) -> None:
        self.sub_flow(SendTransactionFlow(self.other, self.stx))


class ReceiveTx(FlowLogic[SignedTransaction]):
    """ReceiveTransactionFlow as a responder; ``failures`` collects what instances failed with
    (responders have no handle to ask)."""

    failures: ClassVar[list[tuple[str, FlowException]]] = []

    def __init__(self, other: Party, check: bool = True, record: bool | None = None) -> None:
        self.other, self.check, self.record = other, check, record

    @suspendable
    def call(self) -> SignedTransaction:
        try:
            return self.sub_flow(
                ReceiveTransactionFlow(self.other, self.check, record=self.record))
        except FlowException as exc:
            type(self).failures.append((self.our_identity.name, exc))
            raise


def build(node: Node, inputs: Sequence[StateAndRef[Any]], outputs: Iterable[DummyState], *,
          salt: bytes | None = None, window: TimeWindow | None = None) -> SignedTransaction:
    """A DummyContract transaction spending ``inputs`` (Move) or issuing (no inputs), signed
    by ``node`` for every key it holds; not recorded. The notary is the inputs' (or else the
    network's first)."""
    notary = None if inputs else node.services.notary_identities()[0]
    builder = TransactionBuilder(notary, privacy_salt=salt)
    for sar in inputs:
        builder.add_input_state(sar)
    for state in outputs:
        builder.add_output_state(state, DummyContract)
    if inputs:
        owners = {sar.state.data.owner.owning_key for sar in inputs}
        builder.add_command(DummyContract.Move(), *owners)
    else:
        builder.add_command(DummyContract.Issue(), node.party.owning_key)
    if window is not None:
        builder.set_time_window(window)
    return sign_for_test(builder.to_signed_transaction([]), node)


class SelfIssue(FlowLogic[SignedTransaction]):
    """Issue one DummyState per magic to this node and finalise it."""

    def __init__(self, notary: Party, *magics: int) -> None:
        self.notary, self.magics = notary, magics

    @suspendable
    def call(self) -> SignedTransaction:
        builder = TransactionBuilder(self.notary, privacy_salt=self.random_bytes(32))
        for magic in self.magics:
            builder.add_output_state(DummyState(self.our_identity, magic), DummyContract)
        builder.add_command(DummyContract.Issue(), self.our_identity.owning_key)
        stx = self.service_hub.key_management.sign_transaction(builder.to_signed_transaction([]))
        return self.sub_flow(FinalityFlow(stx))


@initiating_flow
class Finalise(FlowLogic[SignedTransaction]):
    """Run FinalityFlow on ``stx`` (as an application's initiating flow must: FinalityFlow
    opens no sessions of its own); the recipients answer with ``ReceiveFinal``."""

    FINALISING = Step("Finalising")

    def __init__(self, stx: SignedTransaction) -> None:
        self.stx = stx
        self.progress_tracker = ProgressTracker(self.FINALISING)

    @suspendable
    def call(self) -> SignedTransaction:
        tracker = self.progress_tracker
        assert tracker is not None
        tracker.current_step = self.FINALISING
        return self.sub_flow(FinalityFlow(self.stx))


@initiated_by(Finalise)
class ReceiveFinal(FlowLogic[SignedTransaction]):
    """The recipients' side of ``Finalise`` and ``Pay``: ReceiveFinalityFlow."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveFinalityFlow(self.other))


@initiating_flow
class Pay(FlowLogic[SignedTransaction]):
    """Spend ``inputs`` (this node's) into ``payments`` ((owner, magic) pairs) and finalise."""

    def __init__(self, inputs: Sequence[StateAndRef[Any]], payments: Sequence[tuple[Party, int]],
                 extra_recipients: Iterable[Party] = ()) -> None:
        self.inputs, self.payments = list(inputs), list(payments)
        self.extra = frozenset(extra_recipients)

    @suspendable
    def call(self) -> SignedTransaction:
        builder = TransactionBuilder(privacy_salt=self.random_bytes(32))
        for sar in self.inputs:
            builder.add_input_state(sar)
        for owner, magic in self.payments:
            builder.add_output_state(DummyState(owner, magic), DummyContract)
        builder.add_command(DummyContract.Move(), self.our_identity.owning_key)
        stx = self.service_hub.key_management.sign_transaction(builder.to_signed_transaction([]))
        return self.sub_flow(FinalityFlow(stx, self.extra))


@initiated_by(Pay)
class ReceivePayment(ReceiveFinal):
    """The recipients' side of ``Pay``."""


# ----- SendTransactionFlow / ReceiveTransactionFlow -------------------------------------------


def test_receive_transaction_resolves_verifies_and_records(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(3)
    record(network, alice, *txs)
    bob.register_initiated_flow(SendTx, ReceiveTx)
    received: list[SignedTransaction] = []
    bob.services.validated_transactions.track().subscribe(received.append)
    run(network, alice, SendTx(bob.party, txs[2]))
    assert stored(bob, *txs) == [True, True, True]
    assert [tx.id for tx in received] == [txs[0].id, txs[1].id, txs[2].id]
    assert fetched_ids(network) == [(txs[1].id,), (txs[0].id,)]
    network.stop_nodes()


def test_receive_without_signature_check_returns_the_proposal_unrecorded(
        tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(1)
    record(network, alice, *txs)
    unsigned = proposal(txs[0])
    bob.register_initiated_flow(SendTx, lambda party: ReceiveTx(party, check=False))
    run(network, alice, SendTx(bob.party, unsigned))
    assert stored(bob, txs[0], unsigned) == [True, False]
    network.stop_nodes()


def test_receive_with_missing_signatures_refuses_the_transaction(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(1)
    record(network, alice, *txs)
    unsigned = proposal(txs[0])
    bob.register_initiated_flow(SendTx, ReceiveTx)
    ReceiveTx.failures.clear()
    run(network, alice, SendTx(bob.party, unsigned))
    [(where, error)] = ReceiveTx.failures
    assert where == "Bob"
    assert isinstance(error, SignaturesMissingException) and "Notary" in str(error)
    assert stored(bob, unsigned) == [False]
    network.stop_nodes()


def test_a_transaction_received_without_checking_signatures_cannot_be_recorded() -> None:
    with pytest.raises(ValueError, match="cannot be recorded"):
        ReceiveTransactionFlow(ALICE, check_sufficient_signatures=False, record=True)
    assert ReceiveTransactionFlow(ALICE).record is True
    assert ReceiveTransactionFlow(ALICE, False).record is False


def test_ledger_exports_the_core_flows() -> None:
    import ledger

    flows = ["ResolveTransactionsFlow", "DataVendingFlow", "SendTransactionFlow",
             "ReceiveTransactionFlow", "NotaryFlow", "NotaryServiceFlow", "FinalityFlow",
             "ReceiveFinalityFlow", "ResolutionException", "ExcessivelyLargeTransactionGraph",
             "UnauthorisedTransactionRequest"]
    assert set(flows) <= set(ledger.__all__)
    assert all(isinstance(getattr(ledger, name), type) for name in flows)
