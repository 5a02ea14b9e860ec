"""Hibernation and lazy restore (docs/architecture.md, "Hibernation and lazy restore").

Each scenario runs twice, on a network whose nodes never hibernate and on one whose nodes
hibernate every parked flow (``max_live_parked=0``) or after an idle time: the flows must end
the same way and their counterparties must see the same messages, as if nothing had
hibernated. Memory per hibernated flow is a benchmark (benchmarks/parked.py), not a test.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

import fibers._node
from fibers import (
    FlowLogic,
    KilledFlowException,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._flow_logic import StateMachineRunId
from fibers._messages import Ack, Data, ExistingSessionMessage, InitialSessionMessage
from fibers._state_machine import FlowStateMachine
from fibers._storage_faults import FaultPlan
from fibers.testing import MockNetwork, explore
from tests.fibers.explore_flows import Books, Transfer, install_books


@initiating_flow
class Chat(FlowLogic[list[str]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[str]:
        return [self.send_and_receive(self.other, word, str).unwrap(str)
                for word in ("one", "two", "three")]


@initiated_by(Chat)
class Chatter(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        for _ in range(3):
            word = self.receive(self.other, str).unwrap(str)
            self.send(self.other, word.upper())


@initiating_flow
class Ask(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.sleep(30)
        return self.send_and_receive(self.other, "late?", str).unwrap(str)


@initiated_by(Ask)
class SlowAnswer(FlowLogic[str]):
    """Answers after a minute's sleep, then waits for a last word it may never get."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        question = self.receive(self.other, str).unwrap(str)
        self.sleep(60)
        self.send(self.other, question.upper())
        return "answered"


def _network(tmp_path: Path, name: str, **settings: Any) -> MockNetwork:
    return MockNetwork(tmp_path / name, **settings)


def _view(net: MockNetwork, recipient: str) -> list[tuple[object, ...]]:
    """What ``recipient`` was sent, without session ids (random) and acknowledgements."""
    seen: list[tuple[object, ...]] = []
    for entry in net.transcript:
        message = entry.message
        if entry.recipient != recipient or isinstance(message, Ack):
            continue
        if isinstance(message, InitialSessionMessage):
            seen.append((entry.sender, "init", message.flow_class, message.first_payload))
        elif isinstance(message, ExistingSessionMessage):
            body = message.body
            payload = body.payload if isinstance(body, Data) else type(body).__name__
            seen.append((entry.sender, message.seq, payload))
    return seen


def _alive(run_id: StateMachineRunId) -> list[FlowStateMachine]:
    gc.collect()
    return [o for o in gc.get_objects()
            if isinstance(o, FlowStateMachine) and o.run_id == run_id and not o.abandoned]


def _chat(net: MockNetwork) -> tuple[Any, Any]:
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    handle = alice.start_flow(Chat(bob.party))
    net.run_network()
    return handle.result.result(timeout=0), _view(net, "Bob")


def test_flows_hibernated_by_count_wake_by_message_and_finish_as_if_never_hibernated(
    tmp_path: Path,
) -> None:
    with _network(tmp_path, "plain") as plain:
        expected = _chat(plain)
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        # Parked at its first receive and hibernated: no state machine, listed as such.
        assert alice.hibernated_flow_count == 1 and _alive(handle.id) == []
        [summary] = alice.flows()
        assert (summary.run_id, summary.status) == (handle.id, "HIBERNATED")
        assert summary.flow_class.endswith(":Chat")
        woken = 0
        while net.deliver_next() is not None:
            woken += 1
            assert _alive(handle.id) == [] or handle.result.done()  # hibernated again
        assert (handle.result.result(timeout=0), _view(net, "Bob")) == expected
        assert alice.flows() == [] and bob.flows() == [] and alice.hibernated_flow_count == 0
        assert bob.hospital() == [] and alice.hospital() == []


def test_flows_hibernate_after_their_idle_time_and_wake_by_timer_and_message(
    tmp_path: Path,
) -> None:
    def run(net: MockNetwork) -> tuple[Any, Any, Any]:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Ask(bob.party))
        net.advance_time(30)
        net.run_network()  # Bob now sleeps a minute; Alice waits for his answer
        counts = (alice.hibernated_flow_count, bob.hibernated_flow_count)
        net.advance_time(5)
        counts += (alice.hibernated_flow_count, bob.hibernated_flow_count)
        net.advance_time(6)  # 11 s idle: both hibernate
        counts += (alice.hibernated_flow_count, bob.hibernated_flow_count)
        net.advance_time(60)  # Bob's timer wakes him; his answer wakes Alice
        net.run_network()
        return handle.result.result(timeout=0), _view(net, "Bob"), counts

    with _network(tmp_path, "plain") as plain:
        result, view, _ = run(plain)
    with _network(tmp_path, "hib", hibernate_after=10) as net:
        assert run(net) == (result, view, (0, 0, 0, 0, 1, 1))
        assert [n.flows() for n in net.nodes] == [[], []]


