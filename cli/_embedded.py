"""An embedded network for the demo (and the shell): a notary and two banks in one process,
built from the public API as a deployment would build them: each node a ``fibers.Node`` with
the ledger's services (``ledger.install_ledger_services``), its own storage under a run
directory (fsync on) and an endpoint of an in-memory network as its transport, run by a
``fibers.runtime.NodeRuntime``. The runtimes are in manual mode on the calling thread, moved
one event at a time by a ``ManualDriver`` on the real clock, so that the demo's view and the
shell read the nodes between steps, on the thread that runs them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fibers import NetworkMap, Node, NodeIdentity, Party
from fibers.runtime import ManualDriver, NodeRuntime
from fibers.storage import NodeStorage
from fibers.transport import InFlightMessage, InMemoryNetwork, Transport
from ledger import LedgerServiceHub, install_ledger_services

BankNames = ("SellerBank", "BuyerBank")
NOTARY_NAME = "Notary"

_LONGEST_TIMER_WAIT = 60.0
"""Seconds ``run`` waits at most for a flow's timer (a sleep or a retry) when nothing else is
left; a longer wait means the goal is not coming."""


class NetworkWentQuiet(RuntimeError):
    """The loop ran out of messages and timers before its goal was reached."""


class EmbeddedNetwork:
    """A notary, a seller bank and a buyer bank, durable (fsync on) under ``base_dir``."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.network = InMemoryNetwork()
        self.driver = ManualDriver(self.network)
        self.network_map = NetworkMap()
        self._identities: dict[str, NodeIdentity] = {}
        self.down: set[str] = set()
        # The notary validates: it checks the whole trade, not just that inputs are unspent.
        self.notary_node = self._start(NodeIdentity(NOTARY_NAME))
        self.seller = self._start(NodeIdentity(BankNames[0]))
        self.buyer = self._start(NodeIdentity(BankNames[1]))

    def _start(self, identity: NodeIdentity) -> Node[LedgerServiceHub]:
        name = identity.party.name
        self._identities[name] = identity
        self.network_map.add(identity.party)
        setup = functools.partial(install_ledger_services, notary=name == NOTARY_NAME,
                                  validating=True)

        def build(transport: Transport) -> Node[LedgerServiceHub]:
            return Node(identity, transport, network_map=self.network_map, setup=setup,
                        hub=LedgerServiceHub,
                        storage=NodeStorage.open(self.base_dir / name, sync=True))

        runtime = NodeRuntime(self.network.endpoint(identity.party), build)
        self.driver.add(runtime)
        return runtime.start(threaded=False)

    @property
    def notary(self) -> Party:
        """The notary's party."""
        return self._identities[NOTARY_NAME].party

    def now(self) -> datetime:
        """The time on the nodes' clock: the system clock, a node's default."""
        return datetime.now(UTC)

    @property
    def nodes(self) -> list[Node[LedgerServiceHub]]:
        """The running nodes."""
        return [r.node for r in self.driver.runtimes if r.is_running]

    def node(self, name: str) -> Node[LedgerServiceHub]:
        """The current node called ``name`` (restarts replace node objects)."""
        return self.driver.runtime(name).node

    def crash(self, name: str) -> None:
        """Stop the node called ``name`` as a crash would; its messages wait in the network."""
        self.driver.runtime(name).stop()
        self.down.add(name)

    def restart(self, name: str) -> Node[LedgerServiceHub]:
        """Start the node called ``name`` again from its storage; it restores its flows."""
        if self.driver.runtime(name).is_running:
            self.crash(name)
        node = self._start(self._identities[name])
        self.down.discard(name)
        if name == NOTARY_NAME:
            self.notary_node = node
        elif name == BankNames[0]:
            self.seller = node
        elif name == BankNames[1]:
            self.buyer = node
        return node

    def step(self, *, max_wait: float = 1.0) -> bool:
        """Do the next event (a due timer or one message; when only timers are left, wait up to
        ``max_wait`` seconds for the earliest); False when nothing can move."""
        return self.driver.step(self.now, time.sleep, max_wait=max_wait)

    def run(
        self,
        until: Callable[[], bool],
        *,
        on_tick: Callable[[], object] = lambda: None,
        before_delivery: Callable[[InFlightMessage], object] | None = None,
        pace: float = 0.0,
    ) -> int:
        """Move the network one event at a time until ``until()``; call ``before_delivery``
        with the message about to be delivered, ``on_tick`` after each event; wait ``pace``
        seconds between events so a person can follow. Returns how many events it took."""
        events = 0
        while not until():
            pending = self.driver.pending()
            if pending and before_delivery is not None:
                before_delivery(pending[0])
                if until():
                    break
            if not self.step(max_wait=_LONGEST_TIMER_WAIT):
                raise NetworkWentQuiet("no message or timer is left, and the goal is not reached")
            events += 1
            on_tick()
            if pace:
                time.sleep(pace)
        return events

    def close(self) -> None:
        """Stop every node (their storage stays under ``base_dir``)."""
        for runtime in self.driver.runtimes:
            runtime.stop()
