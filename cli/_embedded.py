"""An embedded network for the demo (and the shell): a notary and two banks in one process,
each node on its own LMDB storage under a run directory, over the in-memory transport, moved
by a scheduler loop instead of a test's manual pumping."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fibers._node import Node
from fibers._transport import InFlightMessage
from ledger.testing import MockNetwork

BankNames = ("SellerBank", "BuyerBank")


class NetworkWentQuiet(RuntimeError):
    """The loop ran out of messages and timers before its goal was reached."""


class EmbeddedNetwork:
    """A notary, a seller bank and a buyer bank, durable (fsync on) under ``base_dir``."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        # The notary validates: it checks the whole trade, not just that inputs are unspent.
        self.network = MockNetwork(base_dir, sync=True, record_transcript=False)
        self.notary_node = self.network.create_notary_node("Notary", validating=True)
        self.seller = self.network.create_node(BankNames[0])
        self.buyer = self.network.create_node(BankNames[1])
        self.down: set[str] = set()

    @property
    def nodes(self) -> list[Node]:
        """The running nodes."""
        return [n for n in self.network.nodes if n.party.name not in self.down]

    def node(self, name: str) -> Node:
        """The current node called ``name`` (restarts replace node objects)."""
        return self.network.node(name)

    def crash(self, name: str) -> None:
        """Stop the node called ``name`` as a crash would; its messages wait in the network."""
        self.network.stop_node(self.node(name))
        self.down.add(name)

    def restart(self, name: str) -> Node:
        """Start the node called ``name`` again from its storage; it restores its flows."""
        node = self.network.restart_node(self.node(name))
        self.down.discard(name)
        if name == self.seller.party.name:
            self.seller = node
        elif name == self.buyer.party.name:
            self.buyer = node
        return node

    def run(
        self,
        until: Callable[[], bool],
        *,
        on_tick: Callable[[], object] = lambda: None,
        before_delivery: Callable[[InFlightMessage], object] | None = None,
        pace: float = 0.0,
    ) -> int:
        """The scheduler loop: deliver messages one at a time (firing due timers, and moving
        the clock to the next deadline when only timers are left) until ``until()``; call
        ``on_tick`` after each delivery; wait ``pace`` seconds between deliveries so a person
        can follow. Returns how many messages were delivered."""
        delivered = 0
        while not until():
            pending = self.network.pending_messages()
            if not pending:
                if self._advance_to_next_deadline():
                    continue
                raise NetworkWentQuiet("no message or timer is left, and the goal is not reached")
            if before_delivery is not None:
                before_delivery(pending[0])
                if until():
                    break
            if self.network.deliver_next() is not None:
                delivered += 1
            on_tick()
            if pace:
                time.sleep(pace)
        return delivered

    def _advance_to_next_deadline(self) -> bool:
        deadlines = [d for n in self.nodes if (d := n.next_deadline()) is not None]
        if not deadlines:
            return False
        step = (min(deadlines) - self.network.clock.now()).total_seconds()
        self.network.advance_time(max(step, 0.0))
        return True

    def close(self) -> None:
        """Stop every node (their storage stays under ``base_dir``)."""
        for node in self.network.nodes:
            if node.party.name not in self.down:
                node.stop()
