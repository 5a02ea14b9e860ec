"""Replay is complete: a restored flow whose code changed so that it does not re-make exactly its
recorded requests and then its checkpoint's pending request is hospitalised with a
NondeterminismError naming the record, and nothing it produced after the restore leaves the node.

Each test checkpoints a flow, swaps its ``call`` for the edited code (as a new release of its
module would) and restarts the node.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    SerializeAsToken,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._messages import Data, ExistingSessionMessage
from fibers._node import Node
from fibers.services import journaled
from fibers.testing import MockNetwork
from tests.fibers._flows import UpperCasesTwice


@initiating_flow
class Interview(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        first = self.send_and_receive(self.other, "one", str).unwrap(str)
        second = self.send_and_receive(self.other, "two", str).unwrap(str)
        return first + second


@initiated_by(Interview)
class Interviewee(UpperCasesTwice):
    pass


Call = Callable[[Interview], str]


def _restore_with(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch, new_call: Call
) -> tuple[Node, Any]:
    """Start Interview on Alice (checkpointed waiting for "ONE"), crash Alice, swap the code,
    restart her and let every message flow. Returns the new Alice and the run id."""
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    handle = alice.start_flow(Interview(bob.party))
    network.stop_node(alice)
    monkeypatch.setattr(Interview, "call", suspendable(new_call))
    restarted = network.restart_node(alice)
    network.run_network()
    return restarted, handle.id


def _assert_parked_without_output(network: MockNetwork, alice: Node, run_id: Any) -> str:
    """The flow is in the hospital, unfinished, and sent nothing new: Bob got only "one" and
    still waits for the second question."""
    [entry] = alice.hospital()
    assert entry.run_id == run_id and alice.flows() == []
    assert entry.diagnosis.startswith("NondeterminismError")
    with pytest.raises(KeyError):
        alice.handle(run_id)
    from_alice = [
        e.message.body for e in network.transcript
        if e.sender == "Alice" and isinstance(e.message, ExistingSessionMessage)
    ]
    assert all(not isinstance(body, Data) for body in from_alice), from_alice
    assert [type(body).__name__ for body in from_alice] == []  # no data, no end, no error
    [waiting] = network.node("Bob").flows()
    assert waiting.waiting_for == "a message from Alice"
    return entry.diagnosis


def test_new_code_that_returns_before_its_journal_is_used_up_is_hospitalised(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def returns_at_once(self: Interview) -> str:
        return "nothing to ask"

    alice, run_id = _restore_with(mock_network, monkeypatch, returns_at_once)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 0 (open)" in diagnosis
    assert "the journal says open a session with Bob" in diagnosis
    assert "the code now returned" in diagnosis


def test_new_code_that_raises_before_its_journal_is_used_up_is_hospitalised(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def raises(self: Interview) -> str:
        raise FlowException("changed my mind")

    alice, run_id = _restore_with(mock_network, monkeypatch, raises)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 0 (open)" in diagnosis
    assert "the code now raised FlowException: changed my mind" in diagnosis


def test_new_code_making_a_different_request_is_hospitalised(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def asks_something_else(self: Interview) -> str:
        return self.send_and_receive(self.other, "zero", str).unwrap(str)

    alice, run_id = _restore_with(mock_network, monkeypatch, asks_something_else)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 1 (send)" in diagnosis
    assert "the journal says send to Bob" in diagnosis and "the code now did send to Bob" \
        in diagnosis


def test_new_code_that_ends_after_its_journal_before_the_pending_request_is_hospitalised(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sends_and_leaves(self: Interview) -> str:
        self.send(self.other, "one")
        return "done"

    alice, run_id = _restore_with(mock_network, monkeypatch, sends_and_leaves)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 2 (the checkpoint's pending request)" in diagnosis
    assert "waits for a message from Bob in Interview.call" in diagnosis
    assert "the code now returned" in diagnosis


def test_a_send_added_just_before_the_pending_receive_never_leaves_the_node(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sends_extra(self: Interview) -> str:
        self.send(self.other, "one")
        self.send(self.other, "extra")
        return self.receive(self.other, str).unwrap(str)

    alice, run_id = _restore_with(mock_network, monkeypatch, sends_extra)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 2 (the checkpoint's pending request)" in diagnosis
    assert "the code now did send to Bob (session of flow #0) first" in diagnosis


def test_new_code_that_draws_random_bytes_before_the_pending_request_is_hospitalised(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def draws(self: Interview) -> str:
        self.send(self.other, "one")
        self.random_bytes(4)
        return self.receive(self.other, str).unwrap(str)

    alice, run_id = _restore_with(mock_network, monkeypatch, draws)
    diagnosis = _assert_parked_without_output(mock_network, alice, run_id)
    assert "journal record 2" in diagnosis and "draw random bytes first" in diagnosis


def test_unchanged_code_still_resumes(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Interview(bob.party))
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == "ONETWO"
    assert alice.hospital() == []


# ----- journaled service calls are checked by their arguments -----------------------------------


class Bookings(SerializeAsToken):
    def __init__(self) -> None:
        self.booked: list[int] = []

    @journaled
    def book(self, amount: int, *, note: str = "") -> int:
        self.booked.append(amount)
        return len(self.booked)


@initiating_flow
class BookThenAsk(FlowLogic[tuple[int, str]]):
    amount = 10

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[int, str]:
        number = self.service_hub.get(Bookings).book(type(self).amount, note="first")
        answer = self.send_and_receive(self.other, "one", str).unwrap(str)
        return number, answer


@initiated_by(BookThenAsk)
class BookAnswer(Interviewee):
    pass


def test_a_journaled_call_with_changed_arguments_is_hospitalised_not_answered(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    bookings = Bookings()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("bookings", bookings)
    handle = alice.start_flow(BookThenAsk(bob.party))
    assert bookings.booked == [10]
    mock_network.stop_node(alice)
    monkeypatch.setattr(BookThenAsk, "amount", 99)
    alice = mock_network.restart_node(alice)
    mock_network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == handle.id
    assert "NondeterminismError" in entry.diagnosis and "journal record 0 (service)" \
        in entry.diagnosis
    assert entry.diagnosis.count("call the service operation Bookings.book with arguments") == 2
    assert bookings.booked == [10]  # neither the old answer replayed nor the effect redone


def test_a_journaled_call_with_the_same_arguments_replays_its_answer(
    mock_network: MockNetwork,
) -> None:
    bookings = Bookings()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("bookings", bookings)
    handle = alice.start_flow(BookThenAsk(bob.party))
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == (1, "ONE")
    assert bookings.booked == [10]


def test_a_service_call_added_before_the_pending_request_has_no_effect(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    bookings = Bookings()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("bookings", bookings)
    handle = alice.start_flow(BookThenAsk(bob.party))
    mock_network.stop_node(alice)

    @suspendable
    def books_twice(self: BookThenAsk) -> tuple[int, str]:
        number = self.service_hub.get(Bookings).book(10, note="first")
        self.send(self.other, "one")
        self.service_hub.get(Bookings).book(5)  # new: before the pending receive
        return number, self.receive(self.other, str).unwrap(str)

    monkeypatch.setattr(BookThenAsk, "call", books_twice)
    alice = mock_network.restart_node(alice)
    alice.wake_hibernated()  # restore is lazy: replayed when woken
    [entry] = alice.hospital()
    assert entry.run_id == handle.id
    assert "journal record 3 (the checkpoint's pending request)" in entry.diagnosis
    assert "call the service operation Bookings.book" in entry.diagnosis
    assert bookings.booked == [10]


def test_argument_digests_ignore_identity_and_order_but_not_values() -> None:
    from fibers._journal import digest_arguments

    def amount_of(x: int) -> int:
        return x

    same = digest_arguments((Bookings(), amount_of, {"b", "a"}), {"note": "x"})
    assert same == digest_arguments((Bookings(), amount_of, {"a", "b"}), {"note": "x"})
    assert same != digest_arguments((Bookings(), amount_of, {"a", "c"}), {"note": "x"})
    assert same != digest_arguments((Bookings(), amount_of, {"a", "b"}), {"note": "y"})
    assert digest_arguments((1,), {}) != digest_arguments(("1",), {})


# ----- a restored sleep past its deadline -----------------------------------------------------


class Doze(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        self.sleep(60)
        return "awake"


def test_a_flow_restored_after_its_sleep_deadline_wakes_and_continues(
    mock_network: MockNetwork,
) -> None:
    alice = mock_network.create_node("Alice")
    handle = alice.start_flow(Interrupted())
    mock_network.stop_node(alice)
    mock_network.clock.advance(120)  # the node was down past the first sleep's deadline
    alice = mock_network.restart_node(alice)
    assert alice.hospital() == []
    restored = alice.handle(handle.id)
    mock_network.advance_time(0)  # restore is lazy: the due timer wakes it
    [summary] = alice.flows()
    assert summary.waiting_for is not None and "timer" in summary.waiting_for  # the second
    mock_network.advance_time(59)
    assert not restored.result.done()
    mock_network.advance_time(1)
    assert restored.result.result(timeout=0) == timedelta(seconds=180)
    assert alice.dump_checkpoints() == []


def test_a_flow_restored_after_its_last_sleep_finishes_during_the_restore(
    mock_network: MockNetwork,
) -> None:
    alice = mock_network.create_node("Alice")
    alice.start_flow(Doze())
    mock_network.stop_node(alice)
    mock_network.clock.advance(3600)
    alice = mock_network.restart_node(alice)
    mock_network.advance_time(0)  # restore is lazy: the due timer wakes it
    assert alice.hospital() == [] and alice.flows() == []
    assert alice.dump_checkpoints() == []


class Interrupted(FlowLogic[timedelta]):
    @suspendable
    def call(self) -> timedelta:
        before = self.now()
        self.sleep(60)
        self.sleep(60)
        return self.now() - before
