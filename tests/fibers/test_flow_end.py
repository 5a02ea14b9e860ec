"""How flows end: kills (that cannot be caught, of live and of hospitalised flows) and which
errors travel to which counterparties."""

from __future__ import annotations

from typing import Any

import pytest

from fibers import (
    FlowException,
    FlowLogic,
    HospitalizeFlowException,
    KilledFlowException,
    Party,
    StateMachineRunId,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._messages import Data, ExistingSessionMessage
from fibers._node import Node
from fibers.testing import MockNetwork
from tests.fibers._flows import AsksOnce

# ----- a kill cannot be caught ----------------------------------------------------------------


@initiating_flow
class Stubborn(FlowLogic[str]):
    """Catches the kill in various ways and tries to carry on."""

    mode = "return"

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.send(self.other, "hello")
        while True:
            try:
                self.receive(self.other, str)
            except KilledFlowException:
                if type(self).mode == "return":
                    return "survived"
                if type(self).mode == "send":
                    self.send(self.other, "still here")
                    return "survived"
                if type(self).mode == "raise":
                    raise ValueError("something else") from None
                # "loop": wait again, and again


@initiated_by(Stubborn)
class Listener(FlowLogic[list[str]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[str]:
        heard = [self.receive(self.other, str).unwrap(str)]
        heard.append(self.receive(self.other, str).unwrap(str))
        return heard


@pytest.mark.parametrize("mode", ["return", "send", "raise", "loop"])
def test_a_killed_flow_ends_killed_even_if_it_catches_the_kill(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(Stubborn, "mode", mode)
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    ended: list[StateMachineRunId] = []
    alice.on_flow_end(ended.append)
    handle = alice.start_flow(Stubborn(bob.party))
    mock_network.run_network()
    [listener] = bob.flows()
    listener_handle = bob.handle(listener.run_id)

    assert alice.kill_flow(handle.id)
    mock_network.run_network()

    error = handle.result.exception(timeout=0)
    assert isinstance(error, KilledFlowException)
    assert ended == [handle.id] and alice.flows() == [] and alice.hospital() == []
    assert alice.dump_checkpoints() == []
    assert isinstance(listener_handle.result.exception(timeout=0), UnexpectedFlowEndException)
    data = [e.message.body for e in mock_network.transcript if e.sender == "Alice"
            and isinstance(e.message, ExistingSessionMessage)
            and isinstance(e.message.body, Data)]
    assert data == []  # "still here" never left (only the init carried "hello")


# ----- killing a hospitalised flow --------------------------------------------------------------


@initiating_flow
class Waits(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.send(self.other, "one")
        self.send(self.other, "two")
        return self.receive(self.other, str).unwrap(str)


@initiated_by(Waits)
class Hears(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        first = self.receive(self.other, str).unwrap(str)
        second = self.receive(self.other, str).unwrap(str)
        return first + second + self.receive(self.other, str).unwrap(str)


def _park_after_code_change(
    network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> tuple[Node, Any, Any]:
    alice, bob = network.create_node("Alice"), network.create_node("Bob")
    handle = alice.start_flow(Waits(bob.party))
    network.run_network()
    [hears] = bob.flows()
    network.stop_node(alice)

    @suspendable
    def changed(self: Waits) -> str:
        return "changed"

    monkeypatch.setattr(Waits, "call", changed)
    alice = network.restart_node(alice)
    alice.wake_hibernated()  # restore is lazy: replayed (and parked) when woken
    [entry] = alice.hospital()
    assert entry.run_id == handle.id and "NondeterminismError" in entry.diagnosis
    return alice, handle.id, bob.handle(hears.run_id)


def test_killing_a_flow_that_no_longer_replays_tells_its_counterparty_and_releases_it(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, run_id, bob_flow = _park_after_code_change(mock_network, monkeypatch)
    ended: list[StateMachineRunId] = []
    alice.on_flow_end(ended.append)

    assert alice.kill_flow(run_id)
    mock_network.run_network()

    assert ended == [run_id]
    assert alice.hospital() == [] and alice.flows() == [] and alice.dump_checkpoints() == []
    error = bob_flow.result.exception(timeout=0)
    assert isinstance(error, UnexpectedFlowEndException)
    assert not alice.kill_flow(run_id)


def test_the_end_of_a_killed_parked_flow_survives_a_crash_until_acknowledged(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, run_id, _ = _park_after_code_change(mock_network, monkeypatch)
    bob = mock_network.node("Bob")
    mock_network.stop_node(bob)  # the end cannot be delivered yet
    assert alice.kill_flow(run_id)
    alice = mock_network.restart_node(alice)  # the end is re-sent from the outbox
    assert alice.hospital() == []
    bob = mock_network.restart_node(bob)
    [hears] = bob.flows()
    restored = bob.handle(hears.run_id)
    mock_network.run_network()
    assert isinstance(restored.result.exception(timeout=0), UnexpectedFlowEndException)
    assert bob.flows() == []


@initiating_flow
class ParksAfterTalking(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "one")
        self.receive(self.other, str)
        self.send(self.other, "never sent: its step is parked")
        raise HospitalizeFlowException("needs a doctor")


@initiated_by(ParksAfterTalking)
class TalksBack(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "ok")
        self.receive(self.other, str)


@pytest.mark.parametrize("durable", [True, False])
def test_killing_a_parked_flow_tells_counterparties_with_or_without_storage(
    durable: bool, tmp_path: Any
) -> None:
    with MockNetwork(tmp_path, durable=durable) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        ended: list[StateMachineRunId] = []
        alice.on_flow_end(ended.append)
        handle = alice.start_flow(ParksAfterTalking(bob.party))
        network.run_network()
        [entry] = alice.hospital()
        [talks] = bob.flows()
        talks_handle = bob.handle(talks.run_id)
        assert alice.kill_flow(entry.run_id)
        network.run_network()
        assert ended == [handle.id]
        assert isinstance(handle.result.exception(timeout=0), KilledFlowException)
        assert isinstance(talks_handle.result.exception(timeout=0), UnexpectedFlowEndException)
        assert bob.flows() == []


# ----- which errors travel: Corda semantics over a chain A -> B -> C ------------------------------


class Refused(FlowException):
    pass


@initiating_flow
class AskB(AsksOnce):
    pass


@initiating_flow
class AskC(AsksOnce):
    pass


@initiated_by(AskB)
class BMiddle(FlowLogic[None]):
    """Does not catch what C raises."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        charlie = self.service_hub.network_map.party("Charlie")
        self.send(self.other, self.sub_flow(AskC(charlie)))


@initiated_by(AskC)
class CEnd(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        raise Refused("C says no")


def test_a_received_flow_exception_ends_the_receiver_and_is_not_propagated_further(
    mock_network: MockNetwork,
) -> None:
    a = mock_network.create_node("Alice")
    b, c = mock_network.create_node("Bob"), mock_network.create_node("Charlie")
    ends: dict[str, list[StateMachineRunId]] = {"Bob": [], "Charlie": []}
    b.on_flow_end(ends["Bob"].append)
    c.on_flow_end(ends["Charlie"].append)
    handle = a.start_flow(AskB(b.party))
    mock_network.run_network()

    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException, error
    assert "C says no" not in str(error)
    assert len(ends["Bob"]) == 1 and len(ends["Charlie"]) == 1  # B ended too (failed)
    assert b.flows() == [] and c.flows() == []
    a_bodies = [type(e.message.body).__name__ for e in mock_network.transcript
                if e.recipient == "Alice" and isinstance(e.message, ExistingSessionMessage)]
    assert a_bodies[-1] == "ErrorEnd"


def test_the_flow_that_raised_a_flow_exception_propagates_it_to_its_direct_counterparty(
    mock_network: MockNetwork,
) -> None:
    b, c = mock_network.create_node("Bob"), mock_network.create_node("Charlie")
    handle = b.start_flow(AskC(c.party))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is Refused and str(error) == "C says no"


class HearsThenParks(FlowLogic[None]):
    """Registered on one node only (not declared: Hears answers Waits elsewhere)."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.receive(self.other, str)
        raise HospitalizeFlowException("the responder wants a doctor")


def test_killing_a_parked_responder_ends_its_session_for_the_initiator_and_its_dedup_record(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(Waits, HearsThenParks)
    handle = alice.start_flow(Waits(bob.party))
    mock_network.run_network()
    [entry] = bob.hospital()
    bob = mock_network.restart_node(bob)  # parked before the restart: killed from its records
    assert bob.kill_flow(entry.run_id)
    mock_network.run_network()
    assert isinstance(handle.result.exception(timeout=0), UnexpectedFlowEndException)
    assert bob.dump_checkpoints() == [] and alice.flows() == []
    storage = bob.storage
    assert storage is not None
    with storage.read() as txn:
        records = dict(storage.prefix_items(txn, "dedup", b"Alice\0"))
    assert records and all(value.startswith(b"E") for value in records.values()), records


@initiating_flow
class SaysOneAndLeaves(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "one")


class HearsTheEndThenParks(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        try:
            self.receive(self.other, str)
        except UnexpectedFlowEndException:
            self.sleep(1)  # a checkpoint whose journal holds the initiator's end
            raise HospitalizeFlowException("the initiator left; a doctor decides") from None


def test_a_killed_parked_responder_ends_its_session_even_after_its_initiator_ended(
    mock_network: MockNetwork,
) -> None:
    """The initiator's End is in the responder's journal: the kill still sends the responder's
    final message (its dedup record waits for its acknowledgement, see fibers/_dedup.py), and
    the record ends."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(SaysOneAndLeaves, HearsTheEndThenParks)
    handle = alice.start_flow(SaysOneAndLeaves(bob.party))
    mock_network.run_network()
    mock_network.advance_time(1)
    mock_network.run_network()
    assert handle.result.done() and alice.flows() == []
    [entry] = bob.hospital()
    bob = mock_network.restart_node(bob)
    assert bob.kill_flow(entry.run_id)
    [final] = [m for m in mock_network.pending_messages() if m.sender.name == "Bob"]
    mock_network.run_network()
    storage = bob.storage
    assert storage is not None
    with storage.read() as txn:
        records = dict(storage.prefix_items(txn, "dedup", b"Alice\0"))
        outbox = list(storage.prefix_items(txn, "outbox", b""))
    assert records and all(value.startswith(b"E") for value in records.values()), records
    assert outbox == [] and final.recipient.name == "Alice"
