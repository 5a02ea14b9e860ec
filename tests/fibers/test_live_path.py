"""The live round trip's shortcuts hold what the long way held (docs/architecture.md, "The step
pipeline"): the stack walk reused while a flow's call chain is unchanged, and only then; send
and receive without request objects; a flow's result future made only when asked for."""

from __future__ import annotations

import ast
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import fibers
import fibers._stack
import fibers._state_machine
from fibers import (
    FlowLogic,
    Party,
    SuspendableError,
    _io,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._flow_logic import FlowOutcome, binding_of
from fibers._stack import FlowStack
from fibers.testing import MockNetwork

PACKAGE = Path(fibers.__file__).parent


@pytest.fixture
def full_walks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The call chains of the full walks (the ones not reused), in order."""
    walks: list[tuple[str, ...]] = []
    real = fibers._stack._walk_from

    def counting(frame: Any) -> FlowStack:
        stack = real(frame)
        walks.append(stack.call_chain)
        return stack

    monkeypatch.setattr(fibers._stack, "_walk_from", counting)
    return walks


# ----- flows: a chain that stays, one that changes, and one that adds an unmarked function ---


@initiating_flow
class AskThrice(FlowLogic[list[int]]):
    """Three receives from the same frame of ``call`` (different lines), then one from a
    marked helper, then one from ``call`` again."""

    def __init__(self, other: Party) -> None:
        self.other = other
        self.lines: list[tuple[int, ...]] = []

    def _note(self) -> None:
        machine = binding_of(self)
        assert machine is not None and machine.machine.snapshot is not None
        self.lines.append(machine.machine.snapshot.lines)

    @suspendable
    def call(self) -> list[int]:
        got = [self.send_and_receive(self.other, 1, int).unwrap(int)]
        self._note()
        got.append(self.send_and_receive(self.other, 2, int).unwrap(int))
        self._note()
        got.append(self.helper())
        self._note()
        got.append(self.send_and_receive(self.other, 4, int).unwrap(int))
        self._note()
        return got

    @suspendable
    def helper(self) -> int:
        return self.send_and_receive(self.other, 3, int).unwrap(int)


@initiated_by(AskThrice)
class Echo(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while True:
            self.send(self.other, self.receive(self.other, int).unwrap(int) * 10)


def test_receives_from_the_same_frame_reuse_the_walk_with_their_new_lines(
    full_walks: list[tuple[str, ...]],
) -> None:
    with MockNetwork() as network:  # durable: every suspension takes a snapshot of its lines
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        flow = AskThrice(bob.party)
        handle = alice.start_flow(flow)
        network.run_network()
        assert handle.result.result(timeout=0) == [10, 20, 30, 40]
    ask = (f"{AskThrice.__qualname__}.call",)
    helper = (*ask, f"{AskThrice.__qualname__}.helper")
    echo = (f"{Echo.__qualname__}.call",)
    # AskThrice: one walk for call, one for the helper (a new frame), one for call again (the
    # helper was the innermost marked frame of the last walk); Echo walks once, for good.
    assert [w for w in full_walks if w != echo] == [ask, helper, ask]
    assert full_walks.count(echo) == 1
    first, second, third, fourth = flow.lines
    assert first != second and len(first) == len(second) == 1  # same chain, line moved
    assert len(third) == 2 and len(fourth) == 1 and fourth not in (first, second)


@initiating_flow
class MarkedThenUnmarked(FlowLogic[int]):
    """Receives from ``call`` (the walk is kept), then from an unmarked function it calls."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        first = self.send_and_receive(self.other, 1, int).unwrap(int)
        return first + not_marked(self)


def not_marked(flow: MarkedThenUnmarked) -> int:
    return flow.send_and_receive(flow.other, 2, int).unwrap(int)


@initiated_by(MarkedThenUnmarked)
class EchoToo(Echo):
    pass


def test_an_unmarked_function_called_after_a_reused_walk_is_still_refused(
    full_walks: list[tuple[str, ...]],
) -> None:
    with MockNetwork(strict_suspendable=True) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(MarkedThenUnmarked(bob.party))
        network.run_network()
        with pytest.raises(SuspendableError, match=r"not_marked"):
            handle.result.result(timeout=0)
    chain = (f"{MarkedThenUnmarked.__qualname__}.call",)
    assert full_walks.count(chain) == 2  # the second receive was walked again, not reused


@initiating_flow
class CatchesTheRefusal(FlowLogic[int]):
    """Its unmarked function's receive is refused; it catches that and receives from call."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        try:
            return not_marked(self)  # type: ignore[arg-type]
        except SuspendableError:
            return self.send_and_receive(self.other, 5, int).unwrap(int)


@initiated_by(CatchesTheRefusal)
class EchoFour(Echo):
    pass


def test_a_walk_that_found_an_unmarked_frame_is_not_reused_once_it_is_gone() -> None:
    with MockNetwork(strict_suspendable=True) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(CatchesTheRefusal(bob.party))
        network.run_network()
        # Not refused again; the answer is the one to the 2 the refused function had sent.
        assert handle.result.result(timeout=0) == 20


@initiating_flow
class ReceiveInComprehension(FlowLogic[list[int]]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[int]:
        first = self.send_and_receive(self.other, 1, int).unwrap(int)
        return [first] + [self.send_and_receive(self.other, n, int).unwrap(int)
                          for n in (2, 3)]


@initiated_by(ReceiveInComprehension)
class EchoThree(Echo):
    pass


def test_a_receive_from_a_comprehension_is_walked_and_allowed() -> None:
    with MockNetwork(strict_suspendable=True) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(ReceiveInComprehension(bob.party))
        network.run_network()
        assert handle.result.result(timeout=0) == [10, 20, 30]


def test_a_finished_flow_lets_go_of_its_last_walk() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        flow = AskThrice(bob.party)
        alice.start_flow(flow)
        binding = binding_of(flow)
        assert binding is not None
        machine = binding.machine
        assert machine._walked is not None  # parked in its first receive, walk kept
        network.run_network()
        assert machine.finished and machine._walked is None


def test_only_flow_logic_calls_the_state_machines_requests() -> None:
    """``fibers._stack.walk_again``'s contract: a state machine's ``receive`` and its
    suspending ``execute`` requests are called by ``FlowLogic`` methods only (the frame above
    them is the framework's). ``execute`` elsewhere performs journaled service calls only."""
    callers: dict[str, set[str]] = {"receive": set(), "execute": set()}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in callers and "machine" in ast.unparse(node.func.value):
                callers[node.func.attr].add(path.name)
    assert callers == {"receive": {"_flow_logic.py"},
                       "execute": {"_flow_logic.py", "_services.py"}}
    assert "ServiceCall" in (PACKAGE / "_services.py").read_text()


# ----- send and receive without request objects ------------------------------------------------


def test_send_and_receive_are_not_request_objects() -> None:
    assert not hasattr(_io, "Send") and not hasattr(_io, "Receive")


@initiating_flow
class SendsToAName(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        self.send("Bob", 1)  # type: ignore[arg-type]


@initiating_flow
class ReceivesFromAName(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        self.receive("Bob", int)  # type: ignore[arg-type]


@pytest.mark.parametrize("flow_class", [SendsToAName, ReceivesFromAName])
def test_talking_to_something_that_is_not_a_party_is_refused_by_name(
    flow_class: type[FlowLogic[None]],
) -> None:
    with MockNetwork() as network:
        alice = network.create_node("Alice")
        handle = alice.start_flow(flow_class())
        with pytest.raises(TypeError, match=r"expected a Party to talk to, got str"):
            handle.result.result(timeout=0)


# ----- the result future -----------------------------------------------------------------------


def test_a_parked_flow_has_no_result_future_until_someone_asks() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(AskThrice(bob.party))
        assert not handle.outcome.asked and not handle.outcome.settled
        network.run_network()
        assert handle.outcome.settled and not handle.outcome.asked
        assert handle.result.result(timeout=0) == [10, 20, 30, 40]  # made now, done
        assert handle.outcome.asked and handle.result is handle.result


def test_an_outcome_settles_once_and_its_future_sees_it_whenever_made() -> None:
    early: FlowOutcome[int] = FlowOutcome()
    future = early.future
    early.settle(1, None)
    early.settle(2, None)  # the first call wins
    assert future.result(timeout=0) == 1

    late: FlowOutcome[int] = FlowOutcome()
    late.settle(None, ValueError("failed"))
    with pytest.raises(ValueError, match="failed"):
        late.future.result(timeout=0)


def test_an_outcome_asked_for_on_another_thread_while_it_settles_completes_once() -> None:
    for _ in range(200):
        outcome: FlowOutcome[int] = FlowOutcome()
        futures: list[Future[int]] = []
        asker = threading.Thread(target=lambda o=outcome, f=futures: f.append(o.future))
        asker.start()
        outcome.settle(7, None)
        asker.join()
        assert futures[0].result(timeout=1) == 7
