"""The flows and service of the golden-file scenario (tests/fibers/test_golden.py).

Their module name, class names and line numbers are part of the golden records (pickled
classes, frame snapshots): editing this file means regenerating tests/fibers/golden/.
"""

from __future__ import annotations

from fibers import (
    FlowLogic,
    Party,
    SerializeAsToken,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers.services import journaled


class Tickets(SerializeAsToken):
    @journaled
    def issue(self, amount: int) -> int:
        return amount * 10


@initiating_flow
class GoldenAsk(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        started = self.now()
        salt = self.random_bytes(4)
        ticket = self.service_hub.tickets.issue(7)
        first = self.send_and_receive(self.other, ["first", salt.hex(), ticket], str).unwrap(str)
        info = self.get_flow_info(self.other)
        self.sleep(5)
        second = self.sub_flow(GoldenFollowUp(self.other))
        return f"{first}/{second}/v{info.flow_version}/{started.isoformat()}"


class GoldenFollowUp(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, "second", str).unwrap(str)


@initiated_by(GoldenAsk)
class GoldenAnswer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        question = self.receive(self.other, list).unwrap(list)
        self.send(self.other, f"{question[0]}:{question[2]}".upper())
        self.receive(self.other, str)
        self.sleep(60)
        self.send(self.other, "SECOND")
