"""Session-init dedup records are pruned once a session has ended on both sides, and a
re-sent init is still never run twice (see fibers/_dedup.py for the argument)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import FlowLogic, Party, SerializeAsToken, initiated_by, initiating_flow, suspendable
from fibers import _dedup as dedup
from fibers._checkpoint_store import message_key, session_prefix
from fibers._messages import (
    Confirm,
    End,
    ExistingSessionMessage,
    InitialSessionMessage,
    decode_message,
)
from fibers._node import Node
from fibers._services import journaled
from fibers.testing import MockNetwork
from tests.fibers._flows import AsksOnce


class Runs(SerializeAsToken):
    """Counts responder runs; journaled, so a replay after a restart does not count again."""

    def __init__(self) -> None:
        self.count = 0

    @journaled
    def started(self) -> None:
        self.count += 1


@initiating_flow
class Hello(AsksOnce):
    QUESTION = "hello"


@initiated_by(Hello)
class Hi(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.service_hub.get(Runs).started()
        self.receive(self.other, str)
        self.send(self.other, "hi")


def _dedup_records(node: Node) -> dict[bytes, bytes]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return dict(storage.prefix_items(txn, "dedup", b""))


def _outbox_keys(node: Node) -> list[bytes]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return [key for key, _ in storage.prefix_items(txn, "outbox", b"")]


def _check(alice: Node, bob: Node, record: bytes, held: bytes) -> None:
    """A missing dedup record on Bob implies Alice can no longer re-send the init."""
    if record not in _dedup_records(bob):
        assert held not in _outbox_keys(alice), "the init can be re-sent, unguarded"


def _network(base: Path) -> tuple[MockNetwork, Node, Node, Runs]:
    network = MockNetwork(base)
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    runs = Runs()
    bob.services.install("runs", runs)
    return network, alice, bob, runs


def test_dedup_records_do_not_grow_with_completed_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedup, "RECENT_ENDED", 5)
    network, alice, bob, runs = _network(tmp_path)
    sizes = []
    for rounds in (20, 40):
        for _ in range(rounds):
            handle = alice.start_flow(Hello(bob.party))
            network.run_network()
            assert handle.result.result(timeout=0) == "hi"
        sizes.append(len(_dedup_records(bob)))
    assert runs.count == 60
    # 5 ended sessions, their 5 index entries and the counter, after 20 as after 60 sessions.
    assert sizes == [11, 11]
    assert all(v.startswith(b"E") for k, v in _dedup_records(bob).items() if k[:1] not in
               (b"\xfe", b"\xff"))
    assert _outbox_keys(alice) == [] and _outbox_keys(bob) == []
    network.stop_nodes()


def test_a_re_sent_init_of_a_recently_ended_session_is_not_run_again(tmp_path: Path) -> None:
    network, alice, bob, runs = _network(tmp_path)
    handle = alice.start_flow(Hello(bob.party))
    [init] = network.network.queue
    network.run_network()
    assert handle.result.result(timeout=0) == "hi" and runs.count == 1
    # A late copy (e.g. replayed by a transport) after the session ended on both sides.
    bob.deliver_batch([(alice.party, init.frame)])
    network.run_network()
    assert runs.count == 1 and bob.flows() == []


@pytest.mark.parametrize("victim", ["Alice", "Bob"])
def test_an_init_is_run_once_whatever_restart_and_however_soon_records_go(
    tmp_path: Path, victim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ended records evicted at once, restart either node after every message: the
    responder runs once, and at every moment a missing dedup record implies the initiator no
    longer holds the init it could re-send."""
    monkeypatch.setattr(dedup, "RECENT_ENDED", 0)
    point = 0
    while True:
        network, alice, bob, runs = _network(tmp_path / f"{victim}-{point}")
        handle = alice.start_flow(Hello(bob.party))
        [init] = network.network.queue
        message = decode_message(init.frame)
        assert isinstance(message, InitialSessionMessage)
        sid = message.initiator_session_id
        record, held = session_prefix("Alice", sid, False), message_key("Bob", sid, False, 0)

        delivered = 0
        while delivered < point and network.run_network(max_messages=1):
            delivered += 1
            _check(alice, bob, record, held)
        if delivered < point:  # every point was tried
            network.stop_nodes()
            break
        node = network.restart_node(network.node(victim))
        if victim == "Alice":
            alice = node
            handle = alice.handle(handle.id) if not handle.result.done() else handle
        else:
            bob = node
        while network.run_network(max_messages=1):
            _check(alice, bob, record, held)
        assert handle.result.result(timeout=0) == "hi", point
        assert runs.count == 1, point
        assert record not in _dedup_records(bob), point  # pruned in the end
        network.stop_nodes()
        point += 1
    assert point > 4


# ----- messages of sessions without a record, and when records end (fibers/_dedup.py rules) -----


class SendsTwoTakesOne(FlowLogic[str]):
    """Sends "a" and "b", then returns the one answer."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.send(self.other, "a")
        self.send(self.other, "b")
        return self.receive(self.other, str).unwrap(str)


@initiating_flow
class TwoSends(SendsTwoTakesOne):
    pass


@initiated_by(TwoSends)
class ReadsOne(FlowLogic[None]):
    """Answers after the first message; the initiator's second is never consumed."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.service_hub.get(Runs).started()
        first = self.receive(self.other, str).unwrap(str)
        self.send(self.other, first + "!")


