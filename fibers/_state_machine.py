"""``FlowStateMachine``: one flow run in its own greenlet, and the switch protocol.

Who switches to whom:

* The node's scheduler runs in an ordinary greenlet (the node thread's main greenlet, or the
  test's). To run a flow it calls ``FlowStateMachine.resume()``, which records the scheduler's
  greenlet as the flow's *resumer* and switches into the flow's greenlet.
* The flow runs plain Python until it needs something that is not there yet (a message, a
  deadline). Its request then calls ``_suspend(wait)``, which records what it waits for and
  switches back to the resumer. The scheduler's ``resume()`` call returns: the step is over.
* When the awaited thing arrives, the scheduler calls ``resume()`` again; ``_suspend`` returns
  inside the flow and the request checks its condition again.
* When ``call()`` returns or raises, the greenlet ends and control returns to its parent, which
  ``resume()`` set to the resumer, so ``resume()`` returns for the last time.

Every IO request of a flow goes through ``execute`` (the one place where requests are performed),
so that the durability layer can journal each completed request and answer it again on replay.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import types
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet  # type: ignore[import-untyped]

from fibers import _io, _wire
from fibers._annotations import (
    check_initiating_annotation,
    flow_version_of,
    initiating_class_of,
    is_suspendable,
)
from fibers._checkpoint import SnapshotCache
from fibers._errors import (
    FlowConfigurationError,
    FlowException,
    HospitalizeFlowException,
    KilledFlowException,
    NondeterminismError,
    ReceiveTimeoutException,
    SuspendableError,
    UnexpectedFlowEndException,
)
from fibers._flow_logic import FlowInfo, FlowLogic, StateMachineRunId
from fibers._identity import Party
from fibers._journal import (
    JournalEntry,
    Snapshot,
    decode_error,
    describe_entry,
    describe_wait,
    digest,
    encode_error,
    replay_datetime,
    replay_flow_info,
    replay_int,
    replay_payload,
    replay_random,
    replay_seq,
)
from fibers._messages import (
    Data,
    End,
    ErrorEnd,
    ExistingSessionMessage,
    InitialSessionMessage,
    SessionBody,
    SessionMessage,
)
from fibers._replay import Replay
from fibers._session import FlowSession

if TYPE_CHECKING:
    from fibers._node import Node

R = TypeVar("R")
log = logging.getLogger("fibers.flow")

_FRAMEWORK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class FlowStatus(enum.Enum):
    """Where a flow run is in its life."""

    RUNNABLE = "RUNNABLE"
    SUSPENDED = "SUSPENDED"
    HOSPITALIZED = "HOSPITALIZED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    KILLED = "KILLED"


def current_fiber() -> FlowStateMachine | None:
    """The flow whose greenlet is running, or None outside flows."""
    fiber = getattr(getcurrent(), "fiber", None)
    return fiber if isinstance(fiber, FlowStateMachine) else None


def class_name(cls: type) -> str:
    """The name a flow class travels under: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def app_name_of(cls: type) -> str:
    """The app a flow class belongs to: its top-level package."""
    return cls.__module__.split(".", 1)[0]


