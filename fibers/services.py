"""Writing node services that flows use (public).

A service is a ``SerializeAsToken`` installed on a node (``node.services.install(name,
service)``); checkpoints hold it as a token. Mark with ``@journaled`` every method a flow may
call whose answer or effect must not change when the flow is replayed after a restart: its
effect happens once, and a replay gets the recorded result. That includes *reads* of state
that changes (what a flow decides from them must replay the same way).

A service that keeps state in the node's storage derives from ``NodeService``, whose writes
commit with the step of the flow that caused them; a service publishes feeds as ``Stream``s.
"""

from fibers._checkpoint import SerializeAsToken
from fibers._node_service import NodeService
from fibers._services import journaled
from fibers._stream import Stream

__all__ = ["NodeService", "SerializeAsToken", "Stream", "journaled"]
