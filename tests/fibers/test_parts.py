"""The scheduler on its own (docs/architecture.md, "The parts"): its run queue, timers, retry
timers and event waiters, without a node around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from fibers._flow_logic import StateMachineRunId
from fibers._scheduler import Scheduler
from fibers._state_machine import FlowStateMachine

T0 = datetime(2026, 1, 1)


@dataclass(eq=False)
class FakeMachine:
    """What the scheduler reads of a flow state machine."""

    run_id: StateMachineRunId = field(default_factory=StateMachineRunId._new)
    scheduled: bool = False
    finished: bool = False
    abandoned: bool = False
    steps: int = 0


def _machine() -> tuple[FakeMachine, FlowStateMachine]:
    fake = FakeMachine()
    return fake, cast(FlowStateMachine, fake)


def _scheduler(ran: list[FakeMachine], commits: list[int]) -> Scheduler:
    pending = [0]

    def step(machine: FlowStateMachine, throw: BaseException | None) -> None:
        fake = cast(FakeMachine, machine)
        fake.steps += 1
        ran.append(fake)
        pending[0] = 1

    def commit() -> None:
        commits.append(pending[0])
        pending[0] = 0

    return Scheduler(step, lambda: pending[0] > 0, commit)


def test_a_machine_is_queued_once_and_never_when_finished_or_abandoned() -> None:
    ran: list[FakeMachine] = []
    commits: list[int] = []
    scheduler = _scheduler(ran, commits)
    (a, a_m), (b, b_m), (c, c_m) = _machine(), _machine(), _machine()
    b.finished, c.abandoned = True, True
    for machine in (a_m, a_m, b_m, c_m):
        scheduler.schedule(machine)
    scheduler.run_until_idle()
    assert ran == [a] and a.steps == 1 and not a.scheduled
    assert commits == [1]  # one group commit for the round


def test_unschedule_takes_a_machine_off_the_queue() -> None:
    ran: list[FakeMachine] = []
    scheduler = _scheduler(ran, [])
    (a, a_m), (b, b_m) = _machine(), _machine()
    scheduler.schedule(a_m)
    scheduler.schedule(b_m)
    scheduler.unschedule(a_m)
    scheduler.run_until_idle()
    assert ran == [b] and not a.scheduled


def test_timers_wake_in_deadline_order_and_retries_are_due_apart() -> None:
    ran: list[FakeMachine] = []
    scheduler = _scheduler(ran, [])
    (a, a_m), (b, b_m), (done, done_m) = _machine(), _machine(), _machine()
    done.finished = True
    for machine in (a_m, b_m, done_m):
        scheduler.add(machine)  # timers name flows by run id (a hibernated one has none)
    scheduler.wake_at(a.run_id, T0 + timedelta(seconds=2))
    scheduler.wake_at(b.run_id, T0 + timedelta(seconds=1))
    scheduler.wake_at(done.run_id, T0)
    retry = StateMachineRunId._new()
    scheduler.retry_at(retry, T0 + timedelta(seconds=5))
    assert scheduler.next_deadline() == T0 and scheduler.retry_pending
    assert scheduler.wake_due(T0 + timedelta(seconds=1)) == 1  # b; the finished one skipped
    assert scheduler.due_retries(T0 + timedelta(seconds=4)) == []
    assert scheduler.wake_due(T0 + timedelta(seconds=3)) == 1
    scheduler.run_until_idle()
    assert ran == [b, a]
    assert scheduler.due_retries(T0 + timedelta(seconds=5)) == [retry]
    assert not scheduler.retry_pending and scheduler.next_deadline() is None


def test_a_signal_wakes_its_waiters_once() -> None:
    ran: list[FakeMachine] = []
    scheduler = _scheduler(ran, [])
    (a, a_m), (b, b_m) = _machine(), _machine()
    scheduler.add(a_m)
    scheduler.add(b_m)
    scheduler.await_event(a.run_id, "vault")
    scheduler.await_event(b.run_id, "other")
    scheduler.signal("vault")
    scheduler.signal("vault")
    scheduler.run_until_idle()
    assert ran == [a]


def test_run_until_idle_is_not_re_entered() -> None:
    ran: list[FakeMachine] = []
    holder: list[Scheduler] = []
    (a, a_m), (b, b_m) = _machine(), _machine()

    def step(machine: FlowStateMachine, throw: BaseException | None) -> None:
        ran.append(cast(FakeMachine, machine))
        if machine is a_m:
            holder[0].schedule(b_m)
            holder[0].run_until_idle()  # from inside a step: returns at once
            assert ran == [a]

    scheduler = Scheduler(step, lambda: False, lambda: None)
    holder.append(scheduler)
    scheduler.schedule(a_m)
    scheduler.run_until_idle()
    assert ran == [a, b]
