"""Failure paths of hibernation and lazy restore (docs/architecture.md, "Hibernation and lazy
restore"; docs/checkpoint-format.md, "The wake index"): each test tries to lose, duplicate or
strand a message or a flow while it is hibernated or being woken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fibers import (
    FlowLogic,
    KilledFlowException,
    Node,
    Party,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._messages import InitialSessionMessage, decode_message
from fibers._wake_index import INDEX_MARKER
from fibers.testing import MockNetwork, explore
from tests.fibers.test_hibernation import Ask, Chat, _chat, _posted_once, _transfer, _view


def _until_alice_is_sent_something(net: MockNetwork, alice: Node[Any]) -> None:
    while not any(m.recipient == alice.party for m in net.pending_messages()):
        assert net.deliver_next() is not None


def test_a_message_that_arrives_while_the_wake_replay_diverges_is_kept_for_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bob's answer wakes Alice's flow, whose code changed: it is parked, and once the code is
    back and the operator retries it, it gets that answer and ends as if nothing happened."""
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _chat(plain)
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        _until_alice_is_sent_something(net, alice)
        assert alice.hibernated_flow_count == 1

        @suspendable
        def changed(self: Chat) -> list[str]:
            self.send(self.other, "something else")
            return [self.receive(self.other, str).unwrap(str)]

        monkeypatch.setattr(Chat, "call", changed)
        net.run_network()
        [entry] = alice.hospital()
        assert "NondeterminismError" in entry.diagnosis
        monkeypatch.undo()
        assert alice.retry_flow(handle.id)
        net.run_network()
        assert handle.result.result(timeout=0) == expected[0]
        assert _view(net, "Bob") == expected[1]
        assert alice.flows() == [] and alice.hospital() == [] and bob.flows() == []


def test_killing_a_hibernated_flow_whose_counterparty_is_down_tells_it_once_it_is_back(
    tmp_path: Path,
) -> None:
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        _until_alice_is_sent_something(net, alice)
        assert alice.hibernated_flow_count == 1 and bob.hibernated_flow_count == 1
        net.stop_node(bob)
        assert alice.kill_flow(handle.id)
        assert isinstance(handle.result.exception(timeout=0), KilledFlowException)
        assert alice.flows() == [] and alice.hibernated_flow_count == 0
        bob = net.restart_node(bob)
        [bob_flow] = bob.flows()
        bob_handle = bob.handle(bob_flow.run_id)
        net.run_network()
        assert isinstance(bob_handle.result.exception(timeout=0), UnexpectedFlowEndException)
        assert alice.flows() == [] and bob.flows() == [] and bob.hospital() == []


def test_killing_a_flow_restored_lazily_while_its_counterparty_is_down(
    tmp_path: Path,
) -> None:
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        _until_alice_is_sent_something(net, alice)
        net.stop_node(bob)
        alice = net.restart_node(alice)  # every flow hibernated (lazy restore)
        assert alice.hibernated_flow_count == 1
        assert alice.kill_flow(handle.id)
        assert alice.flows() == [] and alice.hospital() == []
        assert alice.dump_checkpoints() == []


def _rewrite(node: Node[Any], db: str, key: bytes, value: bytes | None) -> None:
    storage = node.storage
    assert storage is not None
    with storage.group() as group:
        if value is None:
            assert group.step(lambda txn: storage.delete(txn, db, key)) is None
        else:
            assert group.step(lambda txn: storage.put(txn, db, key, value)) is None


def _rows(node: Node[Any], db: str) -> list[tuple[bytes, bytes]]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return list(storage.prefix_items(txn, db, b""))


@pytest.mark.parametrize("restart", [False, True])
def test_a_tampered_wake_route_does_not_lose_the_message_it_routes(
    tmp_path: Path, restart: bool,
) -> None:
    """A route record that fails its check cannot say which flow it routes to: the message is
    neither dropped nor acknowledged as one of an ended session; the flow it was for gets it
    and ends, and other flows are not affected."""
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _chat(plain)
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        _until_alice_is_sent_something(net, alice)
        [(key, sealed)] = _rows(alice, "wake_routes")
        other = alice.start_flow(Chat(bob.party))
        _rewrite(alice, "wake_routes", key, sealed[:-1] + bytes([sealed[-1] ^ 1]))
        if restart:
            alice = net.restart_node(alice)
        outcomes = [alice.handle(h.id).result for h in (handle, other)]
        net.run_network()
        assert [o.result(timeout=0) for o in outcomes] == [expected[0]] * 2
        assert alice.flows() == [] and alice.hospital() == []
        assert _rows(alice, "wake_routes") == []


def test_a_hibernated_responder_takes_a_re_sent_session_init_as_a_duplicate(
    tmp_path: Path,
) -> None:
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _chat(plain)
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Chat(bob.party))
        [init] = [m for m in net.pending_messages()
                  if isinstance(decode_message(m.frame), InitialSessionMessage)]
        net.run_network(max_messages=1)
        assert bob.hibernated_flow_count == 1
        for _ in range(2):  # a re-send, then one more after a restart
            bob.deliver(alice.party, init.frame)
            assert bob.hibernated_flow_count + len(bob.live_flows) == 1
            bob = net.restart_node(bob)
        net.run_network()
        assert handle.result.result(timeout=0) == expected[0]
        assert _view(net, "Bob").count(expected[1][0]) <= 3  # the original and two copies
        assert bob.flows() == [] and bob.hospital() == []


