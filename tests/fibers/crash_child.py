"""The child process of ``test_crash_subprocess``: durable nodes on disk doing payments until
every payment finished, killed (SIGKILL) and restarted by the test at random moments.

Run as ``python -c "from tests.fibers.crash_child import main; main()" <dir> <payments>`` from
the repository root (not with ``-m``: the flows must keep their module name across restarts).
Writes one line per event to stdout: ``ready <payments left to start>``, ``progress <n>`` after
every start or delivery, and finally ``done <json>`` with every node's effect counts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from fibers import FlowLogic, Party, SerializeAsToken, initiated_by, initiating_flow, suspendable
from fibers import _dedup as dedup
from fibers._identity import NodeIdentity
from fibers._node import Node
from fibers._services import journaled
from fibers._storage import Txn
from fibers.testing import MockNetwork

NAMES = ("Alice", "Bob", "Charlie")
EFFECTS_DB = "effects"


class Effects(SerializeAsToken):
    """A durable count of each named effect, written with the step of the flow that caused it:
    a count above 1 is an effect done twice."""

    def __init__(self, node: Node) -> None:
        self.node = node
        assert node.storage is not None
        node.storage.db(EFFECTS_DB)

    @journaled
    def record(self, name: str) -> None:
        storage = self.node.storage
        assert storage is not None
        key = name.encode()

        def write(txn: Txn) -> None:
            count = int(storage.get(txn, EFFECTS_DB, key) or b"0") + 1
            storage.put(txn, EFFECTS_DB, key, str(count).encode())

        self.node.step_write(write)

    def counts(self) -> dict[str, int]:
        storage = self.node.storage
        assert storage is not None
        with storage.read() as txn:
            return {k.decode(): int(v) for k, v in storage.prefix_items(txn, EFFECTS_DB, b"")}


@initiating_flow
class Payment(FlowLogic[None]):
    def __init__(self, number: int, payee: Party) -> None:
        self.number, self.payee = number, payee

    @suspendable
    def call(self) -> None:
        effects = self.service_hub.get(Effects)
        effects.record(f"begin:{self.number}")
        receipt = self.send_and_receive(self.payee, self.number, int).unwrap(int)
        effects.record(f"finish:{self.number}" if receipt == 2 * self.number else "bad receipt")


@initiated_by(Payment)
class Payee(FlowLogic[None]):
    def __init__(self, payer: Party) -> None:
        self.payer = payer

    @suspendable
    def call(self) -> None:
        number = self.receive(self.payer, int).unwrap(int)
        self.service_hub.get(Effects).record(f"recv:{number}")
        self.send(self.payer, 2 * number)


class CrashNetwork(MockNetwork):
    def _node_setup(self, identity: NodeIdentity) -> Callable[[Node], object]:
        return lambda node: node.services.install("effects", Effects(node))


def _records(node: Node, db: str) -> int:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return sum(1 for _ in storage.prefix_items(txn, db, b""))


def main() -> None:
    base, payments = Path(sys.argv[1]), int(sys.argv[2])
    # Ended sessions lose their dedup record at once: a re-sent init must then be excluded by
    # the protocol itself (see fibers/_dedup.py), not by the window of recent sessions.
    dedup.RECENT_ENDED = 0  # type: ignore[misc]
    network = CrashNetwork(base, sync=True, record_transcript=False)
    nodes = [network.create_node(name) for name in NAMES]
    begun = {name for node in nodes for name in node.services.get(Effects).counts()}
    todo = [i for i in range(payments) if f"begin:{i}" not in begun]
    print("ready", len(todo), flush=True)
    events = 0
    while True:
        if todo and events % 2 == 0:
            number = todo.pop(0)
            payer, payee = nodes[number % 3], nodes[(number + 1) % 3]
            payer.start_flow(Payment(number, payee.party))
            delivered = 1
        else:
            delivered = network.run_network(max_messages=1)
        events += 1
        print("progress", events, flush=True)
        if not todo and not delivered:
            break
    report = {
        "effects": {n.party.name: n.services.get(Effects).counts() for n in nodes},
        "flows": sum(len(n.flows()) for n in nodes),
        "hospital": [e.diagnosis for n in nodes for e in n.hospital()],
        "dedup": {n.party.name: _records(n, "dedup") for n in nodes},
        "outbox": {n.party.name: _records(n, "outbox") for n in nodes},
    }
    print("done", json.dumps(report), flush=True)
    network.stop_nodes()