class FlowStateMachine:
    """A running flow: its greenlet, its sessions, what it waits for and its pending output."""

    def __init__(self, node: Node, run_id: StateMachineRunId, flow: FlowLogic[Any]) -> None:
        self.node = node
        self.run_id = run_id
        self.flow = flow
        self.status = FlowStatus.RUNNABLE
        self._result: Future[Any] | None = None
        # Sessions by (index of the owning flow within this run, peer name).
        self.sessions: dict[tuple[int, str], FlowSession] = {}
        # What the suspended flow waits for: a FlowSession, a sleep deadline, or None.
        self.waiting: object = None
        self.scheduled = False
        # Messages produced in the current step; they leave the node when the step ends.
        self.outbox: list[tuple[Party, SessionMessage]] = []
        self.finished = False
        self.failure: BaseException | None = None
        self._next_flow_index = 1
        # Journal: inputs and outputs of completed IO requests (see fibers._journal). Entries
        # of the current step wait in new_journal until the step commits.
        self.journaling = node.durable
        self.journal_length = 0
        self.new_journal: list[JournalEntry] = []
        self.consumed: list[tuple[str, int, bool, int]] = []  # inbox keys consumed this step
        # Writes node services made on behalf of this flow in the current step (Node.step_write).
        self.extra_writes: list[Callable[[Any], object]] = []
        # A restored flow's way back to its checkpoint; None once it got there (or when live).
        self._replay: Replay | None = None
        # Set when the engine parks the flow (hospital) or drops it (node stop): its greenlet is
        # abandoned and must have no further effect on the node.
        self.abandoned = False
        self.hospital_diagnosis: str | None = None
        self.snapshot: Snapshot | None = None
        self.session_history: list[FlowSession] = []
        self.start_record: bytes | None = None
        self.needs_refeed = False
        # Exceptions this flow raised because a counterparty ended or failed: they end the flow
        # but are not propagated further (see _error_body_for).
        # None until the first (most flows never see one; 100,000 parked flows each save a list).
        self._received_errors: list[BaseException] | None = None
        # Set by the operator's kill: the flow ends KILLED at its next request, whatever it
        # does with the KilledFlowException thrown into it.
        self.kill: KilledFlowException | None = None
        # Pickled frozen values reused between this flow's snapshots (see capture_frames).
        self.snapshot_cache: SnapshotCache = {}
        self._resumer: greenlet | None = None
        self._greenlet = greenlet(self._run)
        self._greenlet.fiber = self  # lets a journaled service find the flow calling it
        flow._fiber, flow._flow_index = self, 0
        flow._session_owner = flow

    # ----- the switch protocol ------------------------------------------------------------------

    def resume(self, throw: BaseException | None = None) -> None:
        """Run the flow until it suspends or ends (scheduler side). ``throw`` raises an exception
        at the flow's suspension point instead of letting the request re-check its condition."""
        self._resumer = getcurrent()
        self._greenlet.parent = self._resumer
        self.status = FlowStatus.RUNNABLE
        if throw is None:
            self._greenlet.switch()
        else:
            self._greenlet.throw(throw)

    def _suspend(self, wait: object) -> None:
        """Give control back to the scheduler until it resumes this flow (flow side)."""
        resumer = self._resumer
        if resumer is None or getcurrent() is not self._greenlet:
            raise FlowConfigurationError(
                "a flow suspended outside its own greenlet; was IO attempted from a thread or "
                "callback instead of from the flow's call()?"
            )
        if self.abandoned:  # e.g. a `finally:` doing IO while an abandoned flow unwinds
            raise GreenletExit
        if self.kill is not None:
            self._end_killed()
        if self.replaying:
            self._diverged(f"the code now waits for {describe_wait(wait)}")
        self.waiting = wait
        self.status = FlowStatus.SUSPENDED
        if self.node.durable:
            # Locals are pickled only when this step will be written (it did IO); a flow woken
            # without progress, or a restored flow back at its checkpoint, keeps the snapshot
            # it has, after its call chain is checked.
            changed = bool(self.new_journal or self.outbox or self.start_record)
            expected = self._take_expected()
            if changed or expected is not None:
                current = self.node.checkpoints.snapshot(self, describe_wait(wait), changed)
                if expected is not None:
                    self._verify_against(expected, current)
                self.snapshot = current if changed else expected
        try:
            resumer.switch()
        finally:
            self.waiting = None

    def _run(self) -> None:
        flow = self.flow
        try:
            check_initiating_annotation(type(flow))
            result = self._call_tracked(flow)
        except HospitalizeFlowException as exc:
            self._park(f"the flow asked to be hospitalised: {exc}")
        except GreenletExit:
            if not (self.abandoned or self.finished):
                raise
        except BaseException as exc:  # the flow's failure is its result, whatever it is
            if self.kill is None:
                self._check_replay_done(f"raised {type(exc).__qualname__}: {exc}")
            self._finish(failure=self.kill or exc)
        else:
            if self.kill is not None:  # it caught its kill and returned: it ends killed
                self._finish(failure=self.kill)
            else:
                self._check_replay_done("returned")
                self._finish(result=result)

    def _end_killed(self) -> NoReturn:
        """End a killed flow that caught its KilledFlowException and went on: it ends KILLED
        here, and its greenlet waits to be unwound (``end_greenlet``). Does not return."""
        if self.finished:  # unwinding after the end: a `finally:` doing IO
            raise GreenletExit
        assert self.kill is not None
        self._finish(failure=self.kill)
        resumer = self._resumer
        assert resumer is not None
        resumer.switch()
        raise GreenletExit  # pragma: no cover - end_greenlet throws GreenletExit instead

    def end_greenlet(self) -> None:
        """Unwind the greenlet of a flow that ended while suspended (a kill it caught), so
        that its frames are freed; IO in its ``finally:`` blocks raises GreenletExit."""
        running = self._greenlet
        if self.finished and running and getcurrent() is not running:
            running.parent = getcurrent()
            running.throw(GreenletExit)

    def _park(self, diagnosis: str) -> None:
        """Stop the flow for the hospital, from inside its greenlet: nothing it did in this step
        is kept and its counterparties are not told. Does not return."""
        self.hospital_diagnosis = diagnosis
        self.abandoned = True
        self.status = FlowStatus.HOSPITALIZED
        resumer = self._resumer
        assert resumer is not None
        resumer.switch()
        raise AssertionError("a hospitalised flow was resumed")  # pragma: no cover

    def _diverged(self, what: str) -> NoReturn:
        """Park a restored flow whose code did ``what`` where its records say otherwise: the
        next journal record while replaying, else the checkpoint's pending request. Nothing
        the flow produced since its restore leaves the node. Does not return."""
        assert self._replay is not None
        error = NondeterminismError(
            f"flow {self.run_id} ({type(self.flow).__qualname__}) did not replay its checkpoint "
            f"at {self._replay.divergence(what, self.journal_length)}. The flow's code changed "
            "incompatibly since the checkpoint was written, or it depends on inputs the "
            "engine does not record (random numbers, wall-clock time, global state)."
        )
        self._park(f"NondeterminismError: {error}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_replay_done(self, outcome: str) -> None:
        """A restored flow may only end once it has replayed its whole journal and gone
        past the checkpoint's pending request."""
        if self._replay is not None and not self._replay.done:
            self._diverged(f"the code now {outcome}")

    def _check_live_request(self, key: tuple[Any, ...]) -> None:
        """A request the journal does not hold is refused until the restored flow has reached
        its checkpoint's pending request: a new request there would be new output."""
        if self._replay is not None and self._replay.expected is not None:
            self._diverged(f"the code now did {describe_entry(key)} first")

    def _take_expected(self) -> Snapshot | None:
        """The checkpoint a restored flow that used up its journal must now be at (None when
        there is none to check); the replay is over after this."""
        replay = self._replay
        if replay is None or replay.replaying:
            return None
        self._replay = None
        return replay.expected

    def _reach_checkpoint(self, wait: object) -> None:
        """The restored flow made its checkpoint's pending request and it was satisfied at
        once (a sleep past its deadline, an event that happened meanwhile): verify the place,
        then run on live."""
        expected = self._take_expected()
        if expected is None:
            return
        current = self.node.checkpoints.snapshot(self, describe_wait(wait), False)
        self._verify_against(expected, current)
        self.snapshot = expected

    def _verify_against(self, expected: Snapshot, actual: Snapshot) -> None:
        misplaced = Replay.misplaced(expected, actual, self.journal_length)
        if misplaced is not None:
            self._park(f"NondeterminismError: flow {self.run_id} "
                       f"({type(self.flow).__qualname__}) {misplaced}")
        if expected.lines != actual.lines:
            log.info("flow %s resumed with moved lines: %s -> %s", self.run_id,
                     expected.lines, actual.lines)

    # ----- the journal --------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        """Whether the flow is re-running requests answered from its journal."""
        return self._replay is not None and self._replay.replaying

    def start_replay(self, journal: list[JournalEntry], expected: Snapshot | None) -> None:
        """Answer the flow's next requests from ``journal`` (a restore), then verify that it
        suspends where ``expected`` says."""
        self._replay = Replay(journal, expected) if journal or expected is not None else None
        self.journal_length = len(journal)

    def _record(self, entry: JournalEntry) -> None:
        self._check_live_request(entry)
        if self.journaling:
            self.new_journal.append(entry)
            self.journal_length += 1

    def _replayed(self, *key: object) -> JournalEntry | None:
        """In replay: the next journal entry, checked to start with ``key``; None when live."""
        replay = self._replay
        entry = replay.peek() if replay is not None else None
        if entry is None:
            return None
        assert replay is not None
        if entry[: len(key)] != key:
            self._diverged(f"the code now did {describe_entry(key)}")
        replay.advance()
        return entry

    # ----- IO: the one place every request of a flow goes through ---------------------------------

    def execute(self, request: _io.IORequest) -> Any:
        """Perform one IO request of this flow and return its result."""
        if self.kill is not None or self.finished:
            self._end_killed()
        kind = type(request)
        if kind in _SUSPENDING_REQUESTS:
            self._check_stack(request)
        return _PERFORMERS[kind](self, request)

    def _send(self, request: _io.Send) -> None:
        payload = _wire.encode(request.payload)  # before touching the session: fail cleanly
        session = self.sessions.get(self._session_key(request.flow, request.party))
        if session is None:
            session = self._open_session(request.flow, request.party, first_payload=payload)
        else:
            self._post(session, Data(payload))
        if self.journaling:
            key = ("send", session.owner_index, session.peer.name, digest(payload))
            if self._replayed(*key) is None:
                self._record(key)

    def _receive(self, request: _io.Receive) -> object:
        session = self._session(request.flow, request.party)
        peer, owner = session.peer.name, session.owner_index
        self._replay_peer_end(owner, peer)
        entry = self._replayed("recv", owner, peer)
        if entry is not None:
            payload = replay_payload(entry)
            session.next_recv_seq = max(session.next_recv_seq, replay_seq(entry) + 1)
        else:
            deadline = request.deadline
            if deadline is not None and not session.inbound:
                self.node.schedule_wakeup(self, deadline)
            while not session.inbound:
                self._raise_if_peer_gone(session)
                if deadline is not None and self.node.clock.now() >= deadline:
                    self._time_out(session, deadline)
                self._suspend(session)
            seq, payload = session.inbound.pop(0)
            if self.journaling:
                self.consumed.append((*session.inbox_key(), seq))
                self._record(("recv", owner, peer, payload, seq))
        value = _wire.decode(payload)
        return _check_received_type(value, request.expected_type, session.peer)

    def _get_flow_info(self, request: _io.GetFlowInfo) -> FlowInfo:
        session = self._session(request.flow, request.party)
        peer, owner = session.peer.name, session.owner_index
        self._replay_peer_end(owner, peer)
        entry = self._replayed("info", owner, peer)
        if entry is not None:
            return replay_flow_info(entry)
        while session.peer_info is None:
            self._raise_if_peer_gone(session)
            self._suspend(session)
        info = session.peer_info
        self._record(("info", owner, peer, info.flow_version, info.app_name))
        return info

    def _replay_peer_end(self, owner: int, peer: str) -> None:
        """In replay, re-raise the counterparty's end where the journal recorded it."""
        entry = self._replay.peek() if self._replay is not None else None
        if entry is not None and entry[:3] == ("recv_end", owner, peer):
            entry = self._replayed("recv_end", owner, peer)
            assert entry is not None
            error = decode_error(entry[3])
            self._note_received(error)
            raise error

    def _now(self, request: _io.Now) -> datetime:
        entry = self._replayed("now")
        if entry is not None:
            return replay_datetime(entry)
        now = self.node.clock.now()
        self._record(("now", now))
        return now

    def _service_call(self, request: _io.ServiceCall) -> object:
        key = ("service", request.operation, request.arguments)
        entry = self._replayed(*key)
        if entry is not None:
            return self.node.checkpoints_loads(entry[3])
        self._check_live_request(key)  # before the effect, not only before its record
        result = request.perform()
        if self.journaling:
            self._record((*key, self.node.checkpoints_dumps(result)))
        return result

    def _random_bytes(self, request: _io.RandomBytes) -> bytes:
        entry = self._replayed("random", request.count)
        if entry is not None:
            return replay_random(entry)
        value = os.urandom(request.count)
        self._record(("random", request.count, value))
        return value

    def _wait_for_event(self, request: _io.WaitForEvent) -> object:
        replayed = self._replayed("event", request.key) is not None
        value = request.check()
        if value is not None and not replayed:
            self._reach_checkpoint(request)  # it happened while the node was down
        while value is None:
            if replayed:
                self._diverged(f"the event {request.key!r} it had seen is not there any more")
            self.node.await_event(self, request.key)
            self._suspend(request)
            value = request.check()
        if not replayed:
            self._record(("event", request.key))
        return value

    def _sleep(self, request: _io.Sleep) -> None:
        entry = self._replayed("sleep")
        if entry is not None:
            if self.replaying:  # a sleep the flow had finished before its checkpoint
                return
            deadline = replay_datetime(entry)
        else:
            deadline = self.node.clock.now() + timedelta(seconds=request.seconds)
            self._record(("sleep", deadline))
        if self.node.clock.now() >= deadline:
            self._reach_checkpoint(deadline)  # restored after its deadline: wake and go on
            return
        self.node.schedule_wakeup(self, deadline)
        while self.node.clock.now() < deadline:
            self._suspend(deadline)

    # ----- sessions -----------------------------------------------------------------------------

    @staticmethod
    def _session_key(flow: FlowLogic[Any], party: Party) -> tuple[int, str]:
        owner = flow._session_owner
        assert owner is not None
        return (owner._flow_index, party.name)

    def _session(self, flow: FlowLogic[Any], party: Party) -> FlowSession:
        session = self.sessions.get(self._session_key(flow, party))
        return session if session is not None else self._open_session(flow, party, None)

    def _open_session(
        self, flow: FlowLogic[Any], party: Party, first_payload: bytes | None
    ) -> FlowSession:
        if not isinstance(party, Party):
            raise TypeError(f"expected a Party to talk to, got {type(party).__qualname__}")
        owner = flow._session_owner
        assert owner is not None
        initiating = initiating_class_of(type(owner))
        if initiating is None:
            raise FlowConfigurationError(
                f"{type(owner).__qualname__} cannot open a session with {party}: only flows "
                "annotated @initiating_flow (or their sub-flows) may start a conversation"
            )
        entry = self._replayed("open", owner._flow_index, party.name)
        session_id = replay_int(entry) if entry is not None else self.node.new_session_id()
        if entry is None:
            self._record(("open", owner._flow_index, party.name, session_id))
        session = FlowSession(party, session_id, True, owner._flow_index)
        self.sessions[self._session_key(flow, party)] = session
        self.session_history.append(session)
        self.node.register_session(self, session)
        init = InitialSessionMessage(
            initiator_session_id=session.session_id,
            flow_class=class_name(initiating),
            flow_version=flow_version_of(initiating),
            app_name=app_name_of(initiating),
            first_payload=first_payload,
        )
        self._emit(party, init)
        return session

    def _post(self, session: FlowSession, body: SessionBody) -> None:
        message = ExistingSessionMessage(
            session.session_id, not session.we_initiated, session.take_seq(), body
        )
        self._emit(session.peer, message)

    def _emit(self, recipient: Party, message: SessionMessage) -> None:
        # A replayed message was stored in the outbox when it was first sent; it is re-sent
        # from there, not produced again.
        if not self.replaying:
            self.outbox.append((recipient, message))

    def _time_out(self, session: FlowSession, deadline: datetime) -> None:
        error = ReceiveTimeoutException(
            f"nothing received from {session.peer} by {deadline.isoformat()}: stopped waiting")
        # Recorded like the counterparty's end: a replay raises it at the same receive.
        self._record(("recv_end", session.owner_index, session.peer.name, encode_error(error)))
        raise error

    def _raise_if_peer_gone(self, session: FlowSession) -> None:
        error: BaseException | None = None
        if session.peer_error is not None:
            error, session.peer_error = session.peer_error, None
        elif session.rejected is not None:
            error = UnexpectedFlowEndException(session.rejected)
        elif session.peer_ended:
            error = UnexpectedFlowEndException(
                f"Counterparty flow on {session.peer} has completed without sending data. "
                "Mismatched send and receive?"
            )
        if error is not None:
            self._record(("recv_end", session.owner_index, session.peer.name,
                          encode_error(error)))
            self._note_received(error)
            raise error

    def _close_sessions(self, owner_index: int | None, failure: BaseException | None) -> None:
        """End our side of the sessions owned by ``owner_index`` (all sessions when None)."""
        error_body = self._error_body_for(failure) if failure is not None else None
        for key, session in list(self.sessions.items()):
            if owner_index is not None and session.owner_index != owner_index:
                continue
            del self.sessions[key]
            session.closed = True
            self.node.unregister_session(session)
            if not session.peer_ended and session.rejected is None:
                self._post(session, error_body if error_body is not None else End())

    def _note_received(self, error: BaseException) -> None:
        if self._received_errors is None:
            self._received_errors = []
        self._received_errors.append(error)

    def _error_body_for(self, failure: BaseException) -> ErrorEnd:
        """What the counterparties learn of ``failure``: only a FlowException this flow raised
        itself travels on; one it received from a counterparty and did not catch ends it, and
        its own counterparties see an unexplained end (UnexpectedFlowEndException)."""
        if any(failure is received for received in self._received_errors or ()):
            return ErrorEnd(None)
        return _error_body(failure)

    # ----- sub-flows and progress ---------------------------------------------------------------

    def run_sub_flow(self, parent: FlowLogic[Any], flow: FlowLogic[R]) -> R:
        """Run ``flow`` inline as a sub-flow of ``parent`` and return its result."""
        if not isinstance(flow, FlowLogic):
            raise TypeError(f"sub_flow needs a FlowLogic, got {type(flow).__qualname__}")
        if flow._fiber is not None:
            raise FlowConfigurationError(f"{type(flow).__qualname__} is already running")
        check_initiating_annotation(type(flow))
        flow._fiber, flow._flow_index = self, self._next_flow_index
        self._next_flow_index += 1
        key = ("sub_flow", flow._flow_index, class_name(type(flow)))
        if self._replayed(*key) is None:
            self._record(key)
        initiating = initiating_class_of(type(flow)) is not None
        flow._session_owner = flow if initiating else parent._session_owner
        _attach_child_tracker(parent, flow)
        try:
            result = self._call_tracked(flow)
        except BaseException as exc:
            if initiating:
                self._close_sessions(flow._flow_index, exc)
            raise
        if initiating:
            self._close_sessions(flow._flow_index, None)
        return result

    @staticmethod
    def _call_tracked(flow: FlowLogic[R]) -> R:
        tracker = flow.progress_tracker
        if tracker is None:
            return flow.call()
        from fibers._progress import ProgressTracker

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

    # ----- the end ------------------------------------------------------------------------------

    def _finish(self, *, result: object = None, failure: BaseException | None = None) -> None:
        if self.abandoned:
            return
        self._close_sessions(None, failure)
        self.finished = True
        self.failure = failure
        self._result_value = result
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
        """The future of the flow's result (made on first use: responders rarely need one,
        and a Future with its lock costs about 1 KB per parked flow)."""
        if self._result is None:
            self._result = Future()
        return self._result

    def hand_over_result(self, successor: FlowStateMachine) -> None:
        """Give this (abandoned) flow's result future, if anyone asked for it, to
        ``successor``: the same flow restored for a retry, so that handles taken before the
        retry see its result."""
        if self._result is not None:
            successor._result = self._result

    def settle_result(self) -> None:
        """Complete the result future (after the final step committed), if anyone asked for
        it: nobody can ask once the flow has ended."""
        if self._result is None:
            return
        if self.failure is None:
            self.result.set_result(self._result_value)
        else:
            self.result.set_exception(self.failure)

    @property
    def started(self) -> bool:
        """Whether the flow's greenlet has begun running (it may have ended since)."""
        return bool(self._greenlet) or self._greenlet.dead

    def abandon(self) -> None:
        """Drop this flow without any further effect on the node (node stop, a step that could
        not be stored, a parked flow leaving the hospital), and end its greenlet so that its
        frames are freed: a suspended greenlet in a reference cycle is never collected."""
        self.abandoned = True
        self.outbox = []
        running = self._greenlet
        if running and getcurrent() is not running:  # started, not dead, not ourselves
            running.parent = getcurrent()
            running.throw(GreenletExit)  # unwinds the flow's frames; _run returns quietly
            self.outbox = []

    def live_flows(self) -> list[FlowLogic[Any]]:
        """The flow objects (``self`` of its frames: the flow and its sub-flows) on the
        suspended greenlet's stack, innermost first; empty when it is not suspended."""
        frame = self._greenlet.gr_frame if self._greenlet else None
        found: list[FlowLogic[Any]] = []
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, FlowLogic) and all(owner is not f for f in found):
                found.append(owner)
            frame = frame.f_back
        return found

    def take_outbox(self) -> list[tuple[Party, SessionMessage]]:
        """The messages produced since the last call, in order."""
        outbox, self.outbox = self.outbox, []
        return outbox

    # ----- @suspendable ---------------------------------------------------------------------------

    def _check_stack(self, request: _io.IORequest) -> None:
        """Refuse (or warn about) a suspension with unmarked user functions on the stack."""
        unmarked = self.unmarked_frames()
        if not unmarked:
            return
        lines = "\n".join(
            f"  - {c.co_qualname} ({c.co_filename}:{line})" for c, line in unmarked
        )
        what = type(request).__name__.lower()
        message = (
            f"{type(self.flow).__qualname__} suspended in {what}() with functions that are not "
            f"marked @suspendable on its stack:\n{lines}\nMark each of them with @suspendable "
            "(from fibers import suspendable): every function on a flow's stack when it waits "
            "must be marked so that its frame is checkpointed and restored."
        )
        if self.node.strict_suspendable:
            raise SuspendableError(message)
        self.node.warn_once(unmarked[0][0], message)

    def unmarked_frames(self) -> list[tuple[types.CodeType, int]]:
        """User frames on this flow's stack, innermost first, that are not @suspendable."""
        found: list[tuple[types.CodeType, int]] = []
        frame: types.FrameType | None = sys._getframe(1)
        allowed = _ALLOWED_ON_STACK
        while frame is not None and frame.f_code is not _RUN_CODE:
            code = frame.f_code
            ok = allowed.get(code)
            if ok is None:
                ok = allowed[code] = _may_be_on_stack(code)
            if not ok:
                found.append((code, frame.f_lineno))
            frame = frame.f_back
        return found

    def __repr__(self) -> str:
        name = type(self.flow).__qualname__
        return f"<FlowStateMachine {self.run_id.short} {name} {self.status.name}>"


