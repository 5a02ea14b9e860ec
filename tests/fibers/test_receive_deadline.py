"""``receive(..., deadline=...)``: a flow stops waiting for a silent counterparty at a deadline
on the node's clock, also after a restart, and the counterparty learns why."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fibers import (
    FlowLogic,
    Party,
    ReceiveTimeoutException,
    UnexpectedFlowEndException,
    initiating_flow,
    suspendable,
)
from fibers.testing import MockNetwork


@initiating_flow
class AskWithDeadline(FlowLogic[str]):
    def __init__(self, other: Party, seconds: float) -> None:
        self.other, self.seconds = other, seconds

    @suspendable
    def call(self) -> str:
        deadline = self.now() + timedelta(seconds=self.seconds)
        self.send(self.other, "question")
        return self.receive(self.other, str, deadline=deadline).unwrap(lambda s: s)


class Silent(FlowLogic[None]):
    """Reads the question and never answers."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.receive(self.other, str)


class Answers(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "answer")


def network_of(tmp_path: Path) -> MockNetwork:
    network = MockNetwork(tmp_path / "network")
    network.create_node("Alice")
    network.create_node("Bob")
    return network


def test_a_silent_counterparty_times_out_at_the_deadline(tmp_path: Path) -> None:
    network = network_of(tmp_path)
    alice, bob = network.node("Alice"), network.node("Bob")
    bob.register_initiated_flow(AskWithDeadline, Silent)
    handle = alice.start_flow(AskWithDeadline(bob.party, 60))
    network.run_network()
    network.advance_time(59)
    network.run_network()
    assert not handle.result.done()
    network.advance_time(1)
    network.run_network()
    error = handle.result.exception(timeout=0)
    assert isinstance(error, ReceiveTimeoutException)
    assert isinstance(error, UnexpectedFlowEndException)
    assert "nothing received from Bob" in str(error) and "stopped waiting" in str(error)
    assert alice.flows() == [] and bob.flows() == []  # Bob's flow learnt of the end
    network.stop_nodes()


def test_an_answer_before_the_deadline_is_received(tmp_path: Path) -> None:
    network = network_of(tmp_path)
    alice, bob = network.node("Alice"), network.node("Bob")
    bob.register_initiated_flow(AskWithDeadline, Answers)
    handle = alice.start_flow(AskWithDeadline(bob.party, 60))
    network.run_network()
    assert handle.result.result(timeout=0) == "answer"
    network.advance_time(120)
    network.run_network()
    network.stop_nodes()


def test_the_deadline_survives_a_restart(tmp_path: Path) -> None:
    network = network_of(tmp_path)
    alice, bob = network.node("Alice"), network.node("Bob")
    bob.register_initiated_flow(AskWithDeadline, Silent)
    alice.start_flow(AskWithDeadline(bob.party, 60))
    network.run_network()
    alice = network.restart_node(alice)
    network.run_network()
    assert len(alice.flows()) == 1
    network.advance_time(61)
    network.run_network()
    assert alice.flows() == [] and alice.hospital() == [] and bob.flows() == []
    network.stop_nodes()


def test_a_naive_deadline_is_refused() -> None:
    flow = AskWithDeadline(Party("Bob", bytes(32)), 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        flow.receive(flow.other, str, deadline=datetime(2030, 1, 1))