def test_a_sleeping_flow_hibernates_and_its_timer_wakes_it(tmp_path: Path) -> None:
    with _network(tmp_path, "plain") as plain:
        plain.create_node("Bob")
        expected = _asked_late(plain)
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        net.create_node("Bob")
        assert _asked_late(net) == expected


def _asked_late(net: MockNetwork) -> tuple[Any, Any]:
    alice = net.create_node("Alice")
    handle = alice.start_flow(Ask(net.party("Bob")))
    assert not handle.result.done()
    net.advance_time(29)
    net.run_network()
    assert _view(net, "Bob") == []
    net.advance_time(1)
    while net.step():
        pass
    return handle.result.result(timeout=0), _view(net, "Bob")


def _killed(net: MockNetwork) -> tuple[Any, ...]:
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    handle = alice.start_flow(Ask(bob.party))
    net.advance_time(30)
    net.run_network()  # Bob's SlowAnswer sleeps; Alice waits for it
    [bob_flow] = bob.flows()
    bob_handle = bob.handle(bob_flow.run_id)
    assert alice.kill_flow(handle.id)
    net.run_network()
    net.advance_time(60)  # Bob wakes, sends, ends (Alice's session is over)
    net.run_network()
    error = handle.result.exception(timeout=0)
    return (type(error), alice.flows(), bob.flows(), bob_handle.result.result(timeout=0),
            _view(net, "Bob"), _view(net, "Alice"))


def test_killing_a_hibernated_flow_wakes_it_and_tells_its_counterparties(
    tmp_path: Path,
) -> None:
    with _network(tmp_path, "plain") as plain:
        expected = _killed(plain)
    assert expected[0] is KilledFlowException
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        assert _killed(net) == expected


def test_an_inspection_wakes_a_hibernated_flow_which_then_finishes(tmp_path: Path) -> None:
    with _network(tmp_path, "plain") as plain:
        expected = _chat(plain)
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        assert alice.hibernated_flow_count == 1
        seen = alice.inspect_flow(handle.id)
        assert seen["waiting_for"] == "a message from Bob" and seen["status"] == "SUSPENDED"
        assert seen["stack"] and seen["stack"][0]["function"] == "Chat.call"
        assert alice.hibernated_flow_count == 1  # and asleep again, the node being idle
        net.run_network()
        assert (handle.result.result(timeout=0), _view(net, "Bob")) == expected


@pytest.mark.parametrize("write", range(8))
def test_a_write_that_fails_while_waking_is_retried_and_loses_nothing(
    tmp_path: Path, write: int,
) -> None:
    """The step of the woken flow fails at its ``write``-th write (whatever it writes): the
    flow is retried from storage after its backoff and ends as if nothing had happened."""
    with _network(tmp_path, "plain") as plain:
        expected = _chat(plain)
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        while not any(m.recipient == alice.party for m in net.pending_messages()):
            net.deliver_next()
        assert alice.hibernated_flow_count == 1
        storage = alice.storage
        assert storage is not None
        storage.inject_faults(FaultPlan().fail_writes(write))
        while net.step():
            pass
        storage.inject_faults(None)
        assert (handle.result.result(timeout=0), _view(net, "Bob")) == expected
        assert alice.flows() == [] and alice.hospital() == []


def test_a_hibernated_flow_whose_code_changed_is_hospitalised_at_wake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        while not any(m.recipient == alice.party for m in net.pending_messages()):
            net.deliver_next()  # Bob's first answer is on its way; Alice is hibernated
        assert alice.hibernated_flow_count == 1
        sent_before = len([v for v in _view(net, "Bob") if v[0] == "Alice"])

        @suspendable
        def changed(self: Chat) -> list[str]:
            self.send(self.other, "something else")
            return [self.receive(self.other, str).unwrap(str)]

        monkeypatch.setattr(Chat, "call", changed)
        net.run_network()
        [entry] = alice.hospital()
        assert entry.run_id == handle.id and "NondeterminismError" in entry.diagnosis
        # Nothing the changed code did left Alice (only acknowledgements did).
        assert len([v for v in _view(net, "Bob") if v[0] == "Alice"]) == sent_before
        assert alice.flows() == [] and not handle.result.done()


