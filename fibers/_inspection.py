"""Inspection: what operators see of a node's flows (docs/architecture.md, "The parts").

Read-only views over the scheduler (running flow state machines), the hospital (parked ones),
hibernation (hibernated ones) and storage (every checkpoint): ``summary`` (one line per
flow), ``inspect`` (stack, sessions, progress step, what it waits for) and ``dump`` (every
stored checkpoint as JSON-ready dicts). It owns no state. How a frame snapshot is shown
(``describe_frames``, ``describe_stored``) is here too: which locals a view shows, and how a
referenced value is read, is described in docs/checkpoint-format.md ("The snapshot policy",
"Content-addressed values").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fibers._checkpoint_store import FLOW_SUMMARY, CheckpointStore, flow_type_name
from fibers._flow_logic import FlowLogic, StateMachineRunId
from fibers._frame_snapshots import Unserialisable, decode_snapshots, describe_local, describe_value
from fibers._hibernation import Hibernation
from fibers._hospital import Hospital
from fibers._identity import Party
from fibers._journal import Snapshot, describe_wait
from fibers._locals import CapturedLocals
from fibers._node_types import FlowSummary
from fibers._scheduler import Scheduler
from fibers._sessions import class_name
from fibers._state_machine import FlowStateMachine

__all__ = ["HIBERNATED", "Inspection", "describe_flow", "describe_frames", "describe_stored",
           "summary"]

HIBERNATED = "HIBERNATED"
"""The status operators see for a hibernated flow (``flows()``, dumps)."""


def summary(machine: FlowStateMachine) -> FlowSummary:
    """One unfinished flow as operators see it."""
    tracker = machine.flow.progress_tracker
    step = tracker.current_step.label if tracker is not None else None
    return FlowSummary(
        machine.run_id,
        class_name(type(machine.flow)),
        machine.status.value,
        step,
        describe_wait(machine.waiting) if machine.waiting is not None else None,
    )


class Inspection:
    """Views of one node's flows."""

    def __init__(self, party: Party, checkpoints: CheckpointStore | None, scheduler: Scheduler,
                 hospital: Hospital, hibernation: Hibernation) -> None:
        self._party = party
        self._checkpoints = checkpoints
        self._scheduler = scheduler
        self._hospital = hospital
        self._hibernation = hibernation

    def hibernated(self) -> list[FlowSummary]:
        """One summary per hibernated flow (status ``HIBERNATED``; what it waits for is known
        once it is woken)."""
        hibernation = self._hibernation
        return [FlowSummary(run_id, hibernation.flow_class(run_id), HIBERNATED, None, None)
                for run_id in hibernation.run_ids()]

    def _live(self, run_id: StateMachineRunId) -> FlowStateMachine | None:
        return self._scheduler.get(run_id) or self._hospital.parked_machine(run_id)

    def inspect(self, run_id: StateMachineRunId) -> dict[str, Any]:
        """A flow's suspended stack (from its latest frame snapshot, locals as reprs), its
        sessions, progress step and what it waits for. KeyError when there is no such flow."""
        machine = self._live(run_id)
        if machine is not None:
            return self.describe(machine)
        for entry in self.dump():
            if entry["run_id"] == str(run_id):
                return entry
        raise KeyError(f"no flow {run_id} on {self._party}")

    def describe(self, machine: FlowStateMachine) -> dict[str, Any]:
        """A live flow as ``inspect`` shows it: a suspended flow with its live locals, captured
        now and not stored (inspection writes nothing); a parked one with the locals stored
        when it was parked (or its last step's)."""
        flow_summary = summary(machine)
        snapshot = machine.snapshot
        parked = self._hospital.entry(machine.run_id)
        store = self._checkpoints
        source: str | None = None
        stack: list[dict[str, Any]] = []
        if store is not None and parked:
            source, stack = describe_stored(store, machine.run_id, snapshot,
                                            machine.journal_length)
        elif store is not None:
            captured = machine.capture_locals()
            if captured is not None:
                source = "live"
                stack = describe_frames(store, machine.run_id, captured.snapshot,
                                        machine.live_flows(), captured)
            elif snapshot is not None:
                stack = describe_frames(store, machine.run_id, snapshot)
        return {
            "run_id": str(machine.run_id),
            "flow_class": flow_summary.flow_class,
            "status": "HOSPITALIZED" if parked else flow_summary.status,
            "diagnosis": parked.diagnosis if parked else None,
            "progress_step": flow_summary.progress_step,
            "waiting_for": snapshot.waiting if snapshot else flow_summary.waiting_for,
            "journal_records": machine.journal_length,
            "sessions": [
                {
                    "peer": str(s.peer),
                    "session_id": s.session_id,
                    "initiated_by_us": s.we_initiated,
                    "next_send_seq": s.next_send_seq,
                    "next_receive_seq": s.next_recv_seq,
                    "peer_ended": s.peer_ended,
                }
                for s in machine.sessions.values()
            ],
            "locals_from": source,
            "stack": stack,
        }

    def dump(self) -> list[dict[str, Any]]:
        """Every stored checkpoint as JSON-ready dicts (class, status, what it waits for,
        stack with locals, sessions, progress step); the live view without storage."""
        if self._checkpoints is None:
            return [self.describe(m) for m in self._scheduler.machines()]
        dumped = []
        for stored in self._checkpoints.load_flows():
            live = self._live(stored.run_id)
            if live is not None:
                dumped.append(self.describe(live))
                continue
            parked = self._hospital.entry(stored.run_id)
            source, stack = describe_stored(self._checkpoints, stored.run_id, stored.snapshot,
                                            len(stored.journal))
            hibernated = stored.run_id in self._hibernation and stored.flow is not None
            dumped.append(
                {
                    "run_id": str(stored.run_id),
                    "flow_class": stored.flow_class,
                    "status": HIBERNATED if hibernated else stored.status,
                    "diagnosis": parked.diagnosis if parked else stored.diagnosis,
                    "journal_records": len(stored.journal),
                    "waiting_for": stored.snapshot.waiting if stored.snapshot else None,
                    "locals_from": source,
                    "stack": stack,
                }
            )
        return dumped


