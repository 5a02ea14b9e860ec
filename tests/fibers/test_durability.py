"""Crash and restore: flows resume from their checkpoints as if nothing had happened."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import lmdb
import pytest

from fibers import (
    FlowException,
    FlowLogic,
    HospitalizeFlowException,
    Party,
    SerializeAsToken,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._checkpoint_store import DATABASES
from fibers._node import Node
from fibers._services import journaled
from fibers._storage_faults import FaultPlan
from fibers.testing import MockNetwork
from tests.fibers._flows import UpperCasesTwice
from tests.fibers.test_sessions import Ping, Relay

FlowFactory = Callable[[MockNetwork], FlowLogic[Any]]


def _run_with_restart(
    make_flow: FlowFactory, victim: str, after: int | None
) -> tuple[Any, MockNetwork]:
    """Start the flow on Alice, deliver ``after`` messages, restart ``victim``, finish."""
    network = MockNetwork()
    for name in ("Alice", "Bob", "Charlie"):
        network.create_node(name)
    handle = network.node("Alice").start_flow(make_flow(network))
    if after is not None:
        network.run_network(max_messages=after)
        restarted = network.restart_node(network.node(victim))
        if victim == "Alice" and not handle.result.done():
            handle = restarted.handle(handle.id)
    network.run_network()
    return handle.result.result(timeout=0), network


def _message_count(make_flow: FlowFactory) -> int:
    network = MockNetwork()
    for name in ("Alice", "Bob", "Charlie"):
        network.create_node(name)
    network.node("Alice").start_flow(make_flow(network))
    count = network.run_network()
    network.stop_nodes()
    return count


def _assert_no_checkpoints(network: MockNetwork) -> None:
    for node in network.nodes:
        assert node.flows() == [] and node.hospital() == []
        storage = node.storage
        assert storage is not None
        with storage.read() as txn:
            for db in DATABASES:
                if db != "dedup":
                    assert list(storage.prefix_items(txn, db, b"")) == [], (node.party, db)


PING: FlowFactory = lambda n: Ping(n.party("Bob"))  # noqa: E731
RELAY: FlowFactory = lambda n: Relay(n.party("Bob"))  # noqa: E731


@pytest.mark.parametrize("victim", ["Alice", "Bob"])
def test_ping_pong_survives_a_restart_at_every_point(victim: str) -> None:
    expected, reference = _run_with_restart(PING, victim, None)
    reference.stop_nodes()
    for after in range(_message_count(PING)):
        result, network = _run_with_restart(PING, victim, after)
        assert result == expected, f"restart of {victim} after {after} messages"
        _assert_no_checkpoints(network)
        network.stop_nodes()


@pytest.mark.parametrize("victim", ["Alice", "Bob", "Charlie"])
def test_three_party_flow_survives_a_restart_at_every_point(victim: str) -> None:
    expected, reference = _run_with_restart(RELAY, victim, None)
    reference.stop_nodes()
    assert expected == "Charlie refused: no deal"
    for after in range(_message_count(RELAY)):
        result, network = _run_with_restart(RELAY, victim, after)
        assert result == expected, f"restart of {victim} after {after} messages"
        _assert_no_checkpoints(network)
        network.stop_nodes()


@initiating_flow
class Collect(FlowLogic[list[str]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[str]:
        first = self.send_and_receive(self.other, "first?", str).unwrap(str)
        second = self.send_and_receive(self.other, "second?", str).unwrap(str)
        return [first, second]


@initiated_by(Collect)
class Answer(FlowLogic[None]):
    calls = 0

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        for word in ("apple", "banana"):
            self.receive(self.other, str)
            type(self).calls += 1
            self.send(self.other, word)


def test_restart_just_after_a_receive_keeps_the_payload(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    while not any(e.sender == "Bob" and "Data" in repr(e.message) for e in
                  mock_network.transcript):
        mock_network.run_network(max_messages=1)
    mock_network.run_network(max_messages=1)  # Alice consumes "apple" and asks the second
    alice = mock_network.restart_node(alice)
    [summary] = alice.flows()
    assert summary.status == "HIBERNATED"  # restore is lazy: an inspection wakes it
    assert alice.inspect_flow(handle.id)["waiting_for"] == "a message from Bob"
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]


def test_a_message_re_sent_after_restart_is_processed_once(mock_network: MockNetwork) -> None:
    Answer.calls = 0
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    mock_network.run_network(max_messages=1)  # Bob stored and answered the init; acks queued
    alice = mock_network.restart_node(alice)  # its un-acked init is sent again
    resent = [m for m in mock_network.pending_messages() if m.sender == alice.party]
    assert resent, "the restarted node re-sends its unacknowledged outbox"
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    assert Answer.calls == 2
    _assert_no_checkpoints(mock_network)


# ----- code changes between the crash and the restart ------------------------------------------

EDIT = {"mode": "original"}


@initiating_flow
class Editable(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        first = self.send_and_receive(self.other, "one", str).unwrap(str)
        if EDIT["mode"] == "log line":
            self.logger.info("a log line added in the new release")
        if EDIT["mode"] == "extra send":
            self.send(self.other, "surprise")
        second = self.send_and_receive(self.other, "two", str).unwrap(str)
        return first + second


@initiated_by(Editable)
class EditableResponder(UpperCasesTwice):
    pass


def _restart_after_first_answer(network: MockNetwork, mode: str) -> tuple[Node, Any]:
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    EDIT["mode"] = "original"
    handle = alice.start_flow(Editable(bob.party))
    network.run_network(max_messages=3)  # init, ack, confirm: Alice waits for "ONE"
    network.run_network(max_messages=1)
    network.stop_node(alice)
    network.run_network()
    EDIT["mode"] = mode
    alice = network.restart_node(alice)
    return alice, handle


def test_a_compatible_code_edit_resumes(mock_network: MockNetwork) -> None:
    try:
        alice, handle = _restart_after_first_answer(mock_network, "log line")
        restored = alice.handle(handle.id)
        mock_network.run_network()
        assert restored.result.result(timeout=0) == "ONETWO"
    finally:
        EDIT["mode"] = "original"


def test_an_incompatible_code_edit_hospitalises_with_nondeterminism_error(
    mock_network: MockNetwork,
) -> None:
    try:
        alice, handle = _restart_after_first_answer(mock_network, "extra send")
        alice.wake_hibernated()  # restore is lazy: replayed when woken
        [entry] = alice.hospital()
        assert entry.run_id == handle.id
        assert "NondeterminismError" in entry.diagnosis
        assert "journal record" in entry.diagnosis and "send to Bob" in entry.diagnosis
        assert alice.flows() == []
    finally:
        EDIT["mode"] = "original"


def test_a_tampered_checkpoint_is_hospitalised_and_other_flows_complete(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    victim = alice.start_flow(Ping(bob.party))
    survivor = alice.start_flow(Collect(bob.party))
    storage = alice.storage
    assert storage is not None
    path = storage.base_dir / "node.lmdb"
    mock_network.stop_node(alice)
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        db = env.open_db(b"steps", txn=txn)
        key = victim.id.uuid.bytes + (0).to_bytes(4, "big")
        value = bytearray(txn.get(key, db=db))
        value[-1] ^= 0x01
        txn.put(key, bytes(value), db=db)
    env.close()
    alice = mock_network.restart_node(alice)
    alice.wake_hibernated()  # restore is lazy: a flow's records are read when it wakes
    [entry] = alice.hospital()
    assert entry.run_id == victim.id and "authentication failed" in entry.diagnosis
    restored = alice.handle(survivor.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]


def test_killing_a_suspended_flow_deletes_its_checkpoint(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    mock_network.run_network()
    assert handle.result.done()
    handle = alice.start_flow(Collect(bob.party))
    assert alice.kill_flow(handle.id)
    mock_network.run_network()
    _assert_no_checkpoints(mock_network)


class Nap(FlowLogic[timedelta]):
    @suspendable
    def call(self) -> timedelta:
        before = self.now()
        self.sleep(60)
        return self.now() - before


def test_sleep_survives_a_restart(mock_network: MockNetwork) -> None:
    alice = mock_network.create_node("Alice")
    handle = alice.start_flow(Nap())
    mock_network.advance_time(45)
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)
    mock_network.advance_time(14)
    assert not restored.result.done()
    mock_network.advance_time(1)
    assert restored.result.result(timeout=0) == timedelta(seconds=60)


class Counter(SerializeAsToken):
    def __init__(self) -> None:
        self.value = 0

    @journaled
    def increment(self) -> int:
        self.value += 1
        return self.value


@initiating_flow
class CountThenAsk(FlowLogic[tuple[int, str]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[int, str]:
        counter = self.service_hub.get(Counter)
        number = counter.increment()
        answer = self.send_and_receive(self.other, "first?", str).unwrap(str)
        return number, answer


@initiated_by(CountThenAsk)
class CountAnswer(Answer):
    pass


def test_a_service_call_happens_once_across_a_crash(mock_network: MockNetwork) -> None:
    counter = Counter()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("counter", counter)
    handle = alice.start_flow(CountThenAsk(bob.party))
    assert counter.value == 1
    alice = mock_network.restart_node(alice)  # replays up to the receive: no second increment
    assert counter.value == 1
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == (1, "apple")
    assert counter.value == 1


class Patient(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        if not self.service_hub.get(Flags).ready:
            raise HospitalizeFlowException("the reference data is not loaded yet")
        return "treated"


class Flags(SerializeAsToken):
    ready = False


def test_hospitalised_flow_is_retried_by_the_operator(mock_network: MockNetwork) -> None:
    alice = mock_network.create_node("Alice")
    flags = Flags()
    alice.services.install("flags", flags)
    handle = alice.start_flow(Patient())
    [entry] = alice.hospital()
    assert "reference data is not loaded" in entry.diagnosis
    assert not handle.result.done()
    flags.ready = True
    assert alice.retry_flow(handle.id)
    assert alice.hospital() == []
    _assert_no_checkpoints(mock_network)


class Fails(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        raise FlowException("no")


def test_flow_exception_still_fails_normally(mock_network: MockNetwork) -> None:
    handle = mock_network.create_node("Alice").start_flow(Fails())
    assert str(handle.result.exception(timeout=0)) == "no"
    _assert_no_checkpoints(mock_network)


def test_checkpoint_dump_and_inspect_show_the_suspended_stack(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    [dumped] = alice.dump_checkpoints()
    assert dumped["flow_class"].endswith(":Collect")
    assert dumped["waiting_for"] == "a message from Bob"
    [frame] = dumped["stack"]
    assert frame["function"] == "Collect.call"
    assert "Party('Bob'" in frame["locals"]["self"] or "Collect" in frame["locals"]["self"]
    inspected = alice.inspect_flow(handle.id)
    assert inspected["sessions"][0]["peer"] == "Bob"
    import json

    json.dumps(alice.dump_checkpoints())  # JSON-ready


def _fail_next_writes(node: Node, count: int, db: str | None = None) -> FaultPlan:
    """Make the next ``count`` writes of ``node`` (to ``db``, or any) fail as a full disk
    would."""
    assert node.storage is not None
    plan = node.storage.inject_faults(FaultPlan())
    assert plan is not None
    return plan.fail_writes_to(db, count) if db else plan.fail_next_writes(count)


def test_a_step_that_cannot_be_stored_is_retried_from_its_checkpoint_with_backoff(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    _fail_next_writes(alice, 2, "inbox")
    mock_network.run_network()  # Alice's step receiving "apple" fails: it will be retried
    assert alice.flows() == [] and not handle.result.done()
    mock_network.advance_time(1)  # first retry after 1 s; Bob re-sends the unstored "apple"
    assert len(alice.flows()) == 1
    mock_network.run_network()  # ... whose step fails again
    assert alice.flows() == []
    mock_network.advance_time(1)  # the second retry waits 2 s
    assert alice.flows() == []
    mock_network.advance_time(1)
    [summary] = alice.flows()
    restored = alice.handle(summary.run_id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    assert alice.hospital() == []


def test_a_step_that_keeps_failing_is_hospitalised_after_three_retries(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    _fail_next_writes(alice, 100)
    mock_network.run_network()
    for _ in range(4):
        mock_network.advance_time(10)
        mock_network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == handle.id
    assert "storing a step failed 4 times" in entry.diagnosis
    assert "InjectedStorageFault" in entry.diagnosis


def test_killing_a_hospitalised_flow_tells_its_counterparty(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(Collect, Stall)
    alice.start_flow(Collect(bob.party))
    mock_network.run_network(max_messages=1)  # Bob's responder answers "apple" and waits
    [responder] = bob.flows()
    plan = _fail_next_writes(alice, 100)
    mock_network.run_network()
    responder_handle = bob.handle(responder.run_id)
    for _ in range(4):
        mock_network.advance_time(10)
        mock_network.run_network()
    [entry] = alice.hospital()
    plan.clear()  # the disk has room again
    assert alice.kill_flow(entry.run_id)
    mock_network.run_network()
    assert alice.hospital() == [] and alice.flows() == []
    error = responder_handle.result.exception(timeout=0)
    assert type(error).__name__ == "UnexpectedFlowEndException"
    # Bob's answers were never stored by Alice, so never acknowledged: Bob re-sends them, and
    # Alice, whose flow is gone, acknowledges and drops them.
    mock_network.advance_time(60)
    mock_network.run_network()
    _assert_no_checkpoints(mock_network)


class Stall(FlowLogic[None]):
    """Answers the first question, then waits for a second message that never comes."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "apple")
        self.receive(self.other, str)
        self.receive(self.other, str)


