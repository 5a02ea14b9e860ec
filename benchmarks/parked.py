"""Parked flows: memory per suspended flow, and time to restore them all after a restart.

One durable node starts N flows that each send to a counterparty that is not running and wait
for its answer, so every flow is parked at its first receive with a checkpoint on disk. Memory
is the growth of the process's resident set (after a GC) divided by N, with the in-flight
messages dropped from the in-memory network so that only the flows are counted. Restore is the
time, in a new process as after a restart, to build a new node on the same storage: load every
checkpoint, replay each flow to its suspension and verify it against its snapshot, and queue
the unacknowledged messages again.

Run: ``python -m benchmarks.parked [--flows N]``, or as part of ``fibers bench memory restore``
(one measurement serves both scenarios).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from rich.console import Console
from rich.table import Table

from benchmarks._report import Result
from benchmarks.roundtrip import PingMany
from fibers._identity import NodeIdentity
from fibers._node import NetworkMap, Node
from fibers._storage import NodeStorage
from fibers.transport import InMemoryNetwork

_BATCH = 10_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _identities(keys: tuple[bytes, bytes] | None) -> tuple[NodeIdentity, NodeIdentity]:
    if keys is None:
        return NodeIdentity("Alice"), NodeIdentity("Bob")
    return (NodeIdentity("Alice", Ed25519PrivateKey.from_private_bytes(keys[0])),
            NodeIdentity("Bob", Ed25519PrivateKey.from_private_bytes(keys[1])))


def _raw_key(identity: NodeIdentity) -> bytes:
    return identity.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def park(base: Path, flows: int) -> tuple[float, float, tuple[bytes, bytes]]:
    """Park ``flows`` flows on a node stored under ``base``: (bytes per parked flow, seconds it
    took, the private keys of Alice and Bob for ``restore``)."""
    network, network_map = InMemoryNetwork(), NetworkMap()
    alice_id, bob_id = _identities(None)
    network_map.add(bob_id.party)
    storage = NodeStorage.open(base / "Alice", sync=True)
    alice = Node(alice_id, network.endpoint(alice_id.party), network_map=network_map,
                 storage=storage)
    gc.collect()
    before = _rss_bytes()
    start = time.perf_counter()
    for first in range(0, flows, _BATCH):
        count = min(_BATCH, flows - first)
        alice.start_flows([PingMany(bob_id.party, 1) for _ in range(count)])
        network.queue.clear()  # Bob is down: his messages are not the flows' memory
    parked = time.perf_counter() - start
    gc.collect()
    per_flow = (_rss_bytes() - before) / flows
    assert len(alice.flows()) == flows
    alice.stop()
    return per_flow, parked, (_raw_key(alice_id), _raw_key(bob_id))


def restore(base: Path, flows: int, keys: tuple[bytes, bytes]) -> float:
    """Seconds for a new node on ``park``'s storage to restore its ``flows`` flows."""
    network, network_map = InMemoryNetwork(), NetworkMap()
    alice_id, bob_id = _identities(keys)
    network_map.add(bob_id.party)
    gc.collect()
    start = time.perf_counter()
    restored = Node(alice_id, network.endpoint(alice_id.party), network_map=network_map,
                    storage=NodeStorage.open(base / "Alice", sync=True))
    seconds = time.perf_counter() - start
    assert len(restored.flows()) == flows and restored.hospital() == []
    restored.stop()
    return seconds


def measure(base: Path, flows: int) -> tuple[float, float, float]:
    """(bytes per parked flow, seconds to park them all, seconds to restore them all).

    The restore runs in a new process, as after a restart: in this one, the heap still holds
    what parking grew (including the stopped node's flows, which ``Node.stop`` does not free).
    """
    per_flow, parked, keys = park(base, flows)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as restarted:
        seconds = restarted.submit(restore, base, flows, keys).result()
    return per_flow, parked, seconds


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench memory`` and ``restore``: 100,000 parked flows (1,000 with ``quick``)."""
    flows = 1_000 if quick else 100_000
    base = Path(tempfile.mkdtemp(prefix="fibers-parked-"))
    try:
        per_flow, parked, restore = measure(base, flows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    full = flows >= 100_000  # the restore target is for 100,000 flows
    return [
        Result(scenario="memory", name=f"RSS per flow, {flows:,} parked",
               value=per_flow / 1024, unit="KB", target="<= 4 KB", met=per_flow <= 4096),
        Result(scenario="restore", name=f"restore {flows:,} flows", value=restore, unit="s",
               target="<= 10 s at 100,000", met=restore <= 10 if full else None),
        Result(scenario="restore", name=f"start + park {flows:,} flows", value=parked,
               unit="s"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="memory per parked flow and restore time")
    parser.add_argument("--flows", type=int, default=100_000)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fibers-parked-"))
    try:
        per_flow, parked, restore = measure(base, args.flows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table = Table(title=f"{args.flows:,} parked durable flows")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("memory per parked flow", f"{per_flow / 1024:.1f} KB", "<= 4 KB")
    table.add_row("time to start and park them", f"{parked:.1f} s", "")
    table.add_row("time to restore them all", f"{restore:.1f} s", "<= 10 s")
    Console().print(table)


if __name__ == "__main__":
    main()
