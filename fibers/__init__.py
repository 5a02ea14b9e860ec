"""Fibers: multi-party business protocols ("flows") written as plain sequential Python.

Flows run in greenlets, talk to counterparties through sessions, and are checkpointed at every
suspension. See DESIGN.md for the model; the names below are the stable public API.
"""

from fibers._annotations import (
    initiated_by,
    initiating_flow,
    schedulable_flow,
    startable_by_rpc,
    suspendable,
)
from fibers._checkpoint import SerializeAsToken
from fibers._errors import (
    FlowException,
    HospitalizeFlowException,
    KilledFlowException,
    NondeterminismError,
    SerializationError,
    SuspendableError,
    UnexpectedFlowEndException,
)
from fibers._flow_logic import (
    FlowHandle,
    FlowInfo,
    FlowLogic,
    FlowProgressHandle,
    StateMachineRunId,
    UntrustworthyData,
)
from fibers._identity import Party
from fibers._progress import ProgressTracker, Step
from fibers._wire import serializable

__all__ = [
    "FlowException",
    "FlowHandle",
    "FlowInfo",
    "FlowLogic",
    "FlowProgressHandle",
    "HospitalizeFlowException",
    "KilledFlowException",
    "NondeterminismError",
    "Party",
    "ProgressTracker",
    "SerializationError",
    "SerializeAsToken",
    "StateMachineRunId",
    "Step",
    "SuspendableError",
    "UnexpectedFlowEndException",
    "UntrustworthyData",
    "initiated_by",
    "initiating_flow",
    "schedulable_flow",
    "serializable",
    "startable_by_rpc",
    "suspendable",
]
