"""Inspection: what operators see of a node's flows (docs/architecture.md, "The parts").

Read-only views over the scheduler (running flow state machines), the hospital (parked ones)
and storage (every checkpoint): ``summary`` (one line per flow), ``inspect`` (stack, sessions,
progress step, what it waits for) and ``dump`` (every stored checkpoint as JSON-ready dicts).
It owns no state.
"""

from __future__ import annotations

from typing import Any

from fibers._checkpoint_store import CheckpointStore
from fibers._flow_logic import StateMachineRunId
from fibers._hospital import Hospital
from fibers._identity import Party
from fibers._journal import describe_wait
from fibers._node_types import FlowSummary
from fibers._scheduler import Scheduler
from fibers._sessions import class_name
from fibers._state_machine import FlowStateMachine

__all__ = ["Inspection", "summary"]


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
                 hospital: Hospital) -> None:
        self._party = party
        self._checkpoints = checkpoints
        self._scheduler = scheduler
        self._hospital = hospital

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
            source, stack = store.describe_stored(machine.run_id, snapshot,
                                                  machine.journal_length)
        elif store is not None:
            captured = machine.capture_locals()
            if captured is not None:
                source = "live"
                stack = store.describe_frames(captured.snapshot, machine.live_flows(),
                                              machine.run_id, captured)
            elif snapshot is not None:
                stack = store.describe_frames(snapshot, run_id=machine.run_id)
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
            source, stack = self._checkpoints.describe_stored(
                stored.run_id, stored.snapshot, len(stored.journal))
            dumped.append(
                {
                    "run_id": str(stored.run_id),
                    "flow_class": stored.flow_class,
                    "status": stored.status,
                    "diagnosis": parked.diagnosis if parked else stored.diagnosis,
                    "journal_records": len(stored.journal),
                    "waiting_for": stored.snapshot.waiting if stored.snapshot else None,
                    "locals_from": source,
                    "stack": stack,
                }
            )
        return dumped
