"""Attacks on the live round trip's shortcuts (docs/architecture.md, "The step pipeline"): a
reused stack walk must never let an unmarked function onto a suspended flow's stack."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta

import pytest

from fibers import (
    FlowLogic,
    Party,
    SuspendableError,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers.testing import MockNetwork


@initiating_flow
class ResumesItsGeneratorElsewhere(FlowLogic[int]):
    """A marked generator receives; ``call`` resumes it first itself, then from an unmarked
    function: the generator's frame is the same object, its caller is not."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def answers(self) -> Generator[int, None, None]:
        while True:
            yield self.send_and_receive(self.other, 1, int).unwrap(int)

    @suspendable
    def call(self) -> int:
        answers = self.answers()
        first = next(answers)
        return first + next_from_elsewhere(answers)


def next_from_elsewhere(answers: Generator[int, None, None]) -> int:
    return next(answers)


@initiated_by(ResumesItsGeneratorElsewhere)
class Echo(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while True:
            self.send(self.other, self.receive(self.other, int).unwrap(int) * 10)


def test_a_marked_generator_resumed_from_an_unmarked_function_is_refused() -> None:
    with MockNetwork(strict_suspendable=True) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(ResumesItsGeneratorElsewhere(bob.party))
        network.run_network()
        with pytest.raises(SuspendableError, match=r"next_from_elsewhere"):
            handle.result.result(timeout=0)


# ----- one frame handed to its recipient --------------------------------------------------------


@initiating_flow
class SendsOne(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, 1)


def test_a_frame_for_a_node_stopped_by_itself_does_not_stop_the_network_run() -> None:
    """``node.stop()`` (a crash of the node, its runtime still running): the frame handed to
    it is dropped as the runtime's round drops it, the run goes on."""
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        bob.stop()
        handle = alice.start_flow(SendsOne(bob.party))
        assert network.run_network() > 0  # handed over, not raised out of the run
        assert handle.result.result(timeout=0) is None
        assert not network.driver.pending()


# ----- when run_network fires timers -----------------------------------------------------------


@initiating_flow
class Naps(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        self.sleep(5)
        return "rested"


def test_run_network_of_no_messages_does_nothing_not_even_due_timers() -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        handle = alice.start_flow(Naps())
        network.clock.advance(10)  # due, not fired: the clock alone moved
        assert network.run_network(max_messages=0) == 0
        assert not handle.outcome.settled
        assert network.run_network() == 0  # no frame; the due timer fires
        assert handle.result.result(timeout=0) == "rested"


# ----- the redelivery-due field ------------------------------------------------------------------


@initiating_flow
class PingOnce(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        return self.send_and_receive(self.other, 1, int).unwrap(int)


@initiated_by(PingOnce)
class PongOnce(Echo):
    pass


def test_a_lost_message_is_redelivered_after_the_one_due_first_was_acknowledged() -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        bob, carol = network.create_node("Bob"), network.create_node("Carol")
        to_bob = alice.start_flow(PingOnce(bob.party))  # its init is re-sent first
        network.clock.advance(0.5)
        to_carol = alice.start_flow(PingOnce(carol.party))
        queue = network.network.queue
        lost = [m for m in queue if m.recipient == carol.party]
        assert lost
        for message in lost:
            queue.remove(message)
        network.run_network()  # Bob acknowledges the init that set the earliest due time
        assert to_bob.result.result(timeout=0) == 10 and not to_carol.outcome.settled
        due = alice.redelivery_due
        assert due is not None and due <= network.clock.now() + timedelta(seconds=1)
        network.clock.advance(1)  # Carol's init is due again
        network.run_network()
        assert to_carol.result.result(timeout=0) == 10
        assert alice.redelivery_due is None


# ----- the earliest-deadline field ---------------------------------------------------------------


@initiating_flow
class NapsLonger(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        self.sleep(10)
        return "rested longer"


def test_a_later_sleep_still_fires_after_the_earliest_sleeper_was_killed() -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        short, longer = alice.start_flow(Naps()), alice.start_flow(NapsLonger())
        assert alice.kill_flow(short.id)
        network.run_network()
        network.clock.advance(5)  # the killed flow's deadline: nothing to wake
        network.run_network()
        assert alice.next_deadline() == network.clock.now() + timedelta(seconds=5)
        assert not longer.outcome.settled
        network.clock.advance(5)
        network.run_network()
        assert longer.result.result(timeout=0) == "rested longer"
        assert alice.next_deadline() is None


# ----- the lazy result future ---------------------------------------------------------------------


def test_a_result_future_cancelled_by_its_holder_does_not_break_the_flows_end() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        cancelled = alice.start_flow(PingOnce(bob.party))
        other = alice.start_flow(PingOnce(bob.party))
        assert cancelled.result.cancel()
        network.run_network()
        assert cancelled.outcome.settled and cancelled.result.cancelled()
        assert other.result.result(timeout=0) == 10
        assert alice.live_flow_count == 0
