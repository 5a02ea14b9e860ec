"""What users get wrong, and what the network gets wrong: each fails one flow with a clear error."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fibers import (
    FlowLogic,
    Party,
    SerializationError,
    SuspendableError,
    UnexpectedFlowEndException,
    initiated_by,
    initiating_flow,
    serializable,
    suspendable,
)
from fibers._errors import FlowConfigurationError
from fibers._messages import (
    AckedSessionMessage,
    Data,
    ExistingSessionMessage,
    Reject,
    decode_message,
    encode_message,
)
from fibers._wire import encode
from fibers.testing import MockNetwork
from tests.fibers._flows import AsksOnce


@initiating_flow
class NobodyAnswers(AsksOnce):
    QUESTION = "hello?"


def test_unregistered_initiator_is_rejected(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(NobodyAnswers(bob.party))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException
    assert str(error) == f"{__name__}:NobodyAnswers is not registered"
    assert bob.flows() == []


@serializable
class NotAFlow:
    pass


def test_init_naming_a_non_flow_class_is_rejected(mock_network: MockNetwork) -> None:
    from fibers._messages import InitialSessionMessage

    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    init = InitialSessionMessage(42, f"{__name__}:NotAFlow", 1, "tests", None)
    bob.deliver(alice.party, encode_message(init))
    [reject] = (decode_message(m.frame) for m in mock_network.pending_messages())
    assert isinstance(reject, AckedSessionMessage)
    assert reject.body == Reject(f"{__name__}:NotAFlow is not a flow class")
    assert reject.acks == [(42, False, 0)]  # the rejected init is not re-sent


@initiating_flow
class ExpectsInt(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        return self.send_and_receive(self.other, "number please", int).unwrap(int)


@initiated_by(ExpectsInt)
class SendsText(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "forty-two")


def test_receiving_the_wrong_type_names_both_types(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(ExpectsInt(bob.party))
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException
    assert str(error) == "Expected to receive int from Bob but got str: 'forty-two'"


class Unlisted:
    """Not @serializable."""


@initiating_flow
class SendsUnlisted(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, Unlisted())


def test_non_whitelisted_payload_fails_the_sender(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(SendsUnlisted(bob.party))
    error = handle.result.exception(timeout=0)
    assert isinstance(error, SerializationError)
    assert "Unlisted" in str(error) and "@serializable" in str(error)
    assert mock_network.pending_messages() == []  # nothing half-sent


@initiating_flow
class WaitsForAnswer(AsksOnce):
    QUESTION = "hello?"


class ReceivesTwice(FlowLogic[object]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> object:
        self.receive(self.other, str)
        return self.receive(self.other, object).unwrap(lambda v: v)


def test_non_whitelisted_payload_fails_the_receiver(mock_network: MockNetwork) -> None:
    """A hostile or misconfigured sender names a class the receiver does not whitelist."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(WaitsForAnswer, ReceivesTwice)
    handle = alice.start_flow(WaitsForAnswer(bob.party))
    mock_network.run_network(max_messages=1)  # the init: the responder waits for more
    [((_, session_id, _), _)] = list(bob._router.sessions())
    forged = ExistingSessionMessage(session_id, False, 1, Data(_foreign_class_payload()))
    bob.deliver(alice.party, encode_message(forged))
    assert bob.flows() == []  # the responder failed at its receive; the node carries on
    mock_network.run_network()
    error = handle.result.exception(timeout=0)
    assert type(error) is UnexpectedFlowEndException and "internal error" in str(error)


def _foreign_class_payload() -> bytes:
    """The bytes another node would send for an instance of a class this node does not know."""
    from fibers import _wire

    @serializable
    class Foreign:
        pass

    payload = _wire.encode(Foreign())
    name = _wire.whitelisted_name(Foreign)
    _wire.unregister(name)
    return payload


