"""``NodeRuntime``: one thread runs a node (calls, timers, inbound batches), threaded on the
real clock or pumped by hand, deterministically."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path

import pytest

from fibers import FlowLogic, NetworkMap, Node, NodeIdentity, Party, suspendable
from fibers._clock import SystemClock, TestClock
from fibers.runtime import ManualDriver, NodeRuntime, NodeStoppedError
from fibers.storage import NodeStorage
from fibers.testing import MockNetwork
from fibers.transport import InMemoryNetwork, Transport
from tests.fibers.test_transport import Ping


class WhereAmI(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        return threading.current_thread().name


class Nap(FlowLogic[timedelta]):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @suspendable
    def call(self) -> timedelta:
        before = self.now()
        self.sleep(self.seconds)
        return self.now() - before


def _runtime(
    hub: InMemoryNetwork,
    identity: NodeIdentity,
    network_map: NetworkMap,
    *,
    clock: TestClock | SystemClock | None = None,
    directory: Path | None = None,
    max_batch: int = 512,
) -> NodeRuntime:
    network_map.add(identity.party)

    def build(transport: Transport) -> Node:
        storage = NodeStorage.open(directory, sync=False) if directory is not None else None
        return Node(identity, transport, network_map=network_map, clock=clock, storage=storage)

    return NodeRuntime(hub.endpoint(identity.party), build, max_batch=max_batch)


# ----- threaded ----------------------------------------------------------------------------------

def test_a_flow_started_from_another_thread_runs_on_the_node_thread() -> None:
    runtime = _runtime(InMemoryNetwork(immediate=True), NodeIdentity("Alice"), NetworkMap())
    runtime.start()
    try:
        handle = runtime.call(lambda node: node.start_flow(WhereAmI())).result(timeout=10)
        assert handle.result.result(timeout=10) == "fibers-node-Alice"
    finally:
        runtime.stop()


def test_two_threaded_nodes_finish_a_conversation_started_through_call() -> None:
    hub, network_map = InMemoryNetwork(immediate=True), NetworkMap()
    alice = _runtime(hub, NodeIdentity("Alice"), network_map)
    bob = _runtime(hub, NodeIdentity("Bob"), network_map)
    alice.start()
    bob.start()
    try:
        starts = [alice.call(lambda node, i=i: node.start_flow(Ping(bob.party, i)))
                  for i in range(50)]
        results = [start.result(timeout=10).result.result(timeout=10) for start in starts]
        assert results == [i + 1 for i in range(50)]
        assert alice.call(lambda node: node.flows()).result(timeout=10) == []
    finally:
        alice.stop()
        bob.stop()


def test_a_sleep_fires_when_an_injected_clock_reaches_its_deadline() -> None:
    clock = TestClock()
    runtime = _runtime(InMemoryNetwork(immediate=True), NodeIdentity("Alice"), NetworkMap(),
                       clock=clock)
    runtime.start()
    try:
        handle = runtime.call(lambda node: node.start_flow(Nap(3600))).result(timeout=10)
        # The node thread checked the deadline (through the call's round) and it is not due.
        assert runtime.call(lambda node: node.next_deadline()).result(timeout=10) is not None
        assert not handle.result.done()
        clock.advance(3600)
        runtime.wake()
        assert handle.result.result(timeout=10) == timedelta(seconds=3600)
    finally:
        runtime.stop()


def test_a_short_sleep_fires_on_the_real_clock_without_anyone_pumping() -> None:
    runtime = _runtime(InMemoryNetwork(immediate=True), NodeIdentity("Alice"), NetworkMap(),
                       clock=SystemClock())
    runtime.start()
    try:
        handle = runtime.call(lambda node: node.start_flow(Nap(0.05))).result(timeout=10)
        assert handle.result.result(timeout=10) >= timedelta(seconds=0.05)
    finally:
        runtime.stop()


def test_a_threaded_node_stopped_mid_conversation_finishes_it_after_a_restart(
    tmp_path: Path,
) -> None:
    hub, network_map = InMemoryNetwork(immediate=True), NetworkMap()
    bob_id = NodeIdentity("Bob")
    alice = _runtime(hub, NodeIdentity("Alice"), network_map, directory=tmp_path / "Alice")
    bob = _runtime(hub, bob_id, network_map, directory=tmp_path / "Bob")
    alice.start()
    bob.start()
    bob.stop()
    try:
        handle = alice.call(lambda node: node.start_flow(Ping(bob_id.party, 1))).result(10)
        assert not handle.result.done()
        assert [m.recipient for m in hub.queue] == [bob_id.party]  # waiting for Bob
        bob = _runtime(hub, bob_id, network_map, directory=tmp_path / "Bob")
        bob.start()
        assert handle.result.result(timeout=10) == 2
    finally:
        alice.stop()
        bob.stop()


def test_calls_report_errors_run_inline_on_the_node_thread_and_fail_once_stopped() -> None:
    runtime = _runtime(InMemoryNetwork(immediate=True), NodeIdentity("Alice"), NetworkMap())
    runtime.start()
    try:
        def boom(node: Node) -> None:
            raise LookupError(f"nothing on {node.party}")

        with pytest.raises(LookupError, match="nothing on Alice"):
            runtime.call(boom).result(timeout=10)

        def nested(node: Node) -> int:
            inner = runtime.call(lambda _: 5)  # on the node thread: runs at once
            assert inner.done()
            return inner.result(timeout=0)

        assert runtime.call(nested).result(timeout=10) == 5
    finally:
        runtime.stop()
    assert not runtime.is_running
    with pytest.raises(NodeStoppedError, match="stopped"):
        runtime.call(lambda node: None).result(timeout=10)
    with pytest.raises(RuntimeError, match="already started"):
        runtime.start()
    runtime.stop()  # idempotent


def test_an_error_building_the_node_is_raised_by_start() -> None:
    hub = InMemoryNetwork()
    alice = NodeIdentity("Alice")

    def build(transport: Transport) -> Node:
        raise OSError("the storage directory is not writable")

    runtime = NodeRuntime(hub.endpoint(alice.party), build)
    with pytest.raises(OSError, match="not writable"):
        runtime.start()
    assert not runtime.is_running and not hub.is_started(alice.party)


def test_a_node_built_for_another_party_than_the_runtimes_is_refused() -> None:
    hub = InMemoryNetwork()
    alice, bob = NodeIdentity("Alice"), NodeIdentity("Bob")
    runtime = NodeRuntime(hub.endpoint(alice.party),
                          lambda _: Node(bob, hub.endpoint(bob.party)))
    with pytest.raises(ValueError, match="transport speaks for Alice but the node built is Bob"):
        runtime.start(threaded=False)
    assert not runtime.is_running and not hub.is_started(alice.party)
    with pytest.raises(NodeStoppedError):
        runtime.call(lambda node: None).result(timeout=0)


# ----- manual ------------------------------------------------------------------------------------

def test_manual_mode_moves_only_when_pumped_even_for_calls_from_other_threads() -> None:
    runtime = _runtime(InMemoryNetwork(), NodeIdentity("Alice"), NetworkMap())
    runtime.start(threaded=False)
    calls: list[Future[str]] = []
    other = threading.Thread(target=lambda: calls.append(runtime.call(lambda n: n.party.name)))
    other.start()
    other.join()
    assert not calls[0].done() and runtime.waiting == 1
    assert runtime.pump() == 1
    assert calls[0].result(timeout=0) == "Alice"
    errors: list[BaseException] = []

    def pump_elsewhere() -> None:
        try:
            runtime.pump()
        except RuntimeError as exc:
            errors.append(exc)

    other = threading.Thread(target=pump_elsewhere)
    other.start()
    other.join()
    assert "must run on its node thread" in str(errors[0])
    runtime.stop()


def test_manual_mode_hands_inbound_frames_over_in_batches_of_at_most_max_batch() -> None:
    hub, network_map = InMemoryNetwork(), NetworkMap()
    alice, bob = NodeIdentity("Alice"), NodeIdentity("Bob")
    batches: list[int] = []

    class CountingNode(Node):
        def deliver_batch(self, frames: list[tuple[Party, bytes]]) -> None:
            batches.append(len(frames))
            super().deliver_batch(frames)

    network_map.add(alice.party)
    network_map.add(bob.party)
    driver = ManualDriver(hub)
    for identity, cls in ((alice, Node), (bob, CountingNode)):
        runtime = NodeRuntime(
            hub.endpoint(identity.party),
            lambda t, identity=identity, cls=cls: cls(identity, t, network_map=network_map),
            max_batch=3)
        driver.add(runtime)
        runtime.start(threaded=False)
    handles = [driver.runtime("Alice").node.start_flow(Ping(bob.party, i)) for i in range(5)]
    assert hub.deliver_all() == 5  # into Bob's inbound queue: nothing handled yet
    assert batches == []
    assert driver.runtime("Bob").run_until_quiet() == 5
    assert batches == [3, 2]
    while driver.deliver_all():
        pass
    assert [h.result.result(timeout=0) for h in handles] == [1, 2, 3, 4, 5]


def _conversation() -> list[tuple[str, str, str]]:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        for i in range(5):
            alice.start_flow(Ping(bob.party, i))
            bob.start_flow(Ping(alice.party, i))
            network.run_network(max_messages=3)
        network.advance_time(1)
        network.run_network()
        return [(e.sender, e.recipient, type(e.message).__name__) for e in network.transcript]


def test_manual_mode_is_deterministic() -> None:
    first = _conversation()
    assert len(first) > 20
    assert all(_conversation() == first for _ in range(3))


def test_the_mock_networks_step_moves_its_clock_to_the_next_deadline() -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        handle = alice.start_flow(Nap(30))
        before = network.clock.now()
        assert network.step() is True
        assert handle.result.result(timeout=0) == timedelta(seconds=30)
        assert network.clock.now() - before == timedelta(seconds=30)
        assert network.step() is False


def test_stopping_a_runtime_first_handles_the_frames_that_already_reached_it(
    tmp_path: Path,
) -> None:
    hub, network_map = InMemoryNetwork(), NetworkMap()
    driver = ManualDriver(hub)
    alice = _runtime(hub, NodeIdentity("Alice"), network_map, directory=tmp_path / "Alice")
    bob = _runtime(hub, NodeIdentity("Bob"), network_map, directory=tmp_path / "Bob")
    for runtime in (alice, bob):
        driver.add(runtime)
        runtime.start(threaded=False)
    handle = alice.node.start_flow(Ping(bob.party, 9))
    assert hub.deliver_all() == 1 and bob.waiting == 1  # in Bob's queue, not handled yet
    bob.stop()
    assert not hub.is_started(bob.party)
    driver.run()  # Bob's answer, sent while it stopped, reaches Alice
    assert handle.result.result(timeout=0) == 10
    alice.stop()


class _RecordingTransport:
    """A transport that records each send with the thread it was called on."""

    def __init__(self, party: Party) -> None:
        self._party = party
        self.sent: list[tuple[str, bytes, str]] = []

    @property
    def party(self) -> Party:
        return self._party

    def start(self, deliver: object) -> None:
        pass

    def stop(self) -> None:
        pass

    def send(self, recipient: Party, frame: bytes) -> None:
        self.sent.append((recipient.name, frame, threading.current_thread().name))


def _restored_waiting_for_bob(directory: Path) -> tuple[NodeRuntime, _RecordingTransport,
                                                         NetworkMap, Party]:
    """Alice, durable, sent a Ping to Bob that Bob never acknowledged; restarted on a manual
    runtime with a network map that does not know Bob, so the re-sent frame waits for him."""
    alice, bob = NodeIdentity("Alice"), NodeIdentity("Bob")
    first_map = NetworkMap()
    first_map.add(alice.party)
    first_map.add(bob.party)
    first = _RecordingTransport(alice.party)
    runtime = NodeRuntime(first, lambda t: Node(alice, t, network_map=first_map,
                                                storage=NodeStorage.open(directory, sync=False)))
    runtime.start(threaded=False).start_flow(Ping(bob.party, 1))
    runtime.run_until_quiet()
    assert [name for name, _, _ in first.sent] == ["Bob"]
    runtime.stop()
    network_map = NetworkMap()
    network_map.add(alice.party)
    transport = _RecordingTransport(alice.party)
    runtime = NodeRuntime(transport, lambda t: Node(
        alice, t, network_map=network_map, storage=NodeStorage.open(directory, sync=False)))
    runtime.start(threaded=False)
    runtime.run_until_quiet()
    assert transport.sent == []  # Bob is unknown: the re-sent init waits for him
    return runtime, transport, network_map, bob.party


def test_a_party_added_from_another_thread_is_handled_on_the_node_thread(
        tmp_path: Path) -> None:
    """The network map may change on any thread; the frame that waited for the new party is
    sent by the node thread once it runs, exactly once."""
    runtime, transport, network_map, bob = _restored_waiting_for_bob(tmp_path)
    adder = threading.Thread(target=network_map.add, args=(bob,), name="map-changer")
    adder.start()
    adder.join()
    assert transport.sent == []  # nothing ran on the thread that changed the map
    runtime.run_until_quiet()
    me = threading.current_thread().name
    assert [(name, thread) for name, _, thread in transport.sent] == [("Bob", me)]
    network_map.add(bob)  # learnt again: nothing waits any more, nothing is re-sent
    runtime.run_until_quiet()
    assert len(transport.sent) == 1
    runtime.stop()


def test_a_party_added_to_the_map_of_a_stopped_runtime_reaches_no_node(
        tmp_path: Path) -> None:
    runtime, transport, network_map, bob = _restored_waiting_for_bob(tmp_path)
    runtime.stop()
    adder = threading.Thread(target=network_map.add, args=(bob,))
    adder.start()
    adder.join()
    assert transport.sent == []
