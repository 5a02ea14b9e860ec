"""Scheduling: many concurrent flows, time, kill and draining."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fibers import (
    FlowLogic,
    KilledFlowException,
    Party,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._errors import FlowConfigurationError
from fibers.testing import MockNetwork


@initiating_flow
class Count(FlowLogic[int]):
    def __init__(self, other: Party, n: int) -> None:
        self.other, self.n = other, n

    @suspendable
    def call(self) -> int:
        self.send(self.other, self.n)
        return self.receive(self.other, int).unwrap(int)


@initiated_by(Count)
class Double(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        n = self.receive(self.other, int).unwrap(int)
        self.send(self.other, n * 2)


def test_ten_thousand_concurrent_flows_on_two_nodes_all_finish() -> None:
    with MockNetwork(record_transcript=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handles = [alice.start_flow(Count(bob.party, i)) for i in range(10_000)]
        assert len(alice.flows()) == 10_000  # all parked at once, no thread each
        network.run_network()
        assert [h.result.result(timeout=0) for h in handles] == [2 * i for i in range(10_000)]
        assert alice.flows() == [] and bob.flows() == []


class Nap(FlowLogic[timedelta]):
    @suspendable
    def call(self) -> timedelta:
        before = self.now()
        self.sleep(30)
        return self.now() - before


def test_sleep_wakes_the_flow_when_the_clock_passes_the_deadline(
    mock_network: MockNetwork,
) -> None:
    alice = mock_network.create_node("Alice")
    handle = alice.start_flow(Nap())
    mock_network.advance_time(29)
    assert not handle.result.done()
    assert alice.flows()[0].waiting_for is not None
    mock_network.advance_time(1)
    assert handle.result.result(timeout=0) == timedelta(seconds=30)


class BadNap(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        self.sleep(-1)


def test_negative_sleep_is_refused(mock_network: MockNetwork) -> None:
    error = mock_network.create_node("Alice").start_flow(BadNap()).result.exception(timeout=0)
    assert isinstance(error, ValueError) and "negative" in str(error)


@initiating_flow
class WaitForever(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "start")
        self.receive(self.other, str)


@initiated_by(WaitForever)
class WaitForeverToo(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.receive(self.other, str)


def test_killing_a_suspended_flow_ends_it_and_tells_its_counterparty(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(WaitForever(bob.party))
    mock_network.run_network()
    [responder] = bob.flows()
    assert bob.kill_flow(responder.run_id) is True
    assert bob.kill_flow(responder.run_id) is False  # already gone
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException
    assert alice.flows() == [] and bob.flows() == []


def test_a_killed_flow_fails_with_killed_flow_exception(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(WaitForever(bob.party))
    assert alice.kill_flow(handle.id)
    assert isinstance(handle.result.exception(timeout=0), KilledFlowException)


def test_draining_refuses_new_flows_and_sessions_until_turned_off(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.set_flows_draining_mode(True)
    with pytest.raises(FlowConfigurationError, match="draining"):
        alice.start_flow(Count(bob.party, 1))
    bob.set_flows_draining_mode(True)
    alice.set_flows_draining_mode(False)
    handle = alice.start_flow(Count(bob.party, 1))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert isinstance(error, UnexpectedFlowEndException) and "draining" in str(error)


class Quick(FlowLogic[int]):
    @suspendable
    def call(self) -> int:
        return 7


def test_flows_started_together_that_finish_at_once_still_settle_their_results(
    mock_network: MockNetwork,
) -> None:
    handles = mock_network.create_node("Alice").start_flows([Quick(), Quick()])
    assert [h.result.result(timeout=0) for h in handles] == [7, 7]
