"""The flow side's parts: the switch protocol, the journal with its replay, the stack walk.
Each is driven directly, without a node, against the contract in its docstring; then in a node,
the switch protocol's refusal of foreign IO and the one walk per suspending request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

import pytest
from greenlet import GreenletExit  # type: ignore[import-untyped]

import fibers._stack
import fibers._state_machine
from fibers import (
    FlowConfigurationError,
    FlowLogic,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._flow_logic import binding_of
from fibers._journal import Snapshot
from fibers._replay import FlowJournal
from fibers._stack import FlowStack, unmarked_message, walk
from fibers._switch import Switch, owner_of_current
from fibers.testing import MockNetwork

# ----- the switch protocol ----------------------------------------------------------------------


def test_resume_runs_the_flow_until_it_suspends_and_again_until_it_ends() -> None:
    trace: list[str] = []
    switch: Switch

    def body() -> None:
        trace.append(f"runs as {owner_of_current()}")
        switch.suspend()
        trace.append("resumed")

    switch = Switch(body, "the machine")
    assert not switch.started and owner_of_current() is None
    switch.resume()
    assert trace == ["runs as the machine"] and switch.started
    switch.resume()
    assert trace == ["runs as the machine", "resumed"]
    assert switch.started  # it has run, and ended since


def test_resume_with_throw_raises_at_the_suspension_point() -> None:
    caught: list[BaseException] = []
    switch: Switch

    def body() -> None:
        try:
            switch.suspend()
        except KeyError as exc:
            caught.append(exc)

    switch = Switch(body, None)
    switch.resume()
    switch.resume(throw=KeyError("killed"))
    assert [str(e) for e in caught] == ["'killed'"]


def test_a_flow_that_leaves_is_only_ever_unwound_and_its_finally_runs() -> None:
    trace: list[str] = []
    switch: Switch

    def body() -> None:
        try:
            switch.leave()
        except GreenletExit:
            trace.append("unwound")
            raise
        finally:
            trace.append("finally")

    switch = Switch(body, None)
    switch.resume()
    assert trace == []
    switch.unwind()
    assert trace == ["unwound", "finally"]
    switch.unwind()  # ended: a no-op
    Switch(lambda: None, None).unwind()  # never started: a no-op


def test_suspending_outside_the_flows_greenlet_is_refused_with_its_likely_cause() -> None:
    never_run = Switch(lambda: None, None)
    with pytest.raises(FlowConfigurationError, match="suspended outside its own greenlet"):
        never_run.suspend()
    blocked: Switch

    def blocked_body() -> None:
        blocked.suspend()

    blocked = Switch(blocked_body, None)
    blocked.resume()  # started and suspended: still refused from elsewhere
    with pytest.raises(FlowConfigurationError, match="thread, a callback or another flow"):
        blocked.suspend()

    def intruder_body() -> None:
        blocked.suspend()  # from another flow's greenlet

    with pytest.raises(FlowConfigurationError, match="outside its own greenlet"):
        Switch(intruder_body, None).resume()
    blocked.resume()  # the refusals left it intact: it runs to its end
    assert blocked.started


# ----- the journal and replay -------------------------------------------------------------------


class Diverged(Exception):
    pass


def _refuse(where: str) -> NoReturn:
    raise Diverged(where)


def test_a_live_journal_records_requests_in_order() -> None:
    journal = FlowJournal(True, _refuse)
    assert journal.replayed("now") is None and not journal.replaying
    journal.record(("now", datetime(2026, 1, 1, tzinfo=UTC)))
    journal.record(("random", 2, b"ab"))
    assert journal.length == 2 and [e[0] for e in journal.new_entries] == ["now", "random"]


def test_without_storage_nothing_is_recorded() -> None:
    journal = FlowJournal(False, _refuse)
    journal.record(("random", 2, b"ab"))
    assert journal.length == 0 and journal.new_entries == []


def test_replay_answers_from_the_records_then_expects_the_pending_request() -> None:
    expected = Snapshot(("Flow.call",), (10,), "a message from Bob", b"")
    journal = FlowJournal(True, _refuse)
    journal.start_replay([("random", 2, b"ab"), ("now", "t")], expected)
    assert journal.replaying and journal.length == 2
    assert journal.replayed("random", 2) == ("random", 2, b"ab")
    assert journal.peek() == ("now", "t")
    assert journal.replayed("now") == ("now", "t")
    assert not journal.replaying
    # used up, not yet at the pending request: a new request or an end is a divergence
    with pytest.raises(Diverged, match=r"journal record 2 \(the checkpoint's pending request\)"
                                       r".*waits for a message from Bob.*draw random bytes"):
        journal.record(("random", 1, b"c"))
    with pytest.raises(Diverged, match="but the code now returned"):
        journal.check_done("returned")
    assert journal.take_expected() is expected
    assert journal.take_expected() is None  # the replay is over: live from here
    journal.record(("random", 1, b"c"))
    journal.check_done("returned")
    assert journal.length == 3


def test_a_request_that_does_not_match_its_record_names_the_record() -> None:
    journal = FlowJournal(True, _refuse)
    journal.start_replay([("send", 0, "Bob", b"12345678")], None)
    with pytest.raises(Diverged, match=r"journal record 0 \(send\): the journal says send to "
                                       r"Bob .*but the code now did receive from Bob"):
        journal.replayed("recv", 0, "Bob")


def test_a_misplaced_pending_request_is_worded_and_moved_lines_are_not() -> None:
    journal = FlowJournal(True, _refuse)
    at = Snapshot(("Flow.call", "helper"), (10, 20), "a message from Bob", b"")
    moved = Snapshot(("Flow.call", "helper"), (11, 22), "a message from Bob", b"")
    elsewhere = Snapshot(("Flow.call",), (12,), "a timer until noon", b"")
    assert journal.misplaced(at, moved) is None
    reason = journal.misplaced(at, elsewhere)
    assert reason is not None and "Flow.call > helper waiting for a message from Bob" in reason
    assert "suspends in Flow.call waiting for a timer until noon" in reason


# ----- the stack walk ---------------------------------------------------------------------------


@suspendable
def _marked_outer() -> FlowStack:
    return _marked_inner()


@suspendable
def _marked_inner() -> FlowStack:
    return _unmarked()


def _unmarked() -> FlowStack:
    return next(walk(0) for _ in range(1))  # a generator expression frame is neither kind


def test_one_walk_finds_both_the_marked_frames_and_the_unmarked_ones() -> None:
    stack = _marked_outer()
    assert stack.call_chain[-2:] == ("_marked_outer", "_marked_inner")
    assert len(stack.lines) == len(stack.call_chain)
    unmarked = [code.co_qualname for code, _ in stack.unmarked]
    assert unmarked[0] == "_unmarked"  # innermost first
    assert "test_one_walk_finds_both_the_marked_frames_and_the_unmarked_ones" in unmarked
    assert not any("<genexpr>" in name for name in unmarked)
    message = unmarked_message("MyFlow", "receive", stack)
    assert message.startswith("MyFlow suspended in receive() with functions that are not "
                              "marked @suspendable on its stack:\n  - _unmarked (")
    assert "Mark each of them with @suspendable" in message


# ----- in a node: the switch protocol's refusal and the single walk ---------------------------


@initiating_flow
class Ask(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        self.send(self.other, 1)
        first = self.receive(self.other, int).unwrap(int)
        return first + self.receive(self.other, int).unwrap(int)


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        question = self.receive(self.other, int).unwrap(int)
        self.send(self.other, question + 1)
        self.send(self.other, question + 2)


def test_io_from_outside_the_flows_greenlet_names_the_likely_cause() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        flow = Ask(bob.party)
        alice.start_flow(flow)  # suspended in its first receive: nothing delivered yet
        assert binding_of(flow).machine.status.name == "SUSPENDED"  # type: ignore[union-attr]
        with pytest.raises(FlowConfigurationError, match=r"outside its own greenlet.*thread"):
            flow.receive(bob.party, int)
        network.run_network()
        binding = binding_of(flow)
        assert binding is not None and binding.machine.result_value == 5


def test_each_suspending_request_walks_the_stack_once(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[tuple[str, ...]] = []
    real_walk = fibers._state_machine.walk_again

    def counting_walk(previous: fibers._stack.FlowStack | None) -> fibers._stack.FlowStack:
        stack = real_walk(previous, 2)
        walks.append(stack.call_chain)
        return stack

    monkeypatch.setattr(fibers._state_machine, "walk_again", counting_walk)
    with MockNetwork() as network:  # durable: every suspension takes a frame snapshot
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(Ask(bob.party))
        network.run_network()
        assert handle.result.result(timeout=0) == 5
    ask, answer = (f"{cls.__qualname__}.call" for cls in (Ask, Answer))
    # one walk per receive (two in Ask, one in Answer), shared by check and snapshot
    assert sorted(walks) == sorted([(ask,), (ask,), (answer,)])