@initiating_flow
class Pair(SendsTwoTakesOne):
    pass


@initiated_by(Pair)
class ReadsTwo(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.service_hub.get(Runs).started()
        first = self.receive(self.other, str).unwrap(str)
        self.send(self.other, first + self.receive(self.other, str).unwrap(str))


@initiating_flow
class Fire(FlowLogic[None]):
    """Sends and ends at once: its End reaches the responder before the responder finishes."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "x")


@initiated_by(Fire)
class Catch(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)


def _session_messages(network: MockNetwork, sender: str) -> list[ExistingSessionMessage]:
    decoded = [decode_message(m.frame) for m in network.pending_messages()
               if m.sender.name == sender]
    return [m for m in decoded if isinstance(m, ExistingSessionMessage)]


def test_a_message_before_its_init_is_not_acknowledged_and_comes_again(tmp_path: Path) -> None:
    """Bob gets the initiator's second message before its init (reordered, or the init was
    lost in a crash): no acknowledgement, so Alice keeps and re-sends it after the init."""
    network, alice, bob, runs = _network(tmp_path)
    handle = alice.start_flow(Pair(bob.party))
    init, second = network.network.queue
    network.network.queue.clear()
    bob.deliver_batch([(alice.party, second.frame)])
    assert bob.frame_stats.unknown_session == 1 and bob.flows() == []
    assert network.pending_messages() == []  # not acknowledged
    bob.deliver_batch([(alice.party, init.frame)])
    network.run_network()
    assert not handle.result.done()  # Bob's responder waits for message 1 ...
    network.advance_time(2)  # ... which Alice re-sends, since it was never acknowledged
    network.run_network()
    assert handle.result.result(timeout=0) == "ab" and runs.count == 1
    assert _outbox_keys(alice) == [] and _outbox_keys(bob) == []
    network.stop_nodes()


def test_the_responders_end_makes_the_initiator_forget_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's second message is lost on the wire; Bob's responder ends without it. Bob's End
    deletes it from Alice's outbox (nobody will consume it) before Alice acknowledges the End,
    which ends Bob's record; a late copy is then dropped unacknowledged, and runs nothing."""
    monkeypatch.setattr(dedup, "RECENT_ENDED", 0)
    network, alice, bob, runs = _network(tmp_path)
    handle = alice.start_flow(TwoSends(bob.party))
    init, second = network.network.queue
    network.network.queue.remove(second)
    network.run_network()
    assert handle.result.result(timeout=0) == "a!" and runs.count == 1
    assert _outbox_keys(alice) == [] and _outbox_keys(bob) == []
    message = decode_message(init.frame)
    assert isinstance(message, InitialSessionMessage)
    assert session_prefix("Alice", message.initiator_session_id, False) \
        not in _dedup_records(bob)
    bob.deliver_batch([(alice.party, second.frame)])
    network.run_network()
    assert bob.frame_stats.unknown_session == 1 and bob.flows() == [] and runs.count == 1
    network.stop_nodes()


def test_a_record_ends_only_when_the_responders_final_message_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice acknowledges Bob's confirm and answer, but Bob's End is delayed: the record
    stays (Alice may still hold messages of the session) until Alice acknowledges the End."""
    monkeypatch.setattr(dedup, "RECENT_ENDED", 0)
    network, alice, bob, _ = _network(tmp_path)
    handle = alice.start_flow(Hello(bob.party))
    [init] = network.network.queue
    message = decode_message(init.frame)
    assert isinstance(message, InitialSessionMessage)
    record = session_prefix("Alice", message.initiator_session_id, False)
    network.run_network(max_messages=1)  # the init: Bob's responder runs to its end
    [end] = [m for m in network.network.queue if isinstance(
        getattr(decode_message(m.frame), "body", None), End)]
    network.network.queue.remove(end)
    network.run_network()
    assert handle.result.result(timeout=0) == "hi"
    assert _dedup_records(bob)[record].startswith(b"F")
    bob.deliver_batch([])  # Alice's acknowledgements were handled: still there
    assert record in _dedup_records(bob)
    alice.deliver_batch([(bob.party, end.frame)])
    network.run_network()
    assert record not in _dedup_records(bob)
    assert _outbox_keys(alice) == [] and _outbox_keys(bob) == []
    network.stop_nodes()


def test_a_responder_ends_its_side_with_a_message_even_after_the_initiator_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice's init and End reach Bob together: Bob's responder still sends its End (the
    final message its record waits for), which Alice, long finished, acknowledges."""
    monkeypatch.setattr(dedup, "RECENT_ENDED", 0)
    network, alice, bob, _ = _network(tmp_path)
    handle = alice.start_flow(Fire(bob.party))
    assert len(network.network.queue) == 2  # the init and Alice's End
    network.deliver_all()
    bodies = [type(m.body) for m in _session_messages(network, "Bob")]
    assert bodies == [Confirm, End], bodies
    network.run_network()
    assert handle.result.done() and bob.flows() == []
    assert [k for k in _dedup_records(bob) if k[:1] not in (b"\xfe", b"\xff")] == []
    assert _outbox_keys(alice) == [] and _outbox_keys(bob) == []
    network.stop_nodes()