def test_draining_reports_when_in_flight_flows_have_finished(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    alice.set_flows_draining_mode(True)
    assert not alice.is_drained
    mock_network.run_network()
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    assert alice.is_drained


class Salted(FlowLogic[bytes]):
    @suspendable
    def call(self) -> bytes:
        salt = self.random_bytes(16)
        self.sleep(5)
        return salt


def test_random_bytes_are_the_same_after_a_restart(mock_network: MockNetwork) -> None:
    alice = mock_network.create_node("Alice")
    handle = alice.start_flow(Salted())
    drawn = alice.checkpoints.load_flow(handle.id).journal[0][2]
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)
    mock_network.advance_time(5)
    assert restored.result.result(timeout=0) == drawn and len(drawn) == 16


class Board(SerializeAsToken):
    """A durable-enough notice board for the test: a value flows wait for."""

    def __init__(self) -> None:
        self.notice: str | None = None


class AwaitNotice(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        board = self.service_hub.get(Board)
        return self.wait_for_event("notice", lambda: board.notice)


def test_a_flow_waits_for_an_event_across_a_restart(mock_network: MockNetwork) -> None:
    board = Board()
    alice = mock_network.create_node("Alice")
    alice.services.install("board", board)
    handle = alice.start_flow(AwaitNotice())
    assert alice.flows()[0].waiting_for == "the event notice"
    alice = mock_network.restart_node(alice)
    restored = alice.handle(handle.id)
    board.notice = "posted"
    alice.signal("notice")
    assert restored.result.result(timeout=0) == "posted"


@initiating_flow
class GatedPair(FlowLogic[list[str]]):
    """Asks once and takes two answers, but stops for the hospital between them until the
    node's flags say it may go on."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[str]:
        first = self.send_and_receive(self.other, "both?", str).unwrap(str)
        if not self.service_hub.get(Flags).ready:
            raise HospitalizeFlowException("waiting for an operator")
        answers = [first, self.receive(self.other, str).unwrap(str)]
        self.service_hub.get(Flags).answers = answers  # for the test to see after the retry
        return answers


@initiated_by(GatedPair)
class AnswerTwice(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "apple")
        self.send(self.other, "banana")


def test_messages_for_a_flow_parked_before_a_restart_are_kept_for_its_retry(
    mock_network: MockNetwork,
) -> None:
    flags = Flags()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("flags", flags)
    handle = alice.start_flow(GatedPair(bob.party))
    mock_network.run_network(max_messages=1)  # the init: Bob answers twice
    while not alice.hospital():  # deliver until Alice has taken "apple" and parked
        mock_network.run_network(max_messages=1)
    alice = mock_network.restart_node(alice)  # "banana" is still on its way
    assert [e.run_id for e in alice.hospital()] == [handle.id]
    mock_network.run_network()  # "banana" arrives for the parked flow and is kept
    storage = alice.storage
    assert storage is not None
    with storage.read() as txn:
        kept = [key[-4:] for key, _ in storage.prefix_items(txn, "inbox", b"Bob\0")]
    # Bob's confirm, "apple", "banana" and his end: all kept for the parked flow.
    assert kept == [seq.to_bytes(4, "big") for seq in range(4)]
    flags.ready = True
    assert alice.retry_flow(handle.id)
    mock_network.run_network()
    assert alice.flows() == [] and alice.hospital() == []
    assert flags.answers == ["apple", "banana"]
    _assert_no_checkpoints(mock_network)


def test_a_stopped_node_frees_its_suspended_flows() -> None:
    """Suspended greenlets in reference cycles are never collected: stop must end them."""
    import gc

    from fibers._state_machine import FlowStateMachine

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, FlowStateMachine) for o in gc.get_objects())

    before = alive()
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        for _ in range(20):
            alice.start_flow(Collect(bob.party))
        network.run_network(max_messages=3)
        assert alive() - before >= 20
        network.stop_node(alice)
        network.stop_node(bob)
    assert alive() == before


def test_resend_unacknowledged_sends_again_what_that_peer_has_not_acknowledged(
        mock_network: MockNetwork) -> None:
    # What a transport asks for when it reconnects to a peer: frames on the lost connection
    # may never have arrived.
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    mock_network.create_node("Charlie")
    handle = alice.start_flow(Ping(bob.party))
    [init] = mock_network.pending_messages()
    assert alice.resend_unacknowledged("Charlie") == 0
    assert alice.resend_unacknowledged("Bob") == 1
    assert [m.frame for m in mock_network.pending_messages()] == [init.frame, init.frame]
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"
    assert alice.resend_unacknowledged("Bob") == 0  # acknowledged: nothing left to re-send
    assert mock_network.pending_messages() == []
