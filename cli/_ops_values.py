"""The values ``NodeOps`` hands out: frozen, built from plain data, with nothing of the
node in them, so that they can cross a process boundary unchanged."""

from __future__ import annotations

import dataclasses
import reprlib
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cli._convert_flows import ParamSpec
from fibers import KilledFlowException, Party, ProgressTracker
from fibers.progress_view import describe_error
from ledger import SignedTransaction, StateAndRef

__all__ = [
    "FlowClassInfo",
    "FlowOutcome",
    "HospitalRow",
    "NodeSummary",
    "PartyRow",
    "ProgressSnapshot",
    "RunIdResult",
    "StateMachine",
    "StateMachineUpdate",
    "VaultChange",
    "VaultRow",
    "outcome_of",
    "progress_of",
    "vault_row",
]


@dataclass(frozen=True)
class RunIdResult:
    """A flow that was started: its run id and class (short name)."""

    run_id: str
    flow_class: str

    @property
    def short(self) -> str:
        """The first 8 hex digits of the run id."""
        return self.run_id[:8]


@dataclass(frozen=True)
class FlowClassInfo:
    """A flow that may be started, and its constructor's parameters."""

    name: str
    qualified_name: str
    signature: str
    params: tuple[ParamSpec, ...]


@dataclass(frozen=True)
class StateMachine:
    """An unfinished flow as operators see it."""

    run_id: str
    flow_class: str
    status: str
    progress_step: str | None
    waiting_for: str | None


@dataclass(frozen=True)
class FlowOutcome:
    """How a flow ended: ``status`` is COMPLETED (``result`` describes the value), FAILED or
    KILLED (``error`` is "Type: message"), HOSPITALIZED (``error`` is the diagnosis; it may
    come back), or ENDED (it ended unobserved: its result is unknown)."""

    run_id: str
    flow_class: str
    status: str
    result: str | None
    error: str | None


@dataclass(frozen=True)
class StateMachineUpdate:
    """A flow appeared, changed (status, step, wait) or left the running set."""

    kind: Literal["added", "changed", "removed"]
    machine: StateMachine
    outcome: FlowOutcome | None = None


@dataclass(frozen=True)
class ProgressSnapshot:
    """A flow's progress tree, flattened: ``(depth, label)`` entries and the position of the
    deepest current step (-1 before it started). ``error`` is the failure on the current path;
    ``outcome`` is set on the last snapshot, once the flow ended."""

    run_id: str
    flow_class: str
    steps: tuple[tuple[int, str], ...]
    index: int
    error: str | None = None
    outcome: FlowOutcome | None = None


@dataclass(frozen=True)
class HospitalRow:
    """A hospitalised flow and its diagnosis."""

    run_id: str
    flow_class: str
    diagnosis: str


@dataclass(frozen=True)
class VaultRow:
    """An unconsumed state: where it is (``txhash(index)``), its class, a one-line
    description, its notary and contract, whether a flow holds it soft-locked, and its fields
    as text."""

    ref: str
    state_type: str
    description: str
    notary: str
    contract: str
    locked: bool
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VaultChange:
    """What one recorded transaction consumed from and produced into the vault."""

    consumed: tuple[VaultRow, ...]
    produced: tuple[VaultRow, ...]


@dataclass(frozen=True)
class PartyRow:
    """A party on the network map."""

    name: str
    key: str
    notary: bool
    this_node: bool


@dataclass(frozen=True)
class NodeSummary:
    """Who a node is and what it holds (``vault``: state class -> count)."""

    name: str
    key: str
    notary: bool
    flows: int
    hospitalised: int
    draining: bool
    drained: bool
    vault: tuple[tuple[str, int], ...]


_reprs = reprlib.Repr()
_reprs.maxstring = _reprs.maxother = 120


def _text(value: object) -> str:
    if isinstance(value, Party):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value) if _has_own_str(value) else _reprs.repr(value)


def _has_own_str(value: object) -> bool:
    """Whether ``str(value)`` says more than its repr (dataclasses define only a repr)."""
    return getattr(type(value), "__str__", None) is not object.__str__


def vault_row(sar: StateAndRef[Any], locked: bool) -> VaultRow:
    """``sar`` as a :class:`VaultRow`."""
    data = sar.state.data
    fields = tuple((f.name, _text(getattr(data, f.name)))
                   for f in dataclasses.fields(data)) if dataclasses.is_dataclass(data) else ()
    if _has_own_str(data):
        description = str(data)
    else:
        description = ", ".join(f"{name}={value}" for name, value in fields) or repr(data)
    return VaultRow(str(sar.ref), type(data).__qualname__, description,
                    _text(sar.state.notary), str(sar.state.contract), locked, fields)


def outcome_of(run_id: str, flow_class: str, future: Future[Any]) -> FlowOutcome:
    """The outcome of a flow whose result ``future`` is done."""
    error = future.exception()
    if error is None:
        value = future.result()
        result = (f"SignedTransaction {value.id}" if isinstance(value, SignedTransaction)
                  else _reprs.repr(value))
        return FlowOutcome(run_id, flow_class, "COMPLETED", result, None)
    status = "KILLED" if isinstance(error, KilledFlowException) else "FAILED"
    return FlowOutcome(run_id, flow_class, status, None, describe_error(error))


def progress_of(
    run_id: str, flow_class: str, tracker: ProgressTracker, outcome: FlowOutcome | None = None
) -> ProgressSnapshot:
    """``tracker`` now, as a :class:`ProgressSnapshot`."""
    error: str | None = None
    node: ProgressTracker | None = tracker
    while node is not None:  # the deepest error on the current path is nearest the step shown
        if node.error is not None:
            error = describe_error(node.error)
        node = node.get_child_tracker(node.current_step)
    return ProgressSnapshot(run_id, flow_class, tuple(tracker.steps_tree),
                            tracker.steps_tree_index, error, outcome)
