"""Writing node services that flows use (public).

A service is a ``SerializeAsToken`` installed on a node's ``ServiceHub``
(``node.services.install(name, service)``, found again with ``node.services.get(Kind)``);
checkpoints hold it as a token. A layer that adds services declares them as typed attributes
of a ``ServiceHub`` subclass that nodes are built with (``Node(..., hub=LedgerServiceHub)``), and
its flows name it (``FlowLogic[R, LedgerServiceHub]``), so ``self.service_hub.vault`` is typed.

Mark with ``@journaled`` every method a flow may call whose answer or effect must not change
when the flow is replayed after a restart: its effect happens once, and a replay gets the
recorded result. That includes *reads* of state that changes (what a flow decides from them
must replay the same way).

A service that keeps state in the node's storage derives from ``NodeService``, whose writes
commit with the step of the flow that caused them; a service publishes feeds as ``Stream``s.
A service that keeps something for a flow in memory only, which the flow gets back as it
replays, calls ``wake_on_restart()`` from inside that flow: restore is lazy, and such a flow
is then replayed as soon as its node restarts instead of when something wakes it.
"""

from fibers._checkpoint import SerializeAsToken
from fibers._node_service import NodeService
from fibers._service_hub import ServiceHub
from fibers._services import journaled, wake_on_restart
from fibers._stream import Stream

__all__ = ["NodeService", "SerializeAsToken", "ServiceHub", "Stream", "journaled",
           "wake_on_restart"]