RUN_CODE = _RUN_CODE = FlowStateMachine._run.__code__
_PERFORMERS: dict[type, Callable[[FlowStateMachine, Any], Any]] = {
    _io.Send: FlowStateMachine._send,
    _io.Receive: FlowStateMachine._receive,
    _io.GetFlowInfo: FlowStateMachine._get_flow_info,
    _io.Now: FlowStateMachine._now,
    _io.Sleep: FlowStateMachine._sleep,
    _io.ServiceCall: FlowStateMachine._service_call,
    _io.RandomBytes: FlowStateMachine._random_bytes,
    _io.WaitForEvent: FlowStateMachine._wait_for_event,
}
# Requests that may suspend the flow: the @suspendable check runs whether or not they actually
# wait, so the error does not depend on message timing.
_SUSPENDING_REQUESTS = frozenset({_io.Receive, _io.GetFlowInfo, _io.Sleep, _io.WaitForEvent})
# Comprehensions run in frames of their own on Python 3.11 but belong to the function that
# contains them, which is itself checked; replay re-runs them like any other code.
_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
# Verdicts of _may_be_on_stack by code object: the check runs at every potential suspension.
_ALLOWED_ON_STACK: dict[types.CodeType, bool] = {}


def _may_be_on_stack(code: types.CodeType) -> bool:
    return (
        code.co_filename.startswith(_FRAMEWORK_DIR)
        or is_suspendable(code)
        or code.co_name in _COMPREHENSIONS
    )


