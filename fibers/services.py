"""Writing node services that flows use (public).

A service is a ``SerializeAsToken`` installed on a node (``node.services.install(name,
service)``); checkpoints hold it as a token. Mark with ``@journaled`` every method a flow may
call whose answer or effect must not change when the flow is replayed after a restart: its
effect happens once, and a replay gets the recorded result. That includes *reads* of state
that changes (what a flow decides from them must replay the same way).
"""

from fibers._checkpoint import SerializeAsToken
from fibers._services import journaled

__all__ = ["SerializeAsToken", "journaled"]
