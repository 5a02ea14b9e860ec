"""The commit stage under storage failures: nothing is acknowledged or sent before it is
stored, flows whose steps could not be stored are retried and lose nothing, and rejected
session inits are acknowledged and never run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fibers import FlowLogic, Party, UnexpectedFlowEndException, initiating_flow, suspendable
from fibers._messages import (
    Ack,
    AckedSessionMessage,
    ExistingSessionMessage,
    InitialSessionMessage,
    decode_message,
    encode_message,
)
from fibers._node import Node
from fibers._redelivery import Redelivery
from fibers._storage_faults import FaultPlan
from fibers.testing import MockNetwork
from tests.fibers._flows import AsksOnce
from tests.fibers.test_durability import Answer, Collect


def _faults(node: Node) -> FaultPlan:
    assert node.storage is not None
    plan = node.storage.inject_faults(FaultPlan())
    assert plan is not None
    return plan


def _records(node: Node, db: str) -> list[bytes]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return [key for key, _ in storage.prefix_items(txn, db, b"")]


def _acks(network: MockNetwork, sender: str) -> list[tuple[int, tuple[int, bool, int]]]:
    """(transcript index, entry) of every acknowledgement ``sender`` sent (in an ``Ack``, or
    riding on a session message)."""
    return [
        (i, entry)
        for i, e in enumerate(network.transcript)
        if e.sender == sender
        for entry in (e.message.entries if isinstance(e.message, Ack) else
                      e.message.acks if isinstance(e.message, AckedSessionMessage) else [])
    ]


def _deliveries(network: MockNetwork, recipient: str, kind: type) -> list[int]:
    return [i for i, e in enumerate(network.transcript)
            if e.recipient == recipient and isinstance(e.message, kind)]


def _settle(network: MockNetwork, rounds: int = 20) -> None:
    """Pump messages, and move time on for retries and redeliveries, until nothing is left."""
    for _ in range(rounds):
        network.run_network()
        if all(n.next_deadline() is None and n.redelivery_due is None for n in network.nodes):
            return
        network.advance_time(1)
    raise AssertionError("the network did not settle")


def _assert_answered_once(network: MockNetwork) -> None:
    """Bob's responder ran to its end once: the attempt whose first step was lost ran in
    memory (Answer.calls counts it) but nothing of it left Bob."""
    assert Answer.calls == 3
    sent = [(e.message.session_id, e.message.seq) for e in network.transcript
            if e.sender == "Bob" and isinstance(e.message, ExistingSessionMessage)]
    assert len({seq for _, seq in sent}) == 4  # confirm, two answers, end (maybe re-sent)
    assert len({sid for sid, _ in sent}) == 1


@pytest.fixture(autouse=True)
def _count_answers() -> None:
    Answer.calls = 0


# ----- no ack before the message is stored ----------------------------------------------------


def test_a_message_that_could_not_be_stored_is_not_acknowledged_and_is_re_sent(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    _faults(alice).fail_writes_to("inbox", 1)
    mock_network.run_network()  # Bob's confirm and "apple" reach Alice; storing them fails
    assert not handle.result.done()
    assert _acks(mock_network, "Alice") == []  # nothing stored, so nothing acknowledged
    assert len(_records(bob, "outbox")) == 2  # Bob still holds both for re-sending
    _settle(mock_network)  # Alice's flow is retried; Bob re-sends what was not acknowledged
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    assert Answer.calls == 2  # each answer given once
    for node in (alice, bob):
        assert _records(node, "outbox") == [] and _records(node, "inbox") == []


def test_an_init_whose_first_payload_could_not_be_stored_is_re_sent_and_run_once(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    _faults(bob).fail_writes_to("dedup", 1)
    handle = alice.start_flow(Collect(bob.party))
    mock_network.run_network()
    assert _acks(mock_network, "Bob") == [] and bob.flows() == []
    assert len(_records(alice, "outbox")) == 1  # the init waits to be re-sent
    assert not any(e.sender == "Bob" for e in mock_network.transcript)  # nothing left Bob
    _settle(mock_network)
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    _assert_answered_once(mock_network)
    first_ack = next(i for i, (sid, to_init, seq) in _acks(mock_network, "Bob")
                     if (to_init, seq) == (False, 0))
    inits = _deliveries(mock_network, "Bob", InitialSessionMessage)
    assert len(inits) == 2 and inits[1] < first_ack  # acknowledged only once it was stored


# ----- a failed first commit --------------------------------------------------------------------


def test_a_flow_whose_first_commit_failed_is_retried_and_survives_a_restart(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    _faults(alice).fail_next_commits(1)
    handle = alice.start_flow(Collect(bob.party))
    assert mock_network.pending_messages() == []  # its init was not recorded: not sent
    assert _records(alice, "flows") == []
    mock_network.advance_time(1)  # the retry runs it from its start record, writing it
    assert [f.run_id for f in alice.flows()] == [handle.id]
    assert len(_records(alice, "flows")) == 1
    mock_network.run_network(max_messages=2)
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)  # still there after the restart
    _settle(mock_network)
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    assert Answer.calls == 2


def test_a_flow_parked_after_failing_its_first_step_is_retried_by_the_operator(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    plan = _faults(alice).fail_next_writes(1000)
    handle = alice.start_flow(Collect(bob.party))
    for _ in range(5):
        mock_network.advance_time(10)
    [entry] = alice.hospital()
    assert entry.run_id == handle.id and mock_network.pending_messages() == []
    plan.clear()
    assert alice.retry_flow(handle.id)
    alice = mock_network.restart_node(alice)  # not parked again: it runs on from storage
    restored = alice.handle(handle.id)
    _settle(mock_network)
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    assert alice.hospital() == []


# ----- a failed group commit ----------------------------------------------------------------------


def test_after_a_failed_group_commit_a_re_sent_init_with_its_payload_runs_once(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    _faults(bob).fail_next_commits(1)
    handle = alice.start_flow(Collect(bob.party))
    mock_network.run_network()
    assert bob.flows() == [] and _records(bob, "dedup") == []
    assert not any(e.sender == "Bob" for e in mock_network.transcript)
    _settle(mock_network)  # no restart: Alice re-sends the init, Bob starts the responder
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    _assert_answered_once(mock_network)
    assert len(_deliveries(mock_network, "Bob", InitialSessionMessage)) == 2


def test_flows_of_a_failed_group_commit_are_retried_and_re_send_without_a_restart(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    plan = _faults(alice).fail_next_commits(1)
    handles = alice.start_flows([Collect(bob.party) for _ in range(3)])  # one round, failed
    assert alice.flows() == [] and mock_network.pending_messages() == []
    mock_network.advance_time(1)  # all three retried: their inits leave now
    assert len(mock_network.pending_messages()) == 3
    plan.fail_next_commits(1)
    mock_network.run_network(max_messages=4)  # three inits to Bob; a round of Alice fails
    assert plan.injected == 2
    _settle(mock_network)
    assert [h.result.result(timeout=0) for h in handles] == [["apple", "banana"]] * 3
    assert Answer.calls == 6
    for node in (alice, bob):
        assert _records(node, "outbox") == [] and _records(node, "flows") == []


# ----- rejected session inits -------------------------------------------------------------------


@initiating_flow
class Lonely(AsksOnce):
    QUESTION = "anyone?"


class Replies(FlowLogic[None]):
    runs = 0

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        type(self).runs += 1
        self.receive(self.other, str)
        self.send(self.other, "here")


def _failing_factory(party: Party) -> FlowLogic[Any]:
    raise RuntimeError("the responder could not be built")


@pytest.mark.parametrize("why", ["unregistered", "draining", "factory fails"])
def test_a_rejected_init_is_acknowledged_and_never_run(
    mock_network: MockNetwork, why: str
) -> None:
    Replies.runs = 0
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    if why == "draining":
        bob.register_initiated_flow(Lonely, Replies)
        bob.set_flows_draining_mode(True)
    elif why == "factory fails":
        bob.register_initiated_flow(Lonely, _failing_factory)
    handle = alice.start_flow(Lonely(bob.party))
    mock_network.run_network()
    assert type(handle.result.exception(timeout=0)) is UnexpectedFlowEndException
    for node in (alice, bob):  # the init and the Reject were both acknowledged
        assert _records(node, "outbox") == []
    [init_entry] = [e for e in mock_network.transcript
                    if isinstance(e.message, InitialSessionMessage)]
    alice, bob = mock_network.restart_node(alice), mock_network.restart_node(bob)
    assert mock_network.pending_messages() == []  # nothing is re-sent at restart
    bob.set_flows_draining_mode(False)
    bob.register_initiated_flow(Lonely, Replies)
    bob.deliver(alice.party, encode_message(init_entry.message))  # a late copy of the init
    assert Replies.runs == 0 and bob.flows() == []
    [ack] = [m for m in mock_network.pending_messages() if m.recipient == alice.party]
    assert ack.frame == encode_message(
        Ack([(init_entry.message.initiator_session_id, False, 0)]))


def test_a_reject_that_could_not_be_recorded_is_not_sent(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    _faults(bob).fail_next_commits(1)
    handle = alice.start_flow(Lonely(bob.party))
    mock_network.run_network()
    assert not handle.result.done()  # not rejected yet: nothing of it was stored
    assert not any(isinstance(e.message, ExistingSessionMessage) for e in mock_network.transcript)
    _settle(mock_network)  # the init is re-sent and rejected for good
    assert type(handle.result.exception(timeout=0)) is UnexpectedFlowEndException
    [init] = [e.message for e in mock_network.transcript
              if isinstance(e.message, InitialSessionMessage)][:1]
    assert bob.checkpoints.seen_init("Alice", init.initiator_session_id)  # recorded for good
    assert _records(alice, "outbox") == [] and _records(bob, "outbox") == []


# ----- draining ---------------------------------------------------------------------------------


def test_a_draining_node_is_not_drained_while_a_retry_waits(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    alice.set_flows_draining_mode(True)
    _faults(alice).fail_next_commits(1)
    mock_network.run_network()
    assert alice.flows() == []  # the flow waits for its retry
    assert not alice.is_drained
    _settle(mock_network)
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    assert alice.is_drained


# ----- acknowledgements travel grouped ----------------------------------------------------------


def test_acks_of_one_commit_travel_in_one_message_per_peer_without_the_failed_units(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.start_flows([Collect(bob.party) for _ in range(3)])
    inits = [decode_message(m.frame) for m in mock_network.pending_messages()]
    _faults(bob).fail_writes_to("dedup", 1)  # the first responder's unit fails alone
    assert mock_network.deliver_all() == 3  # one batch: one round, one commit
    to_alice = [decode_message(m.frame) for m in mock_network.pending_messages()
                if m.recipient == alice.party]
    ids = [i.initiator_session_id for i in inits if isinstance(i, InitialSessionMessage)]
    # They ride on the first message to Alice (the first confirm); no Ack frame of their own.
    assert [m.acks for m in to_alice if isinstance(m, AckedSessionMessage)] == [
        [(ids[1], False, 0), (ids[2], False, 0)]]
    assert isinstance(to_alice[0], AckedSessionMessage)
    assert not any(isinstance(m, Ack) for m in to_alice)
    _settle(mock_network)
    assert Answer.calls == 7  # the lost responder ran once in memory, then three for real


def test_messages_for_a_flow_parked_by_failed_steps_are_kept_until_its_retry(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    plan = _faults(alice).fail_writes_to("inbox", 1000)
    mock_network.run_network()
    for _ in range(4):  # every retry fails to store Bob's answers: parked after the fourth
        mock_network.advance_time(10)
        mock_network.run_network()
    [entry] = alice.hospital()
    plan.clear()
    mock_network.advance_time(60)  # Bob re-sends what Alice never acknowledged
    mock_network.run_network()
    assert alice.retry_flow(entry.run_id)
    _settle(mock_network)
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    for node in (alice, bob):
        assert _records(node, "outbox") == [] and _records(node, "inbox") == []


def test_redelivery_backs_off_until_acknowledged() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    redelivery = Redelivery(timedelta(seconds=1), max_doublings=2)
    redelivery.sent(b"a", start)
    redelivery.sent(b"b", start)
    assert redelivery.next_due == start + timedelta(seconds=1)
    assert redelivery.due(start) == []
    resent = [(s, redelivery.due(start + timedelta(seconds=s))) for s in range(1, 12)]
    assert [s for s, keys in resent if keys] == [1, 3, 7, 11]  # 1 s, then 2, 4, 4 (capped)
    assert resent[0][1] == [b"a", b"b"]  # in the order they were sent
    redelivery.acknowledged(b"a")
    redelivery.acknowledged(b"b")
    assert len(redelivery) == 0 and redelivery.next_due is None


def test_a_round_of_many_flow_steps_is_one_commit_of_one_step_record_each(
    mock_network: MockNetwork,
) -> None:
    """The group commit is one flat transaction for every step of the round, and each step is
    one sealed step record (no journal or snapshot records of its own)."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.start_flows([Collect(bob.party) for _ in range(3)])
    plan = _faults(bob)
    assert mock_network.deliver_all() == 3  # one batch: one round
    assert plan.commits == 1
    assert len(_records(bob, "steps")) == 3
    assert _records(bob, "journal") == [] and _records(bob, "snapshots") == []
    _settle(mock_network)
    assert _records(bob, "steps") == []  # finished flows leave no step record behind