@initiating_flow
class Waits(FlowLogic[str]):
    """Asks, then waits for the answer until a deadline that falls when the answer comes."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.send(self.other, "q")
        return self.receive(self.other, str, deadline=self.now() + _MINUTE).unwrap(str)


@initiated_by(Waits)
class SlowReply(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.sleep(59)
        self.send(self.other, "a")


_MINUTE = __import__("datetime").timedelta(seconds=60)


def _answer_at_the_deadline(net: MockNetwork, timer_first: bool) -> tuple[object, ...]:
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    handle = alice.start_flow(Waits(bob.party))
    net.run_network()
    net.clock.advance(60)  # Bob's sleep and Alice's deadline are both due
    bob.fire_due_timers()
    pending = [m for m in net.pending_messages() if m.recipient == alice.party]
    assert pending
    if timer_first:
        alice.fire_due_timers()
    alice.deliver_batch([(m.sender, m.frame) for m in pending])
    alice.fire_due_timers()
    net.run_network()
    outcome = handle.result
    error = outcome.exception(timeout=0)
    result = type(error) if error is not None else outcome.result(timeout=0)
    return result, alice.flows(), alice.hospital(), bob.flows(), _view(net, "Bob")


@pytest.mark.parametrize("timer_first", [False, True])
def test_a_message_and_a_deadline_due_together_wake_the_flow_once(
    tmp_path: Path, timer_first: bool,
) -> None:
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _answer_at_the_deadline(plain, timer_first)
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        assert _answer_at_the_deadline(net, timer_first) == expected
        assert _rows(net.node("Alice"), "wake_waits") == []


@pytest.mark.parametrize("flows", [2, 5])
def test_thrashing_one_live_parked_flow_among_many_loses_and_repeats_nothing(
    tmp_path: Path, flows: int,
) -> None:
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _chat(plain)
    with MockNetwork(tmp_path / "hib", max_live_parked=1) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handles = [alice.start_flow(Chat(bob.party)) for _ in range(flows)]
        net.run_network()
        assert [h.result.result(timeout=0) for h in handles] == [expected[0]] * flows
        seen = _view(net, "Bob")
        assert sorted(seen, key=repr) == sorted(expected[1] * flows, key=repr)
        assert alice.flows() == [] and bob.flows() == [] and alice.hospital() == []
        assert _rows(alice, "wake_routes") == [] and _rows(bob, "wake_routes") == []
        assert _rows(alice, "wake_waits") == [] and _rows(bob, "wake_waits") == []


def test_storage_from_before_the_wake_index_is_restored_eagerly_once_and_indexed(
    tmp_path: Path,
) -> None:
    """Storage whose wake index no step wrote (no marker, no routes, no waits): the restart
    replays every flow, their next steps write the index, and the next restart is lazy."""
    with MockNetwork(tmp_path / "plain") as plain:
        expected = _chat(plain)
    with MockNetwork(tmp_path / "old") as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        chat = alice.start_flow(Chat(bob.party))
        asking = alice.start_flow(Ask(bob.party))  # sleeps 30 s first
        net.stop_node(bob)
        net.run_network()
        assert _rows(alice, "wake_routes") and _rows(alice, "wake_waits")
        for db in ("wake_routes", "wake_waits"):
            for key, _ in _rows(alice, db):
                _rewrite(alice, db, key, None)
        _rewrite(alice, "meta", INDEX_MARKER, None)
        alice = net.restart_node(alice)
        assert alice.hibernated_flow_count == 0 and len(alice.live_flows) == 2  # eager
        assert INDEX_MARKER in [k for k, _ in _rows(alice, "meta")]
        assert len(_rows(alice, "wake_routes")) == 1 and len(_rows(alice, "wake_waits")) == 1
        alice = net.restart_node(alice)
        assert alice.hibernated_flow_count == 2  # lazy from now on
        outcomes = [alice.handle(h.id).result for h in (chat, asking)]
        bob = net.restart_node(bob)
        net.run_network()
        net.advance_time(30)
        net.run_network()
        net.advance_time(60)
        net.run_network()
        assert outcomes[0].result(timeout=0) == expected[0]
        assert outcomes[1].result(timeout=0) == "LATE?"
        assert alice.flows() == [] and alice.hospital() == [] and bob.flows() == []
        assert _rows(alice, "wake_routes") == [] and _rows(alice, "wake_waits") == []


def test_a_tampered_wait_record_wakes_its_flow_at_the_restart(tmp_path: Path) -> None:
    with MockNetwork(tmp_path / "hib", max_live_parked=0) as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        asking = alice.start_flow(Ask(bob.party))
        net.run_network()
        [(key, sealed)] = _rows(alice, "wake_waits")
        _rewrite(alice, "wake_waits", key, sealed[:-1] + bytes([sealed[-1] ^ 1]))
        alice = net.restart_node(alice)  # woken at once: its replay writes the record again
        assert alice.hospital() == []
        assert alice.checkpoints.load_flow(asking.id).wait is not None
        outcome = alice.handle(asking.id).result
        net.advance_time(30)
        net.run_network()
        net.advance_time(60)
        net.run_network()
        assert outcome.result(timeout=0) == "LATE?"
        assert alice.flows() == [] and alice.hospital() == []
        assert _rows(alice, "wake_waits") == []


def _one_live(directory: Path) -> MockNetwork:
    return MockNetwork(directory, max_live_parked=1)


def test_failing_writes_while_one_flow_stays_live_lose_and_repeat_nothing() -> None:
    """A step that fails while flows hibernate and wake in turn (one live parked flow): the
    failed flow is retried from storage, never hibernated with its step unstored."""
    report = explore(_transfer, _posted_once, network=_one_live, storage_faults=True,
                     crashes=False, reorder=False, duplicates=False)
    report.raise_first()
    assert report.exhaustive and report.schedules_run > 5
