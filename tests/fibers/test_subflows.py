"""Sub-flows: inlined ones share the parent's sessions, initiating ones open their own."""

from __future__ import annotations

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers.testing import MockNetwork


class AskInline(FlowLogic[int]):
    """Not initiating: talks over its parent's session."""

    def __init__(self, other: Party, question: int) -> None:
        self.other, self.question = other, question

    @suspendable
    def call(self) -> int:
        return self.send_and_receive(self.other, self.question, int).unwrap(int)


@initiating_flow
class TwoInlinedQuestions(FlowLogic[list[int]]):
    def __init__(self, other: Party, count: int) -> None:
        self.other, self.count = other, count

    @suspendable
    def call(self) -> list[int]:
        answers = []
        for question in range(1, self.count + 1):
            answers.append(self.sub_flow(AskInline(self.other, question)))
        return answers


class AnswerInline(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        question = self.receive(self.other, int).unwrap(int)
        self.send(self.other, question * 10)


@initiated_by(TwoInlinedQuestions)
class TwoInlinedAnswers(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while True:
            try:
                self.sub_flow(AnswerInline(self.other))
            except FlowException:
                return  # the initiator ended: no more questions


def _sessions_opened(network: MockNetwork) -> int:
    from fibers._messages import InitialSessionMessage

    return sum(isinstance(e.message, InitialSessionMessage) for e in network.transcript)


def test_single_inlined_sub_flow_uses_the_parent_session(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(TwoInlinedQuestions(bob.party, 1))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == [10]
    assert _sessions_opened(mock_network) == 1


def test_double_inlined_sub_flows_use_the_parent_session(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(TwoInlinedQuestions(bob.party, 2))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == [10, 20]
    assert _sessions_opened(mock_network) == 1


class Flaky(FlowException):
    pass


@initiating_flow
class FlakyQuery(FlowLogic[str]):
    def __init__(self, other: Party, attempt: int) -> None:
        self.other, self.attempt = other, attempt

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, self.attempt, str).unwrap(str)


@initiated_by(FlakyQuery)
class FlakyService(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        attempt = self.receive(self.other, int).unwrap(int)
        if attempt < 3:
            raise Flaky(f"attempt {attempt} failed, try again")
        self.send(self.other, f"ok on attempt {attempt}")


class RetryingClient(FlowLogic[tuple[str, list[str]]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[str, list[str]]:
        errors: list[str] = []
        for attempt in range(1, 5):
            try:
                return self.sub_flow(FlakyQuery(self.other, attempt)), errors
            except Flaky as exc:
                errors.append(str(exc))
        raise AssertionError("never succeeded")


def test_sub_flow_retried_after_catching_its_flow_exception(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(RetryingClient(bob.party))
    mock_network.run_network()
    result, errors = handle.result.result(timeout=0)
    assert result == "ok on attempt 3"
    assert errors == ["attempt 1 failed, try again", "attempt 2 failed, try again"]
    assert _sessions_opened(mock_network) == 3


# ----- versions and customised initiators -------------------------------------------------------


@initiating_flow(version=2)
class VersionedHello(FlowLogic[tuple[int, str]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> tuple[int, str]:
        info = self.get_flow_info(self.other)
        greeting = "hello v2" if info.flow_version >= 2 else "hello v1"
        reply = self.send_and_receive(self.other, greeting, str).unwrap(str)
        return info.flow_version, reply


class VersionedResponder(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        their_version = self.get_flow_info(self.other).flow_version
        greeting = self.receive(self.other, str).unwrap(str)
        self.send(self.other, f"{greeting} / initiator runs v{their_version}")


def test_upgraded_initiator_talking_to_an_old_responder(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(VersionedHello, VersionedResponder, version=1)
    handle = alice.start_flow(VersionedHello(bob.party))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == (1, "hello v1 / initiator runs v2")


def test_upgraded_responder_sees_the_initiator_version(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(VersionedHello, VersionedResponder, version=3)
    handle = alice.start_flow(VersionedHello(bob.party))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == (3, "hello v2 / initiator runs v2")


class CustomisedPing(FlakyQuery):
    """A customised client: no annotation of its own, so it reuses FlakyQuery's responder."""

    @suspendable
    def call(self) -> str:
        return "customised: " + super().call()


def test_customised_client_flow_reuses_its_parent_responder(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(CustomisedPing(bob.party, 7))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "customised: ok on attempt 7"