def test_a_restarted_node_takes_a_message_before_replaying_any_other_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _network(tmp_path, "plain") as plain:
        expected = _chat(plain)
    with _network(tmp_path, "lazy") as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handles = [alice.start_flow(Chat(bob.party)) for _ in range(3)]
        net.stop_node(bob)  # Bob's answers wait: every flow of Alice is parked
        net.run_network()
        built: list[StateMachineRunId] = []  # Alice's state machines built from storage
        ours = {h.id for h in handles}

        class Counting(FlowStateMachine):
            def __init__(self, node: Any, run_id: StateMachineRunId, flow: Any) -> None:
                if run_id in ours:
                    built.append(run_id)
                super().__init__(node, run_id, flow)

        monkeypatch.setattr(fibers._node, "FlowStateMachine", Counting)
        alice = net.restart_node(alice)
        assert built == [] and alice.hibernated_flow_count == 3
        assert {s.status for s in alice.flows()} == {"HIBERNATED"}
        bob = net.restart_node(bob)
        while not built:  # Bob's answers arrive one by one: the first wakes one flow only
            assert net.deliver_next() is not None
        assert len(set(built)) == 1 and alice.hibernated_flow_count == 2
        restored = [alice.handle(h.id) for h in handles]  # hibernated or running
        net.run_network()
        assert [h.result.result(timeout=0) for h in restored] == [expected[0]] * 3
        assert sorted(set(built)) == sorted(h.id for h in handles)  # each replayed once...
        assert len(built) == 3  # ...and only once: it was woken by its own message
        assert alice.flows() == [] and alice.hospital() == []


def test_a_node_without_storage_refuses_hibernation_settings(tmp_path: Path) -> None:
    with MockNetwork(tmp_path / "n", durable=False, max_live_parked=0) as net, \
            pytest.raises(Exception, match="need storage"):
        net.create_node("Alice")


def _transfer(net: MockNetwork) -> None:
    install_books(net)
    a, b = net.create_node("A"), net.create_node("B")
    a.start_flow(Transfer(b.party, "t1", 5))


def _posted_once(net: MockNetwork) -> None:
    for node in net.nodes:
        assert node.services.get(Books).posted().get("t1") == 1
        assert node.flows() == [] and node.hospital() == []


def _hibernating(directory: Path) -> MockNetwork:
    return MockNetwork(directory, max_live_parked=0)


def test_every_crash_point_order_and_duplicate_with_flows_hibernating() -> None:
    """Every message wakes a hibernated flow by replay: crashes before and after each commit
    of the woken flows, reorderings and duplicates lose and repeat nothing."""
    report = explore(_transfer, _posted_once, network=_hibernating)
    report.raise_first()
    assert report.exhaustive and report.schedules_run > 50


def test_failing_writes_while_waking_lose_nothing() -> None:
    report = explore(_transfer, _posted_once, network=_hibernating, storage_faults=True,
                     crashes=False, reorder=False, duplicates=False)
    report.raise_first()
    assert report.exhaustive and report.schedules_run > 5



def test_a_result_callback_survives_hibernation_even_when_no_handle_is_kept(
    tmp_path: Path,
) -> None:
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        results: list[object] = []
        alice.start_flow(Chat(bob.party)).result.add_done_callback(
            lambda future: results.append(future.result()))
        assert alice.hibernated_flow_count == 1
        gc.collect()  # the handle is gone; the future with its callback is kept
        net.run_network()
        assert results == [["ONE", "TWO", "THREE"]]


@initiating_flow
class Noted(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        note = "kept while hibernated"
        return note + ": " + self.send_and_receive(self.other, "one", str).unwrap(str)


@initiated_by(Noted)
class NotedAnswer(Chatter):
    @suspendable
    def call(self) -> None:
        self.send(self.other, self.receive(self.other, str).unwrap(str).upper())


def test_a_hibernating_flow_s_locals_are_stored_and_shown_without_waking_it(
    tmp_path: Path,
) -> None:
    with _network(tmp_path, "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Noted(bob.party))
        assert alice.hibernated_flow_count == 1
        [dumped] = alice.dump_checkpoints()
        assert dumped["status"] == "HIBERNATED" and alice.hibernated_flow_count == 1
        [frame] = [f for f in dumped["stack"] if f["function"] == "Noted.call"]
        assert frame["locals"]["note"] == "'kept while hibernated'"
        net.run_network()
        assert handle.result.result(timeout=0) == "kept while hibernated: ONE"
        assert alice.dump_checkpoints() == []
