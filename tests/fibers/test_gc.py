"""The collector policy for parked flows: freeze after restore and per batch, reclaim later."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable
from fibers._gc import YOUNG_THRESHOLD, ParkedFlowsGc
from fibers._identity import NodeIdentity
from fibers._node import Node
from fibers.runtime import NodeRuntime
from fibers.testing import MockNetwork
from fibers.transport import InMemoryNetwork
from tests.fibers._flows import AsksOnce


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    """Each test starts with nothing frozen and leaves the collector as it found it."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def frozen_cycle() -> weakref.ref[Cycle]:
    """A cycle, frozen while alive, then garbage (only the collector can free it)."""
    cycle = Cycle()
    gc.freeze()
    return weakref.ref(cycle)


def test_install_raises_the_young_threshold_and_keeps_the_others() -> None:
    gc.set_threshold(700, 11, 12)
    ParkedFlowsGc.install()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
    gc.set_threshold(50_000, 11, 12)
    ParkedFlowsGc.install()  # never lowers a threshold someone raised further
    assert gc.get_threshold() == (50_000, 11, 12)


def test_a_started_node_freezes_what_exists_then_counts_from_its_first_batch() -> None:
    policy = ParkedFlowsGc(batch=10, reclaim_below=0.5)
    ParkedFlowsGc.started()
    assert gc.get_freeze_count() > 0
    policy.observe(4)  # counting starts at the first batch: nothing to reclaim before it
    assert (policy.freezes, policy.unfreezes) == (0, 0)
    policy.observe(10)
    assert policy.freezes == 1


def test_a_freeze_comes_after_each_batch_of_newly_live_flows() -> None:
    policy = ParkedFlowsGc(batch=10, reclaim_below=0.5)
    for live in (1, 5, 9):
        policy.observe(live)
    assert policy.freezes == 0
    policy.observe(10)
    assert policy.freezes == 1
    policy.observe(19)
    policy.observe(12)  # fewer, but above the reclaim share: nothing happens
    assert (policy.freezes, policy.unfreezes) == (1, 0)
    policy.observe(20)
    assert policy.freezes == 2


def test_frozen_garbage_is_reclaimed_once_the_flows_fall_below_the_share() -> None:
    policy = ParkedFlowsGc(batch=10, reclaim_below=0.5)
    policy.observe(40)
    cycle = frozen_cycle()
    gc.collect()
    assert cycle() is not None  # frozen: the collector does not see it
    policy.observe(21)
    assert cycle() is not None and policy.unfreezes == 0
    policy.observe(20)
    assert cycle() is None
    assert policy.unfreezes == 1 and gc.get_freeze_count() > 0  # the 20 live are frozen again
    policy.observe(29)
    assert policy.freezes == 2  # the next freeze is a batch above the 20, not the 40
    policy.observe(30)
    assert policy.freezes == 3


def test_when_no_flow_is_left_nothing_stays_frozen() -> None:
    policy = ParkedFlowsGc(batch=5, reclaim_below=0.0)
    policy.observe(5)
    cycle = frozen_cycle()
    policy.observe(1)
    assert cycle() is not None
    policy.observe(0)
    assert cycle() is None and gc.get_freeze_count() == 0


@pytest.mark.parametrize(("batch", "share"), [(0, 0.5), (1, -0.1), (1, 1.0)])
def test_bad_settings_are_refused(batch: int, share: float) -> None:
    with pytest.raises(ValueError, match=r"batch|reclaim_below"):
        ParkedFlowsGc(batch=batch, reclaim_below=share)


@initiating_flow
class Ask(AsksOnce):
    QUESTION = "ping"


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, self.receive(self.other, str).unwrap(str) + "/pong")


def test_a_node_restarted_with_parked_flows_freezes_them_and_they_still_finish(
    tmp_path: Path,
) -> None:
    first = MockNetwork(tmp_path)
    alice, bob = first.create_node("Alice"), first.create_node("Bob")
    handles = [alice.start_flow(Ask(bob.party)) for _ in range(3)]  # parked: Bob never runs
    first.stop_nodes()
    gc.unfreeze()

    second = MockNetwork(tmp_path)
    alice = second.create_node("Alice")  # restores the three parked flows, then freezes
    assert gc.get_freeze_count() > 0
    restored = [alice.handle(h.id) for h in handles]
    second.create_node("Bob")
    second.run_network()
    assert [h.result.result(timeout=0) for h in restored] == ["ping/pong"] * 3
    second.stop_nodes()


def test_a_runtime_told_not_to_tune_leaves_the_collector_alone(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    network = InMemoryNetwork()
    identity = NodeIdentity("Alice")
    runtime = NodeRuntime(network.endpoint(identity.party),
                          lambda transport: Node(identity, transport), tune_gc=False)
    runtime.start(threaded=False)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == (700, 10, 10)
    runtime.stop()


def test_the_runtime_observes_its_nodes_live_flows_after_each_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    class Recording(ParkedFlowsGc):
        def __init__(self) -> None:
            super().__init__(batch=2, reclaim_below=0.0)

        def observe(self, live: int) -> None:
            seen.append(live)
            super().observe(live)

    monkeypatch.setattr("fibers.runtime.ParkedFlowsGc", Recording)
    network = MockNetwork()
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    handles = [alice.start_flow(Ask(bob.party)) for _ in range(3)]
    network.run_network()
    assert [h.result.result(timeout=0) for h in handles] == ["ping/pong"] * 3
    assert alice.live_flow_count == 0 and bob.live_flow_count == 0
    assert max(seen) >= 2  # the parked flows were counted while they waited
    assert seen[-1] == 0  # and the last round saw them all finished
    network.stop_nodes()
