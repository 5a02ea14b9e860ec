"""Progress trackers driven by the engine: STARTING/DONE/errors and sub-flow children."""

from __future__ import annotations

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers.testing import MockNetwork


class Verify(FlowLogic[None]):
    CHECKING = Step("Checking signatures")
    RECORDING = Step("Recording")

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.progress_tracker = ProgressTracker(self.CHECKING, self.RECORDING)

    @suspendable
    def call(self) -> None:
        tracker = self.progress_tracker
        assert tracker is not None
        tracker.current_step = self.CHECKING
        if self.fail:
            raise FlowException("bad signature")
        tracker.current_step = self.RECORDING


@initiating_flow
class Trade(FlowLogic[str]):
    PROPOSING = Step("Proposing")
    COMMITTING = Step("Committing")

    def __init__(self, other: Party, fail_verify: bool = False) -> None:
        self.other, self.fail_verify = other, fail_verify
        self.progress_tracker = ProgressTracker(self.PROPOSING, self.COMMITTING)

    @suspendable
    def call(self) -> str:
        tracker = self.progress_tracker
        assert tracker is not None
        tracker.current_step = self.PROPOSING
        answer = self.send_and_receive(self.other, "deal?", str).unwrap(str)
        tracker.current_step = self.COMMITTING
        self.sub_flow(Verify(self.fail_verify))
        return answer


@initiated_by(Trade)
class TradeResponder(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "deal")


def test_tracked_flow_streams_its_steps_including_the_sub_flow(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_tracked_flow(Trade(bob.party))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "deal"
    assert handle.progress.values == [
        "Starting",
        "Proposing",
        "Committing",
        "Starting",
        "Checking signatures",
        "Recording",
        "Done",
        "Done",
    ]
    assert handle.steps_tree.values[-1] == [
        (0, "Starting"),
        (0, "Proposing"),
        (0, "Committing"),
        (1, "Checking signatures"),
        (1, "Recording"),
        (0, "Done"),
    ]
    assert handle.steps_tree_index.values == [0, 1, 2, 3, 4, 2, 5]


def test_a_failing_flow_ends_its_tracker_with_the_error(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    flow = Trade(bob.party, fail_verify=True)
    handle = alice.start_tracked_flow(flow)
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert str(error) == "bad signature"
    tracker = flow.progress_tracker
    assert tracker is not None and tracker.error is error
    assert handle.progress.error is error


def test_a_restored_flow_tracker_is_back_at_the_step_it_had_reached(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_tracked_flow(Trade(bob.party))
    assert handle.progress.values[-1] == "Proposing"
    alice = mock_network.restart_node(alice)
    [summary] = alice.flows()
    assert summary.status == "HIBERNATED"  # restore is lazy: replayed when woken
    alice.wake_hibernated()
    [summary] = alice.flows()
    assert summary.progress_step == "Proposing"
    restored = alice.handle(handle.id)
    mock_network.run_network()
    assert restored.result.result(timeout=0) == "deal"


def test_a_stopped_nodes_flow_is_parked_at_its_step_not_failed(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    flow = Trade(bob.party)
    handle = alice.start_tracked_flow(flow)
    alice.stop()  # as a crash would: the flow's greenlet is unwound, its checkpoint stays
    tracker = flow.progress_tracker
    assert tracker is not None
    assert tracker.error is None and not tracker.has_ended
    assert tracker.current_step == Trade.PROPOSING
    assert handle.progress.error is None and not handle.result.done()
