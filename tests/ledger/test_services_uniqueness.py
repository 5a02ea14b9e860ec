"""Notary uniqueness: each state consumed once, conflicts named, and notary errors on the wire."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from fibers import FlowLogic, Party, suspendable
from fibers._node import Node
from fibers._storage import Txn
from fibers._wire import decode, encode
from ledger import NotaryError, NotaryException, SecureHash, StateRef, TimeWindow
from ledger import UniquenessProvider as Uniqueness
from ledger.testing import MockNetwork

NOON = datetime(2024, 1, 2, 12, tzinfo=UTC)
TX1, TX2, TX3 = (SecureHash.sha256(name) for name in (b"tx1", b"tx2", b"tx3"))
A, B, C = (StateRef(SecureHash.sha256(b"issue"), i) for i in range(3))


def uniqueness_of(node: Node) -> Uniqueness:
    uniqueness = node.services.uniqueness
    assert isinstance(uniqueness, Uniqueness)
    return uniqueness


class Commit(FlowLogic[None]):
    def __init__(self, inputs: tuple[StateRef, ...], tx_id: SecureHash, caller: Party) -> None:
        self.inputs, self.tx_id, self.caller = inputs, tx_id, caller

    @suspendable
    def call(self) -> None:
        self.service_hub.uniqueness.commit(self.inputs, self.tx_id, self.caller)


def test_unique_inputs_are_committed(network: MockNetwork) -> None:
    uniqueness = uniqueness_of(network.node("Notary"))
    uniqueness.commit([A, B], TX1, network.party("Alice"))
    assert (uniqueness.consumed_by(A), uniqueness.consumed_by(B)) == (TX1, TX1)
    assert uniqueness.consumed_by(C) is None


def test_a_double_spend_is_a_conflict_naming_the_states_and_the_consuming_tx(
    network: MockNetwork,
) -> None:
    uniqueness = uniqueness_of(network.node("Notary"))
    uniqueness.commit([A, B], TX1, network.party("Alice"))
    with pytest.raises(NotaryException) as caught:
        uniqueness.commit([C, B, A], TX2, network.party("Bob"))
    assert caught.value.error == NotaryError.Conflict(TX2, {B: TX1, A: TX1})
    assert str(caught.value) == (
        f"unable to notarise transaction {TX2}: transaction {TX2} is a double spend: "
        f"input {A} was consumed by transaction {TX1}; input {B} was consumed by "
        f"transaction {TX1}")
    assert uniqueness.consumed_by(C) is None  # all or nothing


def test_notarising_the_same_transaction_again_is_idempotent(network: MockNetwork) -> None:
    uniqueness = uniqueness_of(network.node("Notary"))
    uniqueness.commit([A, B], TX1, network.party("Alice"))
    uniqueness.commit([B, A], TX1, network.party("Alice"))
    uniqueness.commit([], TX3, network.party("Alice"))
    assert uniqueness.consumed_by(A) == TX1


def test_commits_survive_a_restart(network: MockNetwork) -> None:
    notary = network.node("Notary")
    uniqueness_of(notary).commit([A], TX1, network.party("Alice"))
    notary.start_flow(Commit((B,), TX2, network.party("Bob"))).result.result(timeout=0)
    notary = network.restart_node(notary)
    assert uniqueness_of(notary).consumed_by(A) == TX1
    assert uniqueness_of(notary).consumed_by(B) == TX2
    with pytest.raises(NotaryException):
        uniqueness_of(notary).commit([A], TX3, network.party("Bob"))


def test_a_conflict_raised_in_a_flow_reaches_it(network: MockNetwork) -> None:
    notary = network.node("Notary")
    uniqueness_of(notary).commit([A], TX1, network.party("Alice"))
    handle = notary.start_flow(Commit((A,), TX2, network.party("Bob")))
    with pytest.raises(NotaryException, match="double spend"):
        handle.result.result(timeout=0)


def test_a_failed_commit_leaves_the_states_unconsumed(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    notary = network.node("Notary")
    original = notary.step_write

    def failing(write: object) -> None:
        def boom(txn: Txn) -> None:
            raise OSError("simulated: the disk is full")

        original(boom)

    monkeypatch.setattr(notary, "step_write", failing)
    handle = notary.start_flow(Commit((A, B), TX1, network.party("Alice")))
    assert not handle.result.done()
    assert uniqueness_of(notary).consumed_by(A) is None
    monkeypatch.undo()
    network.advance_time(1)  # the retry commits
    assert uniqueness_of(notary).consumed_by(A) == TX1


def test_only_notaries_have_a_uniqueness_provider(network: MockNetwork) -> None:
    assert not hasattr(network.node("Alice").services, "uniqueness")
    assert isinstance(network.node("Notary").services.uniqueness, Uniqueness)


ERRORS = [
    NotaryError.Conflict(TX1, {A: TX2, B: TX3}),
    NotaryError.TimeWindowInvalid(TX1, TimeWindow.until_only(NOON), NOON + timedelta(hours=1)),
    NotaryError.TransactionInvalid(TX1, "contract X rejected it"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_notary_exception_crosses_the_wire_with_its_error(error: NotaryError) -> None:
    sent = NotaryException(error)
    received = decode(encode(sent))
    assert type(received) is NotaryException
    assert received.error == error and type(received.error) is type(error)
    assert str(received) == str(sent)
    assert isinstance(error, NotaryError)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_notary_exception_survives_a_checkpoint(error: NotaryError) -> None:
    restored = pickle.loads(pickle.dumps(NotaryException(error)))
    assert restored.error == error and str(restored) == str(NotaryException(error))


def test_notary_error_messages_say_what_happened() -> None:
    window = TimeWindow.between(NOON, NOON + timedelta(minutes=5))
    late = NotaryError.TimeWindowInvalid(TX1, window, NOON + timedelta(hours=1))
    assert str(late) == (
        f"transaction {TX1} may be notarised from {NOON} until {NOON + timedelta(minutes=5)}, "
        "but the notary's time is 2024-01-02T13:00:00+00:00: build it again with a current "
        "time window")
    invalid = NotaryError.TransactionInvalid(TX1, "bad signature")
    assert str(NotaryException(invalid)) == (
        f"unable to notarise transaction {TX1}: transaction {TX1} is invalid: bad signature")
    assert NotaryError.Conflict.__qualname__ == "NotaryError.Conflict"
    with pytest.raises(TypeError, match="carries a NotaryError"):
        NotaryException("just a message")  # type: ignore[arg-type]
