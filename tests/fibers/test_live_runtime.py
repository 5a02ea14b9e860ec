"""How the manual runtime moves a live round trip (docs/transport-and-runtime.md): one pump per
delivered frame, for its recipient only; a pump with nothing waiting costs no round; what a
node keeps for its timers (the next sleep or retry deadline, the next redelivery) is a field
kept up to date, and the collector policy sees the live-flow count only when it changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import fibers.runtime
from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable
from fibers._gc import ParkedFlowsGc
from fibers._scheduler import Scheduler
from fibers.runtime import NodeRuntime
from fibers.testing import MockNetwork


@initiating_flow
class PingPong(FlowLogic[int]):
    def __init__(self, other: Party, rounds: int) -> None:
        self.other, self.rounds = other, rounds

    @suspendable
    def call(self) -> int:
        total = 0
        for i in range(self.rounds):
            total += self.send_and_receive(self.other, i, int).unwrap(int)
        return total


@initiated_by(PingPong)
class Pong(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while True:
            self.send(self.other, self.receive(self.other, int).unwrap(int))


@initiating_flow
class Nap(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        self.sleep(5)
        return "rested"


def _count(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Record the party of each call of ``NodeRuntime.<name>``."""
    seen: list[str] = []
    real = getattr(NodeRuntime, name)

    def counting(self: NodeRuntime[Any], *args: Any, **kwargs: Any) -> int:
        seen.append(self.party.name)
        result: int = real(self, *args, **kwargs)
        return result

    monkeypatch.setattr(NodeRuntime, name, counting)
    return seen


def test_each_delivered_frame_is_one_round_of_its_recipient_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        network.create_node("Carol")  # never gets a frame: never takes a round
        handle = alice.start_flow(PingPong(bob.party, 5))
        steps: list[str] = []
        real_step = NodeRuntime._step
        monkeypatch.setattr(NodeRuntime, "_step",
                            lambda self: steps.append(self.party.name) or real_step(self))
        frames = _count(monkeypatch, "pump_frame")
        delivered = network.run_network()
        assert handle.result.result(timeout=0) == sum(range(5))
    assert len(frames) == delivered  # one pump per frame ...
    assert "Carol" not in frames and set(frames) == {"Alice", "Bob"}  # ... of its recipient
    assert steps == []  # and no round for a node with nothing waiting


def test_run_fires_the_due_timers_of_a_node_that_gets_no_frame() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        napping = bob.start_flow(Nap())
        handle = alice.start_flow(PingPong(bob.party, 3))
        network.clock.advance(5)  # Bob's nap is due; nothing fired it yet
        network.run_network()
        assert napping.result.result(timeout=0) == "rested"
        assert handle.result.result(timeout=0) == 3


def test_a_frame_handed_over_goes_behind_the_frames_that_wait_for_the_runtime() -> None:
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        first, second = (alice.start_flow(PingPong(bob.party, 1)) for _ in range(2))
        one, two = network.network.take_next(), network.network.take_next()  # type: ignore[misc]
        assert one is not None and two is not None
        runtime = network.driver.runtime(bob.party)
        runtime.deliver(one[0].sender, [one[0].frame])  # queued, not handled yet
        assert runtime.waiting == 1
        assert runtime.pump_frame(two[0].sender, two[0].frame) == 2  # both, in order
        assert runtime.waiting == 0
        network.run_network()
        assert first.result.result(timeout=0) == second.result.result(timeout=0) == 0


def test_an_idle_pump_does_no_round_and_a_due_timer_makes_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        runtime = network.driver.runtime(alice.party)
        steps = _count(monkeypatch, "_step")
        assert runtime.pump() == 0 and steps == []
        handle = alice.start_flow(Nap())
        assert runtime.pump() == 0 and steps == []  # the nap is not due yet
        network.clock.advance(5)
        assert runtime.pump() == 1 and steps == ["Alice"]
        assert handle.result.result(timeout=0) == "rested"


def test_the_collector_policy_sees_the_live_count_only_when_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    class Recording(ParkedFlowsGc):
        def observe(self, live: int) -> None:
            seen.append(live)
            super().observe(live)

    monkeypatch.setattr(fibers.runtime, "ParkedFlowsGc", Recording)
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(PingPong(bob.party, 20))
        network.run_network()
        assert handle.result.result(timeout=0) == sum(range(20))
    # Over 40 frames the counts observed are the changes only: 1 on each node (the ping, then
    # the pong it started) and 0 on each (the ping finished; the pong ended by its end).
    assert sorted(seen) == [0, 0, 1, 1]


# ----- the fields a round reads ----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_schedulers_earliest_deadline_follows_its_timers() -> None:
    scheduler = Scheduler(lambda machine, throw: None, lambda: False, lambda: None)
    assert scheduler.earliest is None
    machine: Any = type("M", (), {"finished": False, "scheduled": False, "abandoned": False})()
    scheduler.wake_at(machine, T0 + timedelta(seconds=5))
    scheduler.retry_at(fibers._flow_logic.StateMachineRunId._new(), T0 + timedelta(seconds=2))
    assert scheduler.earliest == T0 + timedelta(seconds=2) == scheduler.next_deadline()
    scheduler.due_retries(T0 + timedelta(seconds=3))
    assert scheduler.earliest == T0 + timedelta(seconds=5)
    scheduler.wake_due(T0 + timedelta(seconds=5))
    assert scheduler.earliest is None
    scheduler.wake_at(machine, T0)
    scheduler.clear()
    assert scheduler.earliest is None


def test_the_nodes_redelivery_due_follows_sends_and_acknowledgements() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(PingPong(bob.party, 1))
        assert alice.redelivery_due == network.clock.now() + timedelta(seconds=1)  # the init
        assert alice.timers_due() is False
        network.clock.advance(1)
        assert alice.timers_due() is True
        network.run_network()  # acknowledged: nothing left to re-send
        assert handle.result.result(timeout=0) == 0
        assert alice.redelivery_due is None and not alice.timers_due()


def test_deliver_next_fires_the_recipients_due_timers_with_its_frame() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        napping = bob.start_flow(Nap())
        alice.start_flow(PingPong(bob.party, 1))
        network.clock.advance(5)
        assert not napping.result.done()
        assert network.deliver_next() is not None  # Alice's init, to Bob
        assert napping.result.result(timeout=0) == "rested"
