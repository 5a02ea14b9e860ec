"""Resolution of large and hostile histories: downloads staged in transaction storage (not in
the flow), verified as they become verifiable, bounded by count and by bytes, refused once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fibers import FlowLogic, Party, serializable, suspendable
from fibers._node import Node
from ledger import (
    CommandData,
    Contract,
    ExcessivelyLargeTransactionGraph,
    LedgerTransaction,
    OwnableState,
    ResolveTransactionsFlow,
    SecureHash,
    SignedTransaction,
    TransactionBuilder,
    contract,
    require,
)
from ledger._resolution import FetchedTransactions, FetchMessage, FetchTransactions
from ledger.testing import MockNetwork, record_for_test
from tests.ledger._helpers import ALICE, ALICE_KEY, NOTARY_KEY, ledger_network
from tests.ledger.test_flows import fetched_ids, stored
from tests.ledger.test_resolution import ResolveFrom


@serializable
@dataclass(frozen=True)
class PaddedState(OwnableState):
    """A state that carries ``padding`` bytes: makes large transactions cheaply."""

    owner: Party
    padding: bytes

    @property
    def participants(self) -> list[Party]:
        return [self.owner]

    def with_new_owner(self, new_owner: Party) -> tuple[CommandData, OwnableState]:
        return PaddedContract.Move(), PaddedState(new_owner, self.padding)


@contract
class PaddedContract(Contract):
    """Issue from nothing; a Move is signed by the owners of its inputs."""

    @serializable
    @dataclass(frozen=True)
    class Issue(CommandData):
        pass

    @serializable
    @dataclass(frozen=True)
    class Move(CommandData):
        pass

    def verify(self, ltx: LedgerTransaction) -> None:
        inputs = ltx.inputs_of_type(PaddedState)
        moves = ltx.commands_of_type(PaddedContract.Move)
        if not inputs:
            require(bool(ltx.commands_of_type(PaddedContract.Issue)), "an issue has Issue")
            return
        require(len(moves) == 1, "exactly one Move")
        require(all(s.owner.owning_key in moves[0].signers for s in inputs),
                "the owner of every input signs the Move")


def padded_chain(length: int, size: int, *, signed: bool = True) -> list[SignedTransaction]:
    """An issue to Alice then ``length - 1`` moves from Alice to Alice, each output carrying
    ``size`` bytes of padding (distinct per transaction). Unsigned when not ``signed``."""
    txs: list[SignedTransaction] = []
    for n in range(length):
        padding = n.to_bytes(4, "big") * (size // 4)
        builder = TransactionBuilder(None if txs else _notary(), privacy_salt=None)
        if txs:
            builder.add_input_state(txs[-1].tx.out_ref(0))
            builder.add_command(PaddedContract.Move(), ALICE.owning_key)
        else:
            builder.add_command(PaddedContract.Issue(), ALICE.owning_key)
        builder.add_output_state(PaddedState(ALICE, padding), PaddedContract)
        keys = (ALICE_KEY, NOTARY_KEY) if txs else (ALICE_KEY,)
        txs.append(builder.sign_with(*keys) if signed else builder.to_signed_transaction([]))
    return txs


def _notary() -> Party:
    from tests.ledger._helpers import NOTARY

    return NOTARY


class EndlessVendor(FlowLogic[None]):
    """A lying peer: answers every fetch from a made-up history deeper than any bound (each
    transaction spends from one more it has invented), never saying where it ends."""

    def __init__(self, other: Party, history: dict[SecureHash, SignedTransaction]) -> None:
        self.other, self.history = other, history

    @suspendable
    def call(self) -> None:
        self.receive(self.other, tuple)
        while True:
            request = self.receive(self.other, FetchMessage).unwrap(lambda r: r)
            assert isinstance(request, FetchTransactions)
            self.send(self.other, FetchedTransactions(
                tuple(self.history[tx_id] for tx_id in request.tx_ids)))


def endless(network: MockNetwork, alice: Node, bob: Node, history: list[SignedTransaction]
            ) -> None:
    by_id = {stx.id: stx for stx in history}
    alice.register_initiated_flow(ResolveFrom, lambda party: EndlessVendor(party, by_id))


def deliver_until(network: MockNetwork, done: Callable[[], bool]) -> None:
    """Deliver messages one at a time until ``done()``."""
    while not done():
        assert network.run_network(max_messages=1) == 1, "no message left to deliver"


def test_an_honest_50_mb_history_resolves(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = padded_chain(10, 5 * 1024 * 1024)
    for tx in txs:
        record_for_test(tx, alice)
    handle = bob.start_flow(ResolveFrom(alice.party, {txs[-1].id}))
    network.run_network()
    assert handle.result.result(timeout=0) == [tx.id for tx in txs]
    assert stored(bob, *txs) == [True] * 10
    assert bob.hospital() == [] and bob.flows() == []
    assert bob.services.validated_transactions.staged_count() == 0
    # One fetch per transaction: a 5 MB reply is as large as a reply gets, nothing retried.
    assert [len(request) for request in fetched_ids(network)] == [1] * 10
    network.stop_nodes()


def test_an_endless_fake_history_is_refused_once_by_its_bytes(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    history = padded_chain(40, 256 * 1024, signed=False)  # deeper than the bound below
    endless(network, alice, bob, history)
    handle = bob.start_flow(ResolveFrom(alice.party, {history[-1].id}, max_bytes=2_000_000))
    network.run_network()
    error = handle.result.exception(timeout=0)
    assert isinstance(error, ExcessivelyLargeTransactionGraph)
    assert error.unit == "bytes" and error.limit == 2_000_000
    assert "more than 2000000 bytes" in str(error)
    asked = [tx_id for request in fetched_ids(network) for tx_id in request]
    assert asked == [tx.id for tx in reversed(history)][:len(asked)]  # each asked for once
    assert 7 <= len(asked) <= 8
    assert bob.hospital() == [] and bob.flows() == []
    assert stored(bob, *history) == [False] * 40
    assert bob.services.validated_transactions.staged_count() == 0
    bob = network.restart_node(bob)
    assert bob.services.validated_transactions.staged_count() == 0
    network.stop_nodes()


def test_an_endless_fake_history_is_refused_once_by_its_count(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    history = padded_chain(30, 8, signed=False)
    endless(network, alice, bob, history)
    handle = bob.start_flow(ResolveFrom(alice.party, {history[-1].id}, limit=20))
    network.run_network()
    error = handle.result.exception(timeout=0)
    assert isinstance(error, ExcessivelyLargeTransactionGraph) and error.limit == 20
    assert len(fetched_ids(network)) == 20
    assert bob.hospital() == [] and bob.flows() == []
    assert bob.services.validated_transactions.staged_count() == 0
    network.stop_nodes()


def test_downloads_are_staged_in_storage_not_in_the_flow(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = padded_chain(6, 64 * 1024)
    for tx in txs:
        record_for_test(tx, alice)
    handle = bob.start_flow(ResolveFrom(alice.party, {txs[-1].id}))
    storage = bob.services.validated_transactions
    deliver_until(network, lambda: storage.staged_count(handle.id) == 3)
    assert stored(bob, *txs) == [False] * 6
    held = [(frame["function"], name) for frame in bob.inspect_flow(handle.id)["stack"]
            for name, value in frame["locals"].items() if "SignedTransaction(" in value]
    assert held == [], "downloaded transactions are held in the flow's locals"
    bob = network.restart_node(bob)
    assert bob.services.validated_transactions.staged_count(handle.id) == 3
    network.run_network()
    assert stored(bob, *txs) == [True] * 6
    assert bob.services.validated_transactions.staged_count() == 0
    network.stop_nodes()


def test_what_can_be_recorded_at_once_is_never_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction recorded in the step that received it is not written to the scratch area
    first; one that waits for its history is staged before the flow waits for that."""
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = padded_chain(3, 1024)
    for tx in txs:
        record_for_test(tx, alice)
    storage_class = type(bob.services.validated_transactions)
    real_stage = storage_class.stage
    staged: list[SecureHash] = []

    def stage(self: object, run_id: object, stx: SignedTransaction) -> int:
        staged.append(stx.id)
        return real_stage(self, run_id, stx)  # type: ignore[arg-type]

    monkeypatch.setattr(storage_class, "stage", stage)
    handle = bob.start_flow(ResolveFrom(alice.party, {txs[-1].id}))
    network.run_network()
    assert handle.result.result(timeout=0) == [tx.id for tx in txs]
    # The last two waited for their history; the first spends nothing and was recorded at once.
    assert staged == [txs[2].id, txs[1].id]
    assert stored(bob, *txs) == [True] * 3
    assert bob.services.validated_transactions.staged_count() == 0
    network.stop_nodes()


def test_a_killed_resolution_leaves_nothing_staged(tmp_path: Path) -> None:
    network = ledger_network(tmp_path, "Alice", "Bob")
    alice, bob = network.node("Alice"), network.node("Bob")
    txs = padded_chain(5, 1024)
    for tx in txs:
        record_for_test(tx, alice)
    handle = bob.start_flow(ResolveFrom(alice.party, {txs[-1].id}))
    storage = bob.services.validated_transactions
    deliver_until(network, lambda: storage.staged_count(handle.id) == 2)
    assert bob.kill_flow(handle.id)
    network.run_network()
    assert storage.staged_count() == 0 and stored(bob, *txs) == [False] * 5
    bob = network.restart_node(bob)
    assert bob.services.validated_transactions.staged_count() == 0
    network.stop_nodes()


def test_the_byte_bound_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ResolveTransactionsFlow(set(), ALICE, max_bytes=-1)
