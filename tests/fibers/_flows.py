"""Flow bodies that many engine tests declare alike, as bases for their own flow classes.

Each test module still declares its own classes (``class Ask(AsksOnce)`` under
``@initiating_flow``, ``class Answer(UpperCasesTwice)`` under ``@initiated_by``), because a
responder is paired with one initiating class and a flow class travels by its own
``module:qualname``. Golden flows (tests/fibers/golden_flows.py) do not use these: their wire
names are pinned."""

from __future__ import annotations

from typing import ClassVar

from fibers import FlowLogic, Party, suspendable


class AsksOnce(FlowLogic[str]):
    """Sends ``QUESTION`` to ``other`` and returns the string it answers."""

    QUESTION: ClassVar[str] = "go"

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, self.QUESTION, str).unwrap(str)


class UpperCasesTwice(FlowLogic[None]):
    """Answers each of two strings from ``other`` with the same string upper-cased."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        for _ in range(2):
            word = self.receive(self.other, str).unwrap(str)
            self.send(self.other, word.upper())
