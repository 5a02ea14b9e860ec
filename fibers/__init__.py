"""Fibers: multi-party business protocols ("flows") written as plain sequential Python.

Flows run in greenlets, talk to counterparties through sessions, and are checkpointed at every
suspension. See docs/architecture.md for the model; the names below are the stable public API.
A node is built from ``Node`` over a ``fibers.transport.Transport`` and run by a
``fibers.runtime.NodeRuntime``; ``fibers.storage`` holds its checkpoints.
"""

from fibers._annotations import (
    initiated_by,
    initiating_flow,
    is_startable_by_rpc,
    schedulable_flow,
    startable_by_rpc,
    suspendable,
)
from fibers._checkpoint import SerializeAsToken
from fibers._errors import (
    FlowConfigurationError,
    FlowException,
    HospitalizeFlowException,
    KilledFlowException,
    NondeterminismError,
    ReceiveTimeoutException,
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
from fibers._identity import NodeIdentity, Party
from fibers._node import Node
from fibers._node_types import NetworkMap, NodeInfo
from fibers._progress import ProgressTracker, Step
from fibers._wire import serializable

__all__ = [
    "FlowConfigurationError",
    "FlowException",
    "FlowHandle",
    "FlowInfo",
    "FlowLogic",
    "FlowProgressHandle",
    "HospitalizeFlowException",
    "KilledFlowException",
    "NetworkMap",
    "Node",
    "NodeIdentity",
    "NodeInfo",
    "NondeterminismError",
    "Party",
    "ProgressTracker",
    "ReceiveTimeoutException",
    "SerializationError",
    "SerializeAsToken",
    "StateMachineRunId",
    "Step",
    "SuspendableError",
    "UnexpectedFlowEndException",
    "UntrustworthyData",
    "initiated_by",
    "initiating_flow",
    "is_startable_by_rpc",
    "schedulable_flow",
    "serializable",
    "startable_by_rpc",
    "suspendable",
]
