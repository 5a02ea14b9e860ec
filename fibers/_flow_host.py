"""``FlowHost``: what a state machine needs from the node that runs it.

The node implements it; the flow side (``fibers._state_machine``, ``fibers._requests``,
``fibers._sessions``) depends on this interface only, never on the node's module, so that the
node may import the flow side without a cycle.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fibers._checkpoint_store import CheckpointStore
    from fibers._clock import Clock
    from fibers._locals import SnapshotLocals
    from fibers._node_types import NodeInfo
    from fibers._service_hub import ServiceHub
    from fibers._session import FlowSession
    from fibers._state_machine import FlowStateMachine


class FlowHost(Protocol):
    """The node as its state machines see it."""

    info: NodeInfo
    clock: Clock
    durable: bool  # whether steps are checkpointed (the node has storage)
    strict_suspendable: bool  # refuse (True) or warn about unmarked frames at a suspension
    snapshot_locals: SnapshotLocals  # when locals are serialised (fibers._locals)

    @property
    def services(self) -> ServiceHub:
        """The node's hub; its class may declare a layer's services (a flow's ``HubT_co``)."""

    @property
    def checkpoints(self) -> CheckpointStore:
        """Where snapshots are captured and encoded (durable nodes only)."""

    def new_session_id(self) -> int:
        """A fresh random session id."""

    def register_session(self, machine: FlowStateMachine, session: FlowSession) -> None:
        """Route the session's inbound messages to ``machine``."""

    def unregister_session(self, session: FlowSession) -> None:
        """Stop routing the (closed) session's inbound messages."""

    def schedule_wakeup(self, machine: FlowStateMachine, deadline: datetime) -> None:
        """Resume ``machine`` once the clock reaches ``deadline``."""

    def await_event(self, machine: FlowStateMachine, key: str) -> None:
        """Resume ``machine`` when ``key`` is signalled."""

    def checkpoints_dumps(self, value: object) -> bytes:
        """``value`` as checkpoint bytes (a journaled service call's result)."""

    def checkpoints_loads(self, data: bytes) -> object:
        """The value of ``checkpoints_dumps`` bytes."""

    def warn_once(self, code: types.CodeType, message: str) -> None:
        """Log ``message`` the first time ``code`` is found unmarked on a stack."""
