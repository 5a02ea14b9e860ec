"""``NodeRuntime`` misused: calls on a runtime stopped (before or after it started), stop()
while a call runs, and errors inside a service or the node during a threaded round."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from fibers import FlowLogic, NetworkMap, Node, NodeIdentity, SerializeAsToken, suspendable
from fibers.runtime import NodeRuntime, NodeStoppedError
from fibers.transport import InMemoryNetwork, Transport

TIMEOUT = 30.0


class Exploding(SerializeAsToken):
    def explode(self) -> None:
        raise RuntimeError("the service broke")


class UsesTheService(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        self.service_hub.get(Exploding).explode()
        return "unreachable"


class Fine(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        return "fine"


def _runtime() -> NodeRuntime:
    identity = NodeIdentity("Alice")
    network_map = NetworkMap()
    network_map.add(identity.party)

    def build(transport: Transport) -> Node:
        node = Node(identity, transport, network_map=network_map)
        node.services.install("exploding", Exploding())
        return node

    return NodeRuntime(InMemoryNetwork(immediate=True).endpoint(identity.party), build)


def test_a_call_queued_on_a_runtime_stopped_before_it_started_fails() -> None:
    runtime = _runtime()
    queued = runtime.call(lambda node: node.party)
    runtime.stop()
    with pytest.raises(NodeStoppedError):
        queued.result(timeout=TIMEOUT)
    with pytest.raises(NodeStoppedError):
        runtime.call(lambda node: node.party).result(timeout=TIMEOUT)


def test_stop_while_a_call_runs_lets_it_finish_and_fails_the_calls_behind_it() -> None:
    runtime = _runtime()
    runtime.start()
    running, release = threading.Event(), threading.Event()

    def slow(node: Node) -> str:
        running.set()
        assert release.wait(TIMEOUT)
        return "done"

    first = runtime.call(slow)
    assert running.wait(TIMEOUT)
    behind = runtime.call(lambda node: "too late")
    stopper = threading.Thread(target=runtime.stop)
    stopper.start()
    # stop() waits for the call in progress: it has not returned while the call runs.
    assert stopper.is_alive()
    release.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive() and not runtime.is_running
    assert first.result(timeout=0) == "done"
    with pytest.raises(NodeStoppedError):
        behind.result(timeout=TIMEOUT)


def test_a_call_that_stops_its_own_runtime_returns_and_later_calls_fail() -> None:
    runtime = _runtime()
    runtime.start()

    def stop_from_inside(node: Node) -> str:
        runtime.stop()  # on the node thread: must not wait for itself
        return "stopping"

    assert runtime.call(stop_from_inside).result(timeout=TIMEOUT) == "stopping"
    with pytest.raises(NodeStoppedError):
        runtime.call(lambda node: None).result(timeout=TIMEOUT)


def test_a_service_that_raises_fails_its_flow_and_the_node_thread_carries_on() -> None:
    runtime = _runtime()
    runtime.start()
    try:
        broken: Future[Future[str]] = runtime.call(
            lambda node: node.start_flow(UsesTheService()).result)
        with pytest.raises(RuntimeError, match="the service broke"):
            broken.result(timeout=TIMEOUT).result(timeout=TIMEOUT)
        fine = runtime.call(lambda node: node.start_flow(Fine()).result)
        assert fine.result(timeout=TIMEOUT).result(timeout=TIMEOUT) == "fine"
    finally:
        runtime.stop()


def test_an_error_in_a_threaded_round_is_logged_and_the_node_thread_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    runtime = _runtime()
    runtime.start()
    try:
        node = runtime.call(lambda n: n).result(timeout=TIMEOUT)
        real = node.fire_due_timers
        failures = [RuntimeError("a timer broke")]

        def once() -> int:
            if failures:
                raise failures.pop()
            return real()

        node.fire_due_timers = once  # type: ignore[method-assign]
        # The round that runs this call then fires the timers, which raise after the call.
        assert runtime.call(lambda n: "first").result(timeout=TIMEOUT) == "first"
        assert runtime.call(lambda n: "second").result(timeout=TIMEOUT) == "second"
        assert runtime.is_running
    finally:
        runtime.stop()
    assert any("hit an error" in r.getMessage() for r in caplog.records)