# ----- how frame snapshots are shown -----------------------------------------------------------


def describe_frames(
    store: CheckpointStore, run_id: StateMachineRunId, snapshot: Snapshot,
    live_flows: list[FlowLogic[Any]] | None = None, captured: CapturedLocals | None = None,
) -> list[dict[str, Any]]:
    """The frames of ``snapshot`` with readable locals, for inspection and dumps (a snapshot
    without locals: each frame's function and line). A flow object in a frame is stored only
    as a summary; when the flow runs, its object among ``live_flows`` is shown with its
    fields' values instead. A referenced value is read from ``captured`` or else the flow's
    (``run_id``'s) ``values`` records; one that is missing or fails its check is shown as
    unreadable, naming its record."""
    if not snapshot.frames:
        return [{"function": name, "line": line, "locals": {}}
                for name, line in zip(snapshot.call_chain, snapshot.lines, strict=False)]
    frames = decode_snapshots(snapshot.frames)
    live = {flow_type_name(flow): flow for flow in reversed(live_flows or [])}

    def resolve(digest: bytes) -> bytes:
        carried = captured.value(digest) if captured is not None else None
        return carried if carried is not None else store.stored_value(run_id, digest)

    return [
        {
            "function": f.qualname,
            "module": f.module,
            "file": f.filename,
            "line": f.line,
            "code_fingerprint": f.code_fingerprint,
            "locals": {name: _describe(store, v, live, resolve) for name, v in f.locals.items()},
        }
        for f in frames
    ]


def describe_stored(store: CheckpointStore, run_id: StateMachineRunId,
                    snapshot: Snapshot | None, journal_length: int
                    ) -> tuple[str | None, list[dict[str, Any]]]:
    """Where the locals shown for a flow that is not running come from (``"captured"``: its
    ``locals`` record, taken at or after its last step; ``"step"``: its last step record,
    under ``every_step``; None: no locals), and its frames. An unreadable ``locals`` record is
    named in place of the source; the flow's other records are not affected."""
    try:
        captured = store.stored_locals(run_id)
    except Exception as exc:  # CorruptRecordError, ValueError: contained to this view
        frames = describe_frames(store, run_id, snapshot) if snapshot else []
        return f"<unreadable locals record of flow {run_id}: {type(exc).__name__}: {exc}>", frames
    if captured is not None and captured[0] >= journal_length:
        return "captured", describe_frames(store, run_id, captured[1])
    if snapshot is None:
        return None, []
    return ("step" if snapshot.frames else None), describe_frames(store, run_id, snapshot)


def describe_flow(flow: FlowLogic[Any]) -> str:
    """A flow object as ``flow inspect`` shows it: its class and its public fields' reprs
    (the progress tracker left out: the inspection shows the step)."""
    fields = ", ".join(
        f"{name}={describe_value(value)}" for name, value in vars(flow).items()
        if not name.startswith("_") and name != "progress_tracker")
    return f"{type(flow).__qualname__}({fields})"


def _describe(store: CheckpointStore, value: bytes | Unserialisable,
              live: dict[str, FlowLogic[Any]], resolve: Callable[[bytes], bytes]) -> str:
    if isinstance(value, Unserialisable) and value.repr.startswith(FLOW_SUMMARY):
        flow = live.get(value.type_name)
        return value.repr if flow is None else describe_flow(flow)
    return describe_local(value, store.tokens, resolve)
