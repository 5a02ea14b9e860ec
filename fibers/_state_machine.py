"""``FlowStateMachine``: one flow run, composed of the parts that each own their state.

* the switch protocol (``fibers._switch.Switch``): the flow's greenlet and who resumes it;
* the journal and replay (``fibers._replay.FlowJournal``): records of the current step, and
  the way a restored flow finds back to its checkpoint;
* the sessions (``fibers._sessions.SessionTable``);
* the IO request handlers (``fibers._requests``), reached through ``execute``, the one place
  every request is performed, journaled and answered on replay;
* the stack walk (``fibers._stack``), done once per potentially suspending request for both
  the ``@suspendable`` check and the frame snapshot.

This class holds what ties them together: the flow's life (status, end, result), the output
of the current step (messages, consumed inbox keys, service writes: the node takes them when
the step ends), the kill and hospital hooks, sub-flows and progress. It sees its node only as
a ``fibers._flow_host.FlowHost``. The switch protocol and the records are described in
docs/checkpoint-format.md.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from greenlet import GreenletExit, getcurrent  # type: ignore[import-untyped]

from fibers import _io
from fibers._annotations import check_initiating_annotation, initiating_class_of
from fibers._errors import (
    FlowConfigurationError,
    FlowException,
    HospitalizeFlowException,
    KilledFlowException,
    NondeterminismError,
    SuspendableError,
)
from fibers._flow_logic import (
    FlowBinding,
    FlowLogic,
    FlowOutcome,
    StateMachineRunId,
    bind,
    binding_of,
)
from fibers._frame_snapshots import SnapshotCache, SnapshotValues
from fibers._identity import Party
from fibers._journal import JournalEntry, Snapshot, describe_wait
from fibers._locals import CapturedLocals
from fibers._messages import SessionMessage
from fibers._progress import ProgressTracker
from fibers._replay import FlowJournal
from fibers._requests import SUSPENDING_REQUESTS, perform, receive, send
from fibers._session import FlowSession
from fibers._sessions import SessionTable, class_name
from fibers._stack import (
    FlowStack,
    flows_on_stack,
    suspendable_in_traceback,
    suspendable_on_stack,
    unmarked_message,
    walk,
    walk_again,
)
from fibers._switch import Switch, owner_of_current
from fibers._wake_index import NO_WAIT, Wait

if TYPE_CHECKING:
    from fibers._flow_host import FlowHost

R = TypeVar("R")
log = logging.getLogger("fibers.flow")

# How a suspending request made outside its flow's greenlet is named in the refusal
# (Switch.check_inside), by request type: formatted once, not at every request.
_MADE_REQUEST: dict[type, str] = {
    kind: f"made a {kind.__name__.lower()}() request" for kind in SUSPENDING_REQUESTS}
_MADE_RECEIVE = "made a receive() request"


class FlowStatus(enum.Enum):
    """Where a flow run is in its life."""

    RUNNABLE = "RUNNABLE"
    SUSPENDED = "SUSPENDED"
    HOSPITALIZED = "HOSPITALIZED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    KILLED = "KILLED"


_EAGER: Wait = (None, None, True)


def current_machine() -> FlowStateMachine | None:
    """The state machine whose flow is running in this greenlet, or None outside flows."""
    owner = owner_of_current()
    return owner if isinstance(owner, FlowStateMachine) else None


class FlowStateMachine:
    """A running flow: its greenlet, sessions, journal, what it waits for and its step output."""

    # Set on the instance only when used (every_step snapshots, parking), so that the many
    # flows that never need them carry nothing for them:
    # Invariant: stored_values holds the digests of the content-addressed values written (or
    # being written with the current step) for this flow by this machine; a step whose commit
    # fails abandons the machine, so none is missing from storage while the machine runs.
    stored_values: set[bytes] | None = None
    # The values the current step's snapshot references that are new: written with it.
    new_values: SnapshotValues | None = None
    # The locals captured when the flow parked itself for the hospital (written with its
    # hospital status), until the hospital takes them.
    parked_locals: CapturedLocals | None = None

    def __init__(self, node: FlowHost, run_id: StateMachineRunId, flow: FlowLogic[Any]) -> None:
        self.node = node
        self.run_id = run_id
        self.flow = flow
        self.status = FlowStatus.RUNNABLE
        # Where the result lands; shared with a successor restored for a retry.
        self.outcome: FlowOutcome[Any] = FlowOutcome()
        # The value the flow returned, once it COMPLETED.
        self.result_value: object = None
        # What the suspended flow waits for: a FlowSession, a sleep deadline, an event
        # request, or None while it runs (the node wakes it by what arrives).
        self.waiting: object = None
        # Whether the flow is on the node's run queue (the scheduler's flag).
        self.scheduled = False
        # Invariant: finished is set once, with status COMPLETED/FAILED/KILLED and failure.
        self.finished = False
        self.failure: BaseException | None = None
        self._next_flow_index = 1
        self.journal = FlowJournal(node.durable, self._diverged)
        # The current step's output, taken by the node when the step ends: messages (they
        # leave after the step commits), inbox keys consumed, service writes (Node.step_write).
        self.outbox: list[tuple[Party, SessionMessage]] = []
        self.consumed: list[tuple[str, int, bool, int]] = []
        self.extra_writes: list[Callable[[Any], object]] = []
        self.session_table = SessionTable(self, node, self.journal, self.emit)
        # Invariant: abandoned is set when the engine parks (hospital) or drops (node stop) the
        # flow; from then on its greenlet has no further effect on the node. A flow parked from
        # inside (hospital_diagnosis set) is abandoned and HOSPITALIZED.
        self.abandoned = False
        self.hospital_diagnosis: str | None = None
        # The snapshot of the flow's last suspension: written with the step when it did IO,
        # else the one already stored (or, for a restored flow, the one it was verified
        # against).
        self.snapshot: Snapshot | None = None
        # The encoded start record, until the step that writes it is taken by the node.
        self.start_record: bytes | None = None
        # Set on a restored flow: its stored inbox is fed to it once its first step is done.
        self.needs_refeed = False
        # Set while a hibernated flow replays to be handed what woke it (a message, a kill,
        # an inspection): a receive deadline that passed while it slept does not fire at its
        # checkpoint, ahead of the message (its timer, registered again, fires after).
        self.handed_wake = False
        # Set by the operator's kill: the flow ends KILLED at its next request, whatever it
        # does with the KilledFlowException thrown into it.
        self.kill: KilledFlowException | None = None
        # The wake index (docs/checkpoint-format.md): set when a session opened live (or the
        # flow must be indexed again), so the step writes its routes; what the index says it
        # waits for besides messages (None: unknown, written with the next step); the
        # deadline of a receive that waits with one.
        self.routes_changed = False
        self.stored_wait: Wait | None = NO_WAIT
        self.wake_deadline: datetime | None = None
        # Replayed as soon as the node restarts (fibers.services.wake_on_restart).
        self.wake_on_restart = False
        # Never hibernated (a tracked flow: its progress observers hold its tracker).
        self.pinned = False
        # Pickled frozen values reused between this flow's snapshots (see capture_frames).
        self.snapshot_cache: SnapshotCache = {}
        # Invariant: set exactly while a request that may suspend is being performed: the
        # stack walked once for it, used by the @suspendable check and by every snapshot
        # taken before the request returns (the flow's own frames do not move meanwhile).
        self._stack: FlowStack | None = None
        # The stack of the last walk, kept so that the next suspending request made from the
        # same frame reuses it (``fibers._stack.walk_again``); dropped when the flow ends.
        # Its frames are the suspended flow's own (alive while it waits in them), so keeping
        # it costs only the FlowStack and its two lists.
        self._walked: FlowStack | None = None
        self._switch = Switch(self._run, self)
        self._greenlet = self._switch.greenlet  # for the receive's inside check, without a call
        bind(flow, FlowBinding(self, 0, flow, 0))

    # ----- the parts, as the node sees them -----------------------------------------------------

    @property
    def sessions(self) -> dict[tuple[int, str], FlowSession]:
        """The open sessions by (index of the owning flow within this run, peer name)."""
        return self.session_table.open

    @property
    def session_history(self) -> list[FlowSession]:
        """Every session this run had, open or closed."""
        return self.session_table.history

    @property
    def new_journal(self) -> list[JournalEntry]:
        """The journal records of the current step."""
        return self.journal.new_entries

    @new_journal.setter
    def new_journal(self, entries: list[JournalEntry]) -> None:
        self.journal.new_entries = entries

    @property
    def journal_length(self) -> int:
        """How many journal records the flow made in all (committed or not)."""
        return self.journal.length

    @property
    def replaying(self) -> bool:
        """Whether the flow is re-running requests answered from its journal."""
        return self.journal.replaying

    def start_replay(self, journal: list[JournalEntry], expected: Snapshot | None) -> None:
        """Answer the flow's next requests from ``journal`` (a restore), then verify that it
        suspends where ``expected`` says."""
        self.journal.start_replay(journal, expected)

    # ----- the switch protocol ------------------------------------------------------------------

    def resume(self, throw: BaseException | None = None) -> None:
        """Run the flow until it suspends or ends (scheduler side). ``throw`` raises an exception
        at the flow's suspension point instead of letting the request re-check its condition."""
        self.status = FlowStatus.RUNNABLE
        self._switch.resume(throw)

    def suspend(self, wait: object) -> None:
        """Give control back to the scheduler until it resumes this flow (flow side, from a
        request handler): first checkpoint the step if it did IO, or verify a restored flow's
        place. ``wait`` is what the flow waits for. Only the handlers of
        ``SUSPENDING_REQUESTS`` call it, so ``execute`` has checked that the flow's own
        greenlet runs."""
        if self.abandoned:  # e.g. a `finally:` doing IO while an abandoned flow unwinds
            raise GreenletExit
        if self.kill is not None:
            self.end_killed()
        journal = self.journal
        if journal.restoring and journal.replaying:
            journal.diverged(f"the code now waits for {describe_wait(wait)}")
        self.waiting = wait
        self.status = FlowStatus.SUSPENDED
        if journal.journaling:  # the node is durable
            self._checkpoint(wait)
        try:
            self._switch.suspend_checked()
        finally:
            self.waiting = None

    def _checkpoint(self, wait: object) -> None:
        # A snapshot is taken only when this step will be written (it did IO); a flow woken
        # without progress, or a restored flow back at its checkpoint, keeps the snapshot it
        # has, after its call chain is checked. Its locals are pickled only under the
        # every_step policy (fibers._locals).
        changed = bool(self.journal.new_entries or self.outbox or self.start_record)
        expected = self.journal.take_expected()
        if changed or expected is not None:
            current = self._take_snapshot(
                wait, changed and self.node.snapshot_locals == "every_step")
            if expected is not None:
                self._verify_against(expected, current)
            self.snapshot = current if changed else expected

    def _take_snapshot(self, wait: object, with_locals: bool) -> Snapshot:
        stack = self._stack
        assert stack is not None, "only suspending requests suspend"
        if not with_locals:
            return self.node.checkpoints.snapshot(stack, describe_wait(wait), None)
        stored = self.stored_values
        if stored is None:
            stored = self.stored_values = set()
        values: SnapshotValues = []
        snapshot = self.node.checkpoints.snapshot(
            stack, describe_wait(wait), self.snapshot_cache, values, stored)
        if values:  # written with this step: later snapshots only reference them
            stored.update(digest for digest, _ in values)
            if self.new_values is None:
                self.new_values = values
            else:
                self.new_values.extend(values)
        return snapshot

    def capture_locals(self) -> CapturedLocals | None:
        """The locals of the suspended flow's ``@suspendable`` frames, serialised now (services
        as tokens, large frozen values by content: the ones not yet stored for this flow are
        carried in the result), for the hospital, hibernation or inspection; None on a node
        without storage or when the flow is not suspended (never ran, runs or ended).

        Nothing is written: the caller stores the result with ``CheckpointStore.write_locals``
        in a unit of the group commit, where it replaces the flow's previous ``locals`` record
        (docs/checkpoint-format.md, "Frame snapshots"). Call it on the node thread, outside the
        flow's greenlet; it does not change the flow."""
        if not self.node.durable or self.finished:
            return None
        stack = suspendable_on_stack(self._switch.suspended_frame)
        if not stack.suspendable:
            return None
        return self._capture(stack, self.waiting)

    def _capture(self, stack: FlowStack, wait: object) -> CapturedLocals:
        values: SnapshotValues = []
        snapshot = self.node.checkpoints.snapshot(
            stack, describe_wait(wait), self.snapshot_cache, values, self.stored_values)
        return CapturedLocals(self.run_id, self.journal.length, snapshot, tuple(values))

    def _capture_parking(self) -> CapturedLocals | None:
        """From inside the greenlet, as the flow parks itself: its locals, from its live
        frames, or, when its code already raised out of them, from the exception being
        handled (whose traceback still holds them)."""
        try:
            stack = walk(2)
            if not stack.suspendable:
                handled = sys.exc_info()[1]
                if handled is None:
                    return None
                stack = suspendable_in_traceback(handled.__traceback__)
            return self._capture(stack, self.waiting) if stack.suspendable else None
        except Exception as exc:  # never keeps a flow from parking: its diagnosis matters more
            log.warning("could not capture the locals of flow %s as it parked: %s",
                        self.run_id, exc)
            return None

    def _run(self) -> None:
        flow = self.flow
        try:
            check_initiating_annotation(type(flow))
            # Without a tracker, call() straight from here: one frame less under a parked flow
            # (its frame object, made by the stack walk, lives as long as the flow is parked).
            result = flow.call() if flow.progress_tracker is None else _call_tracked(flow)
        except HospitalizeFlowException as exc:
            self._park(f"the flow asked to be hospitalised: {exc}")
        except GreenletExit:
            if not (self.abandoned or self.finished):
                raise
        except BaseException as exc:  # the flow's failure is its result, whatever it is
            if self.kill is None:
                self.journal.check_done(f"raised {type(exc).__qualname__}: {exc}")
            self._finish(failure=self.kill or exc)
        else:
            if self.kill is not None:  # it caught its kill and returned: it ends killed
                self._finish(failure=self.kill)
            else:
                self.journal.check_done("returned")
                self._finish(result=result)

    def end_killed(self) -> NoReturn:
        """End a killed flow that caught its KilledFlowException and went on (or a finished
        flow's ``finally:`` doing IO) at its request: it ends KILLED here, and its greenlet
        waits to be unwound (``end_greenlet``)."""
        if self.finished:  # unwinding after the end: a `finally:` doing IO
            raise GreenletExit
        assert self.kill is not None
        self._finish(failure=self.kill)
        self._switch.leave()
        raise AssertionError("unreachable")  # pragma: no cover

    def end_greenlet(self) -> None:
        """Unwind the greenlet of a flow that ended while suspended (a kill it caught), so
        that its frames are freed; IO in its ``finally:`` blocks raises GreenletExit."""
        if self.finished:
            self._switch.unwind()

    def _park(self, diagnosis: str) -> NoReturn:
        """Stop the flow for the hospital, from inside its greenlet: nothing it did in this step
        is kept and its counterparties are not told."""
        self.hospital_diagnosis = diagnosis
        if self.node.durable:
            self.parked_locals = self._capture_parking()
        self.abandoned = True
        self.status = FlowStatus.HOSPITALIZED
        self._switch.leave()
        raise AssertionError("unreachable")  # pragma: no cover

    def _diverged(self, where: str) -> NoReturn:
        """Park a restored flow that did not replay its records (``where`` says which record
        and what the code did). Nothing the flow produced since its restore leaves the node."""
        error = NondeterminismError(
            f"flow {self.run_id} ({type(self.flow).__qualname__}) did not replay its checkpoint "
            f"at {where}. The flow's code changed "
            "incompatibly since the checkpoint was written, or it depends on inputs the "
            "engine does not record (random numbers, wall-clock time, global state)."
        )
        self._park(f"NondeterminismError: {error}")

    def reach_checkpoint(self, wait: object) -> None:
        """The restored flow made its checkpoint's pending request and it was satisfied at
        once (a sleep past its deadline, an event that happened meanwhile): verify the place,
        then run on live."""
        expected = self.journal.take_expected()
        if expected is None:
            return
        self._verify_against(expected, self._take_snapshot(wait, False))
        self.snapshot = expected

    def _verify_against(self, expected: Snapshot, actual: Snapshot) -> None:
        misplaced = self.journal.misplaced(expected, actual)
        if misplaced is not None:
            self._park(f"NondeterminismError: flow {self.run_id} "
                       f"({type(self.flow).__qualname__}) {misplaced}")
        if expected.lines != actual.lines:
            log.info("flow %s resumed with moved lines: %s -> %s", self.run_id,
                     expected.lines, actual.lines)

    # ----- IO -----------------------------------------------------------------------------------

    def execute(self, request: _io.IORequest) -> Any:
        """Perform one IO request of this flow (``fibers._requests``) and return its result.
        While an abandoned flow unwinds (node stop, hibernation) every request raises
        GreenletExit."""
        if self.kill is not None or self.finished or self.abandoned:
            if self.abandoned:
                raise GreenletExit
            self.end_killed()
        kind = type(request)
        if kind not in _MADE_REQUEST:  # not in SUSPENDING_REQUESTS
            return perform(self, request)
        self._switch.check_inside(_MADE_REQUEST[kind])
        self._stack = self._walked = walk_again(self._walked)
        try:
            self._check_stack(kind.__name__.lower())
            return perform(self, request)
        finally:
            self._stack = None

    # FlowLogic.send of the flow bound by a FlowBinding: fibers._requests.send as a method.
    send = send

    def receive(self, binding: FlowBinding, party: Party, expected_type: type,
                deadline: datetime | None) -> Any:
        """``FlowLogic.receive`` of the flow bound by ``binding``: a request that may suspend
        (``fibers._requests.receive``), checked like those of ``SUSPENDING_REQUESTS``."""
        if self.kill is not None or self.finished:
            self.end_killed()
        if getcurrent() is not self._greenlet:  # (running in it implies it was resumed)
            self._switch.check_inside(_MADE_RECEIVE)  # which refuses, naming the cause
        self._stack = self._walked = walk_again(self._walked)
        try:
            if self._stack.unmarked:
                self._check_stack("receive")
            return receive(self, binding, party, expected_type, deadline)
        finally:
            self._stack = None

    def emit(self, recipient: Party, message: SessionMessage) -> None:
        """Queue ``message`` to leave when the step ends. A replayed message was stored in the
        outbox when it was first sent; it is re-sent from there, not produced again."""
        journal = self.journal
        if not (journal.restoring and journal.replaying):
            self.outbox.append((recipient, message))

    def live_flows(self) -> list[FlowLogic[Any]]:
        """The flow objects (the flow and its sub-flows) on the suspended greenlet's stack,
        innermost first; empty when it is not suspended."""
        return flows_on_stack(self._switch.suspended_frame)

    def take_parked_locals(self) -> CapturedLocals | None:
        """The locals captured as the flow parked itself, once (the hospital stores them)."""
        captured, self.parked_locals = self.parked_locals, None
        return captured

    def take_outbox(self) -> list[tuple[Party, SessionMessage]]:
        """The messages produced since the last call, in order."""
        outbox, self.outbox = self.outbox, []
        return outbox

    def _check_stack(self, request: str) -> None:
        """Refuse (or warn about) a suspension in ``request`` (its name) with unmarked user
        functions on the stack."""
        stack = self._stack
        assert stack is not None
        if not stack.unmarked:
            return
        message = unmarked_message(type(self.flow).__qualname__, request, stack)
        if self.node.strict_suspendable:
            raise SuspendableError(message)
        self.node.warn_once(stack.unmarked[0][0], message)

    # ----- sub-flows ----------------------------------------------------------------------------

    def run_sub_flow(self, parent: FlowLogic[Any], flow: FlowLogic[R]) -> R:
        """Run ``flow`` inline as a sub-flow of ``parent`` and return its result."""
        if not isinstance(flow, FlowLogic):
            raise TypeError(f"sub_flow needs a FlowLogic, got {type(flow).__qualname__}")
        if binding_of(flow) is not None:
            raise FlowConfigurationError(f"{type(flow).__qualname__} is already running")
        check_initiating_annotation(type(flow))
        index = self._next_flow_index
        self._next_flow_index += 1
        key = ("sub_flow", index, class_name(type(flow)))
        if self.journal.replayed(*key) is None:
            self.journal.record(key)
        initiating = initiating_class_of(type(flow)) is not None
        parent_binding = binding_of(parent)
        assert parent_binding is not None
        if initiating:
            bind(flow, FlowBinding(self, index, flow, index))
        else:
            bind(flow, FlowBinding(self, index, parent_binding.session_owner,
                                   parent_binding.owner_index))
        _attach_child_tracker(parent, flow)
        try:
            result = _call_tracked(flow)
        except BaseException as exc:
            if initiating:
                self.session_table.close(index, exc)
            raise
        if initiating:
            self.session_table.close(index, None)
        return result

    # ----- the end ------------------------------------------------------------------------------

    def _finish(self, *, result: object = None, failure: BaseException | None = None) -> None:
        if self.abandoned:
            return
        self._walked = None  # its frames (and their locals) are done with
        self.session_table.close(None, failure)
        self.finished = True
        self.failure = failure
        self.result_value = result
        if failure is None:
            self.status = FlowStatus.COMPLETED
        elif isinstance(failure, KilledFlowException):
            self.status = FlowStatus.KILLED
            log.info("flow %s (%s) was killed", self.run_id, type(self.flow).__qualname__)
        else:
            self.status = FlowStatus.FAILED
            if not isinstance(failure, FlowException):
                log.error("flow %s (%s) failed", self.run_id, type(self.flow).__qualname__,
                          exc_info=failure)

    @property
    def result(self) -> Future[Any]:
        """The future of the flow's result (made on first use, see ``FlowOutcome``)."""
        return self.outcome.future

    def current_wait(self) -> Wait:
        """What wakes the suspended flow besides messages: a deadline (a sleep, a receive with
        one) or an event, and whether it wakes when its node restarts, as the wake index
        keeps it."""
        waiting, eager = self.waiting, self.wake_on_restart
        kind = type(waiting)
        if kind is FlowSession:
            if self.wake_deadline is None:
                return _EAGER if eager else NO_WAIT
            return self.wake_deadline, None, eager
        if kind is datetime:
            return waiting, None, eager  # type: ignore[return-value]
        if isinstance(waiting, _io.WaitForEvent):
            return None, waiting.key, eager
        return _EAGER if eager else NO_WAIT

    def detach_result(self) -> FlowOutcome[Any]:
        """The flow's outcome, handed out of this flow (it hibernates: its woken successor
        settles it, through ``inherit_result``); this flow gets a fresh one."""
        outcome, self.outcome = self.outcome, FlowOutcome()
        return outcome

    def hand_over_result(self, successor: FlowStateMachine) -> None:
        """Give this (abandoned) flow's outcome to ``successor``: the same flow restored for a
        retry, so that handles taken before the retry see its result."""
        successor.inherit_result(self.outcome)

    def inherit_result(self, outcome: FlowOutcome[Any]) -> None:
        """Settle ``outcome`` (a predecessor's, see ``hand_over_result``) with this flow's
        result."""
        self.outcome = outcome

    def settle_result(self) -> None:
        """Settle the outcome (after the final step committed)."""
        self.outcome.settle(self.result_value, self.failure)

    def fail_result(self, error: BaseException) -> None:
        """Fail the outcome unless it is settled (a parked flow killed by the operator: it
        never ends by itself)."""
        self.outcome.settle(None, error)

    @property
    def started(self) -> bool:
        """Whether the flow's greenlet has begun running (it may have ended since)."""
        return self._switch.started

    def abandon(self) -> None:
        """Drop this flow without any further effect on the node (node stop, a step that could
        not be stored, a parked flow leaving the hospital), and end its greenlet so that its
        frames are freed: a suspended greenlet in a reference cycle is never collected."""
        self.abandoned = True
        self.outbox = []
        self._walked = None
        self._switch.unwind()  # unwinds the flow's frames; _run returns quietly
        self.outbox = []

    def __repr__(self) -> str:
        name = type(self.flow).__qualname__
        return f"<FlowStateMachine {self.run_id.short} {name} {self.status.name}>"


def _call_tracked(flow: FlowLogic[R]) -> R:
    """Run ``flow.call()``, moving its progress tracker (if any) to its first step, to DONE
    when it returns and to its error when it raises."""
    tracker = flow.progress_tracker
    if tracker is None:
        return flow.call()
    if tracker.current_step == ProgressTracker.UNSTARTED:
        tracker.current_step = ProgressTracker.STARTING
    try:
        result = flow.call()
    except GreenletExit:
        raise  # unwound because its node stopped: parked at its step, not failed
    except BaseException as exc:
        if not tracker.has_ended:
            tracker.end_with_error(exc)
        raise
    if not tracker.has_ended:
        tracker.current_step = ProgressTracker.DONE
    return result


def _attach_child_tracker(parent: FlowLogic[Any], child: FlowLogic[Any]) -> None:
    parent_tracker, child_tracker = parent.progress_tracker, child.progress_tracker
    if parent_tracker is None or child_tracker is None:
        return
    if parent_tracker.current_step == ProgressTracker.UNSTARTED:
        parent_tracker.current_step = ProgressTracker.STARTING
    parent_tracker.set_child_tracker(parent_tracker.current_step, child_tracker)

