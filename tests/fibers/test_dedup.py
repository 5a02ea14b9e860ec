"""Session-init dedup records are pruned once a session has ended on both sides, and a
re-sent init is still never run twice (see fibers/_dedup.py for the argument)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fibers import FlowLogic, Party, SerializeAsToken, initiated_by, initiating_flow, suspendable
from fibers import _dedup as dedup
from fibers._checkpoint_store import message_key, session_prefix
from fibers._messages import InitialSessionMessage, decode_message
from fibers._node import Node
from fibers._services import journaled
from fibers.testing import MockNetwork


class Runs(SerializeAsToken):
    """Counts responder runs; journaled, so a replay after a restart does not count again."""

    def __init__(self) -> None:
        self.count = 0

    @journaled
    def started(self) -> None:
        self.count += 1


@initiating_flow
class Hello(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, "hello", str).unwrap(str)


@initiated_by(Hello)
class Hi(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.service_hub.runs.started()
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
