"""Two- and three-party conversations over MockNetwork: transcripts, ordering, ends and errors."""

from __future__ import annotations

import pytest

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
    serializable,
    suspendable,
)
from fibers._messages import (
    Ack,
    AckedSessionMessage,
    Confirm,
    Data,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
)
from fibers._wire import decode
from fibers.testing import MockNetwork
from tests.fibers._flows import AsksOnce


@initiating_flow
class Ping(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        reply = self.send_and_receive(self.other, "ping", str)
        return reply.unwrap(lambda s: s)


@initiated_by(Ping)
class Pong(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        got = self.receive(self.other, str).unwrap(lambda s: s)
        self.send(self.other, got.replace("i", "o"))


def _describe(entry_message: object) -> tuple[object, ...]:
    """A transcript message reduced to what a reader checks: kind, seq and decoded payload."""
    if isinstance(entry_message, Ack):
        return ("Ack", *(seq for _, _, seq in entry_message.entries))
    if isinstance(entry_message, InitialSessionMessage):
        first = decode(entry_message.first_payload) if entry_message.first_payload else None
        return ("Init", entry_message.flow_class.split(":")[1], entry_message.flow_version, first)
    assert isinstance(entry_message, ExistingSessionMessage)
    if isinstance(entry_message, AckedSessionMessage):  # acknowledgements riding on it
        plain = _describe(entry_message.without_acks())
        return (*plain, "+Ack", *(seq for _, _, seq in entry_message.acks))
    body = entry_message.body
    if isinstance(body, Data):
        return ("Data", entry_message.seq, decode(body.payload))
    if isinstance(body, Confirm):
        return ("Confirm", entry_message.seq, body.flow_version)
    return (type(body).__name__, entry_message.seq)


def test_ping_pong_exchanges_exactly_the_expected_messages(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Ping(bob.party))
    delivered = mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"
    transcript = [(e.sender, e.recipient, _describe(e.message)) for e in mock_network.transcript]
    # Each message is acknowledged once its recipient stored it (the acks of one commit to
    # one peer travel together, on the first message the commit sends that peer, else in an
    # Ack); only then may the sender forget it. MockNetwork delivers one message at a time, so
    # here every commit acknowledges one message.
    assert transcript == [
        ("Alice", "Bob", ("Init", "Ping", 1, "ping")),
        ("Bob", "Alice", ("Confirm", 0, 1, "+Ack", 0)),
        ("Bob", "Alice", ("Data", 1, "pong")),
        ("Bob", "Alice", ("End", 2)),
        ("Alice", "Bob", ("Ack", 0)),
        ("Alice", "Bob", ("End", 1, "+Ack", 1)),
        ("Alice", "Bob", ("Ack", 2)),
        ("Bob", "Alice", ("Ack", 1)),
    ]
    assert delivered == 8
    assert alice.flows() == [] and bob.flows() == []


@initiating_flow
class SendFirstBothWays(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        self.send(self.other, 1)
        return self.receive(self.other, int).unwrap(lambda n: n)


@initiated_by(SendFirstBothWays)
class SendFirstResponder(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        self.send(self.other, 2)
        return self.receive(self.other, int).unwrap(lambda n: n)


def test_both_sides_send_first(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(SendFirstBothWays(bob.party))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == 2
    from_bob = [_describe(e.message) for e in mock_network.transcript
                if e.sender == "Bob" and not isinstance(e.message, Ack)]
    assert from_bob[:2] == [("Confirm", 0, 1, "+Ack", 0), ("Data", 1, 2)]


@initiating_flow
class AskAndWait(AsksOnce):
    QUESTION = "anyone?"


@initiated_by(AskAndWait)
class SilentResponder(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)


def test_receive_fails_when_the_other_side_ends_before_sending(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(AskAndWait(bob.party))
    mock_network.run_network()
    with pytest.raises(UnexpectedFlowEndException, match="Mismatched send and receive"):
        handle.result.result(timeout=0)


@serializable
class PriceTooHigh(FlowException):
    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@initiating_flow
class Haggle(FlowLogic[str]):
    def __init__(self, other: Party, mode: str) -> None:
        self.other, self.mode = other, mode

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, self.mode, str).unwrap(str)


@initiated_by(Haggle)
class HaggleResponder(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        mode = self.receive(self.other, str).unwrap(str)
        if mode == "flow-exception":
            raise PriceTooHigh("price 120 is above the limit", limit=100)
        raise RuntimeError("database password is hunter2")


def test_flow_exception_reaches_the_counterparty_with_type_message_and_fields(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Haggle(bob.party, "flow-exception"))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is PriceTooHigh
    assert str(error) == "price 120 is above the limit"
    assert error.limit == 100


def test_other_exceptions_reach_the_counterparty_without_their_message(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Haggle(bob.party, "crash"))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException
    assert "internal error" in str(error) and "hunter2" not in str(error)
    from_bob = [e.message for e in mock_network.transcript
                if e.sender == "Bob" and not isinstance(e.message, Ack)]
    assert [type(m.body) for m in from_bob if isinstance(m, ExistingSessionMessage)] == [
        Confirm,
        ErrorEnd,
    ]
    assert from_bob[-1] == ExistingSessionMessage(from_bob[-1].session_id, True, 1, ErrorEnd(None))


# ----- three parties -----------------------------------------------------------------------


@initiating_flow
class Relay(AsksOnce):
    """Alice -> Bob: asks Bob, who asks Charlie."""


@initiating_flow
class RelayOnward(AsksOnce):
    pass


@initiated_by(Relay)
class RelayMiddle(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        charlie = self.service_hub.network_map.party("Charlie")
        try:
            answer = self.sub_flow(RelayOnward(charlie))
        except PriceTooHigh as exc:
            answer = f"Charlie refused: {exc}"
        self.send(self.other, answer)


@initiated_by(RelayOnward)
class RelayEnd(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        raise PriceTooHigh("no deal", limit=1)


def test_flow_exception_reaches_only_the_direct_counterparty(mock_network: MockNetwork) -> None:
    alice = mock_network.create_node("Alice")
    mock_network.create_node("Bob")
    mock_network.create_node("Charlie")
    handle = alice.start_flow(Relay(mock_network.party("Bob")))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "Charlie refused: no deal"
    charlie_to_alice = [e for e in mock_network.transcript if (e.sender, e.recipient) ==
                        ("Charlie", "Alice")]
    assert charlie_to_alice == []


@initiating_flow
class Survey(FlowLogic[list[int]]):
    def __init__(self, parties: list[Party]) -> None:
        self.parties = parties

    @suspendable
    def call(self) -> list[int]:
        for party in self.parties:
            self.send(party, "how many?")
        return [self.receive(p, int).unwrap(int) for p in self._in_reverse()]

    def _in_reverse(self) -> list[Party]:
        return list(reversed(self.parties))


@initiated_by(Survey)
class SurveyResponder(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, len(self.our_identity.name))


def test_one_flow_talks_to_several_parties(mock_network: MockNetwork) -> None:
    alice = mock_network.create_node("Alice")
    others = [mock_network.create_node(n).party for n in ("Bob", "Charlotte", "Di")]
    handle = alice.start_flow(Survey(others))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == [2, 9, 3]
