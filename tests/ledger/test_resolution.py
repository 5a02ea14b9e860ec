"""ResolveTransactionsFlow: dependency graphs downloaded from the peer that sent them, bounded,
verified dependencies first, and only what the peer may show."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import FlowException, FlowLogic, Party, initiated_by, initiating_flow, suspendable
from ledger import (
    ContractRejection,
    DataVendingFlow,
    ExcessivelyLargeTransactionGraph,
    ResolutionException,
    ResolveTransactionsFlow,
    SecureHash,
    SignedTransaction,
    TransactionBuilder,
    UnauthorisedTransactionRequest,
)
from ledger._resolution import (
    DEFAULT_GRAPH_BYTES,
    DEFAULT_GRAPH_LIMIT,
    MAX_FETCH_BATCH,
    FetchedTransactions,
    FetchMessage,
    FetchTransactions,
)
from tests.ledger._helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    BOB_KEY,
    NOTARY_KEY,
    DummyContract,
    DummyState,
    issue,
    move,
)
from tests.ledger.test_flows import (
    SendTx,
    chain,
    failure,
    fetched_ids,
    ledger_network,
    payloads,
    record,
    run,
    stored,
)


@initiating_flow
class ResolveFrom(FlowLogic[list[SecureHash]]):
    """Tell ``other`` which transactions to vend, then resolve them from it."""

    def __init__(self, other: Party, tx_ids: set[SecureHash],
                 limit: int = DEFAULT_GRAPH_LIMIT, max_bytes: int = DEFAULT_GRAPH_BYTES) -> None:
        self.other, self.tx_ids, self.limit, self.max_bytes = other, tx_ids, limit, max_bytes

    @suspendable
    def call(self) -> list[SecureHash]:
        self.send(self.other, tuple(sorted(self.tx_ids)))
        return self.sub_flow(ResolveTransactionsFlow(self.tx_ids, self.other, limit=self.limit,
                                                     max_bytes=self.max_bytes))


@initiated_by(ResolveFrom)
class VendRequested(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        wanted = self.receive(self.other, tuple).unwrap(lambda ids: ids)
        self.sub_flow(DataVendingFlow(self.other, wanted))


class Snoop(FlowLogic[None]):
    """Receives a transaction, then asks for ``wanted``, which are not its dependencies."""

    def __init__(self, other: Party, wanted: SecureHash | tuple[SecureHash, ...]) -> None:
        self.other = other
        self.wanted = wanted if isinstance(wanted, tuple) else (wanted,)

    @suspendable
    def call(self) -> None:
        self.receive(self.other, SignedTransaction)
        self.send_and_receive(self.other, FetchTransactions(self.wanted), FetchedTransactions)


class VendOnly(FlowLogic[None]):
    """Vends ``allowed`` (and their dependencies), whatever the requester said it wants."""

    def __init__(self, other: Party, allowed: list[SecureHash]) -> None:
        self.other, self.allowed = other, allowed

    @suspendable
    def call(self) -> None:
        self.receive(self.other, tuple)
        self.sub_flow(DataVendingFlow(self.other, self.allowed))


class Impostor(FlowLogic[None]):
    """Vends ``instead`` whatever is asked for."""

    def __init__(self, other: Party, instead: SignedTransaction) -> None:
        self.other, self.instead = other, instead

    @suspendable
    def call(self) -> None:
        self.receive(self.other, tuple)
        self.receive(self.other, FetchMessage)
        self.send(self.other, FetchedTransactions((self.instead,)))
        self.receive(self.other, FetchMessage)


def ids(*txs: SignedTransaction) -> list[SecureHash]:
    return [tx.id for tx in txs]


def test_resolves_one_hash_with_its_whole_chain(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(3)
    record(network, alice, *txs)
    resolved = run(network, bob, ResolveFrom(alice.party, {txs[2].id}))
    assert resolved == ids(*txs)
    assert stored(bob, *txs) == [True, True, True]
    assert fetched_ids(network) == [(txs[2].id,), (txs[1].id,), (txs[0].id,)]
    network.stop_nodes()


def test_resolves_two_hashes_in_one_request_per_layer(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    first, second = chain(2), chain(2, magic=7)
    record(network, alice, *first, *second)
    resolved = run(network, bob, ResolveFrom(alice.party, {first[1].id, second[1].id}))
    assert sorted(resolved) == sorted(ids(*first, *second))
    position = {tx_id: i for i, tx_id in enumerate(resolved)}
    assert position[first[0].id] < position[first[1].id]
    assert position[second[0].id] < position[second[1].id]
    assert [set(request) for request in fetched_ids(network)] == [
        {first[1].id, second[1].id}, {first[0].id, second[0].id}]
    network.stop_nodes()


def test_resolves_a_triangle_fetching_each_transaction_once(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    top = issue(ALICE, 3, 4)
    left = move([top.tx.out_ref(0)], BOB).sign_with(ALICE_KEY, NOTARY_KEY)
    bottom = move([top.tx.out_ref(1), left.tx.out_ref(0)], ALICE).sign_with(
        ALICE_KEY, BOB_KEY, NOTARY_KEY)
    record(network, alice, top, left, bottom)
    resolved = run(network, bob, ResolveFrom(alice.party, {bottom.id}))
    assert resolved == ids(top, left, bottom)
    assert [set(request) for request in fetched_ids(network)] == [
        {bottom.id}, {top.id, left.id}]
    network.stop_nodes()


def test_a_partly_resolved_chain_fetches_only_what_is_missing(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(4)
    record(network, alice, *txs)
    record(network, bob, *txs[:2])
    resolved = run(network, bob, ResolveFrom(alice.party, {txs[3].id}))
    assert resolved == ids(txs[2], txs[3])
    assert fetched_ids(network) == [(txs[3].id,), (txs[2].id,)]
    assert stored(bob, *txs) == [True] * 4
    network.stop_nodes()


def test_nothing_is_fetched_when_everything_is_there(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(2)
    record(network, alice, *txs)
    record(network, bob, *txs)
    assert run(network, bob, ResolveFrom(alice.party, {txs[1].id})) == []
    assert fetched_ids(network) == []
    network.stop_nodes()


def test_a_request_for_a_transaction_outside_the_chain_is_refused(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs, secret = chain(2), issue(ALICE, 99)
    record(network, alice, *txs, secret)
    bob.register_initiated_flow(SendTx, lambda party: Snoop(party, secret.id))
    error = failure(network, alice, SendTx(bob.party, txs[1]))
    assert isinstance(error, UnauthorisedTransactionRequest)
    assert error.tx_id == secret.id
    assert "is not a dependency of the transaction being sent" in str(error)
    assert not any(isinstance(p, FetchedTransactions) for p in payloads(network, recipient="Bob"))
    network.stop_nodes()


def test_the_refusal_reaches_the_requester(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    first, second = chain(2), chain(2, magic=5)
    record(network, alice, *first, *second)
    alice.register_initiated_flow(ResolveFrom, lambda party: VendOnly(party, [first[1].id]))
    error = failure(network, bob, ResolveFrom(alice.party, {first[1].id, second[1].id}))
    assert isinstance(error, UnauthorisedTransactionRequest) and error.tx_id == second[1].id
    assert stored(bob, *first, *second) == [False] * 4
    network.stop_nodes()


def test_an_over_large_graph_is_refused_before_it_is_downloaded(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(5)
    record(network, alice, *txs)
    error = failure(network, bob, ResolveFrom(alice.party, {txs[4].id}, limit=3))
    assert isinstance(error, ExcessivelyLargeTransactionGraph) and error.limit == 3
    assert sum(len(request) for request in fetched_ids(network)) == 3
    assert stored(bob, *txs) == [False] * 5
    network.stop_nodes()


def test_a_graph_at_the_limit_is_resolved(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(3)
    record(network, alice, *txs)
    assert len(run(network, bob, ResolveFrom(alice.party, {txs[2].id}, limit=3))) == 3
    network.stop_nodes()


def test_a_transaction_other_than_the_one_asked_for_is_refused(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    wanted, other = issue(ALICE, 1), issue(ALICE, 2)
    alice.register_initiated_flow(ResolveFrom, lambda party: Impostor(party, other))
    error = failure(network, bob, ResolveFrom(alice.party, {wanted.id}))
    assert isinstance(error, ResolutionException)
    assert f"asked for transaction {wanted.id}, received {other.id}" in str(error)
    assert stored(bob, wanted, other) == [False, False]
    network.stop_nodes()


def test_an_invalid_dependency_is_not_recorded(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    [origin] = chain(1)
    forged = (TransactionBuilder(privacy_salt=None)
              .add_input_state(origin.tx.out_ref(0))
              .add_output_state(DummyState(BOB, 1_000), DummyContract)
              .add_command(DummyContract.Move(), ALICE.owning_key)
              .sign_with(ALICE_KEY, NOTARY_KEY))
    record(network, alice, origin, forged)
    error = failure(network, bob, ResolveFrom(alice.party, {forged.id}))
    assert isinstance(error, ContractRejection) and "conserves magic" in str(error)
    assert stored(bob, origin, forged) == [True, False]
    network.stop_nodes()


def test_a_wide_layer_is_fetched_in_batches(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    sources = [issue(ALICE, 1) for _ in range(MAX_FETCH_BATCH + 1)]
    merged = move([tx.tx.out_ref(0) for tx in sources], BOB).sign_with(ALICE_KEY, NOTARY_KEY)
    record(network, alice, *sources, merged)
    resolved = run(network, bob, ResolveFrom(alice.party, {merged.id}))
    assert len(resolved) == len(sources) + 1 and resolved[-1] == merged.id
    assert [len(request) for request in fetched_ids(network)] == [1, MAX_FETCH_BATCH, 1]
    network.stop_nodes()


def test_an_oversized_fetch_request_is_refused(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = chain(1)
    record(network, alice, *txs)
    too_many = tuple(SecureHash(bytes([i]) * 32) for i in range(MAX_FETCH_BATCH + 1))
    bob.register_initiated_flow(SendTx, lambda party: Snoop(party, too_many))
    error = failure(network, alice, SendTx(bob.party, txs[0]))
    assert isinstance(error, ResolutionException) and "malformed fetch request" in str(error)
    network.stop_nodes()


def test_the_limit_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="limit"):
        ResolveTransactionsFlow(set(), ALICE, limit=-1)


def test_resolution_errors_are_flow_exceptions() -> None:
    assert issubclass(ResolutionException, FlowException)
    assert issubclass(ExcessivelyLargeTransactionGraph, ResolutionException)
    assert issubclass(UnauthorisedTransactionRequest, ResolutionException)