def _check_received_type(value: object, expected: type, peer: Party) -> object:
    origin: Any = getattr(expected, "__origin__", None) or expected
    if isinstance(value, origin):
        return value
    raise UnexpectedFlowEndException(
        f"Expected to receive {_type_name(expected)} from {peer} but got "
        f"{type(value).__qualname__}: {_short_repr(value)}"
    )


def _type_name(expected: type) -> str:
    return getattr(expected, "__qualname__", None) or repr(expected)


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_body(failure: BaseException) -> ErrorEnd:
    """What counterparties learn of a failure: a FlowException itself, anything else nothing."""
    if not isinstance(failure, FlowException):
        return ErrorEnd(None)
    try:
        return ErrorEnd(_wire.encode(failure))
    except _wire.SerializationError:
        # Extra fields that cannot cross the wire: keep the type's name and the message.
        fallback = FlowException(f"{type(failure).__qualname__}: {failure}")
        return ErrorEnd(_wire.encode(fallback))


def _attach_child_tracker(parent: FlowLogic[Any], child: FlowLogic[Any]) -> None:
    parent_tracker, child_tracker = parent.progress_tracker, child.progress_tracker
    if parent_tracker is None or child_tracker is None:
        return
    from fibers._progress import ProgressTracker

    if parent_tracker.current_step == ProgressTracker.UNSTARTED:
        parent_tracker.current_step = ProgressTracker.STARTING
    parent_tracker.set_child_tracker(parent_tracker.current_step, child_tracker)


SessionFactory = Callable[[Party], FlowLogic[Any]]