def test_a_malformed_frame_is_dropped_and_the_node_keeps_working(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.deliver(alice.party, b"\xc1 definitely not msgpack")
    bob.deliver(alice.party, encode("a string, not a session message"))
    handle = alice.start_flow(ExpectsInt(bob.party))
    mock_network.run_network()
    assert isinstance(handle.result.exception(timeout=0), UnexpectedFlowEndException)


# ----- configuration errors --------------------------------------------------------------


@initiating_flow
class Asker(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        return self._ask()

    def _ask(self) -> str:  # forgot @suspendable
        return self.send_and_receive(self.other, "q", str).unwrap(str)


def test_suspending_through_an_unmarked_function_names_it(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Asker(bob.party))
    error = handle.result.exception(timeout=0)
    assert isinstance(error, SuspendableError)
    text = str(error)
    assert "Asker._ask" in text and "@suspendable" in text
    assert re.search(r"test_flow_errors\.py:\d+", text)
    assert "Asker.call" not in text


@initiating_flow
class Annotated(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        return None


@initiating_flow
class ReAnnotated(Annotated):
    pass


def test_re_annotating_a_subclass_of_an_initiating_flow_fails_at_start(
    mock_network: MockNetwork,
) -> None:
    alice = mock_network.create_node("Alice")
    error = alice.start_flow(ReAnnotated()).result.exception(timeout=0)
    assert isinstance(error, FlowConfigurationError)
    assert "superclass Annotated" in str(error)


class NotInitiating(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, 1)


def test_a_flow_without_initiating_flow_cannot_open_a_session(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    error = alice.start_flow(NotInitiating(bob.party)).result.exception(timeout=0)
    assert isinstance(error, FlowConfigurationError)
    assert "@initiating_flow" in str(error)


def test_calling_call_directly_explains_how_to_start_a_flow() -> None:
    with pytest.raises(FlowConfigurationError, match=r"node\.start_flow"):
        NotInitiating(Party("x", b"\x00" * 32)).call()


def _local_flow_classes() -> tuple[Any, Any]:
    @initiating_flow
    class LocalAsk(FlowLogic[str]):
        def __init__(self, other: Party) -> None:
            self.other = other

        @suspendable
        def call(self) -> str:
            return self.send_and_receive(self.other, "hi", str).unwrap(str)

    class LocalAnswer(FlowLogic[None]):
        def __init__(self, other: Party) -> None:
            self.other = other

        @suspendable
        def call(self) -> None:
            self.receive(self.other, str)
            self.send(self.other, "hello")

    return LocalAsk, LocalAnswer


def test_a_flow_class_defined_in_a_function_is_refused_by_a_node_with_storage(
    mock_network: MockNetwork,
) -> None:
    local_ask, local_answer = _local_flow_classes()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    with pytest.raises(FlowConfigurationError) as start_error:
        alice.start_flow(local_ask(bob.party))
    message = str(start_error.value)
    assert "LocalAsk" in message and "defined inside a function" in message
    assert "Move the class to module level" in message
    assert alice.flows() == [] and alice.dump_checkpoints() == []
    with pytest.raises(FlowConfigurationError, match="defined inside a function"):
        bob.register_initiated_flow(local_ask, local_answer)
    with pytest.raises(FlowConfigurationError, match=r"LocalAnswer.*defined inside a function"):
        bob.register_initiated_flow(NobodyAnswers, local_answer)


def test_a_responder_factory_making_a_local_class_rejects_the_session_clearly(
    mock_network: MockNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    _, local_answer = _local_flow_classes()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    bob.register_initiated_flow(NobodyAnswers, lambda party: local_answer(party))  # noqa: PLW0108
    handle = alice.start_flow(NobodyAnswers(bob.party))
    mock_network.run_network()
    assert isinstance(handle.result.exception(timeout=0), UnexpectedFlowEndException)
    assert "defined inside a function" in caplog.text
    assert bob.flows() == []


def test_a_node_without_storage_accepts_local_flow_classes() -> None:
    local_ask, local_answer = _local_flow_classes()
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        bob.register_initiated_flow(local_ask, local_answer)
        handle = alice.start_flow(local_ask(bob.party))
        network.run_network()
        assert handle.result.result(timeout=0) == "hello"
