"""Parked flows: memory per parked flow, and a restart of a node holding them all.

Park: one durable node, Alice, starts N flows that each send to Bob, who is down, and wait for
his answer, so every flow is parked at its first receive with its checkpoint on disk. Bob's
frames are not kept in memory (they are spooled to a file), so only the flows are counted.

Memory (``memory.*``), read from ``/proc`` after a GC, divided by N (``benchmarks._memory``):

* ``memory.live_bytes``: growth of the process's anonymous RSS per parked flow, i.e. what a
  live parked flow holds (its greenlet and stack, frames, objects, allocator overhead).
* ``memory.lmdb_page_cache_bytes``: the resident pages of LMDB's ``data.mdb`` mapping per flow:
  the database's page cache, file-backed and evictable, reported apart and not a flow's memory.
* ``memory.rss_bytes``: the growth of the whole RSS per flow, both of the above and the rest.
* ``memory.hibernated_bytes``: the anonymous RSS a hibernated flow keeps, measured the same
  way on a node told to hibernate every parked flow (``max_live_parked=0``), in a fresh
  process, after a first batch (so that the allocator's high-water mark of one batch of live
  flows is in the baseline, not spread over the flows).

Bob then answers every flow of the hibernated park (a separate, in-memory node; untimed), and
his answers are spooled to a file. Restart (``restore.*``), in a new process as after a crash,
on that storage (restore is lazy: every flow starts hibernated): ``restore.ready_s`` is the
time until a new node on Alice's storage is built and takes messages;
``restore.wake_all_s`` the time, from the same start, until Bob's answers are delivered and
every one of the N flows has finished (none in the hospital). ``restore.park_s`` is how long
parking them took, for scale.

Run: ``python -m benchmarks.parked [--flows N]``, or as part of ``fibers bench memory restore``
(one measurement serves both scenarios).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from rich.console import Console
from rich.table import Table

from benchmarks._memory import anonymous_rss_bytes, mapped_file_rss_bytes, total_rss_bytes
from benchmarks._report import Result
from benchmarks.roundtrip import PingMany
from fibers import Party
from fibers._identity import NodeIdentity
from fibers._node import NetworkMap, Node
from fibers._storage import NodeStorage
from fibers.runtime import ManualDriver, NodeRuntime
from fibers.transport import InMemoryNetwork, Transport

_BATCH = 10_000
_HIBERNATING_BATCH = 500  # live at once before they hibernate: bounds the heap's high water
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Parked:
    """What parking ``flows`` flows cost: bytes per flow, and the seconds it took."""

    flows: int
    anonymous_per_flow: float
    rss_per_flow: float
    lmdb_cache_per_flow: float
    seconds: float


@dataclass(frozen=True)
class Restart:
    """Seconds from the start of a restart until the node takes messages, and until every
    parked flow has finished."""

    ready: float
    wake_all: float


def _identities(keys: tuple[bytes, bytes] | None) -> tuple[NodeIdentity, NodeIdentity]:
    if keys is None:
        return NodeIdentity("Alice"), NodeIdentity("Bob")
    return (NodeIdentity("Alice", Ed25519PrivateKey.from_private_bytes(keys[0])),
            NodeIdentity("Bob", Ed25519PrivateKey.from_private_bytes(keys[1])))


def _raw_key(identity: NodeIdentity) -> bytes:
    return identity.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _spool(path: Path, network: InMemoryNetwork) -> int:
    """Append the queued frames to ``path`` and empty the queue; how many there were."""
    with path.open("ab") as out:
        for message in network.queue:
            out.write(_LENGTH.pack(len(message.frame)) + message.frame)
        count = len(network.queue)
    network.queue.clear()
    return count


def _frames(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        yield data[offset:offset + size]
        offset += size


def _lmdb_cache_bytes(base: Path) -> int:
    return sum(mapped_file_rss_bytes(path) for path in base.rglob("data.mdb"))


def park(base: Path, flows: int, alice_id: NodeIdentity, bob: Party) -> Parked:
    """Park ``flows`` flows on Alice, stored under ``base / "Alice"``; Bob's frames are spooled
    to ``base / "to-bob"``."""
    network, network_map = InMemoryNetwork(), NetworkMap()
    network_map.add(bob)
    # Never started: Alice only sends, and her frames wait in the network's queue.
    alice = Node(alice_id, network.endpoint(alice_id.party), network_map=network_map,
                 storage=NodeStorage.open(base / "Alice", sync=True))
    gc.collect()
    anonymous, rss = anonymous_rss_bytes(), total_rss_bytes()
    start = time.perf_counter()
    for first in range(0, flows, _BATCH):
        alice.start_flows([PingMany(bob, 1) for _ in range(min(_BATCH, flows - first))])
        _spool(base / "to-bob", network)  # Bob is down: his frames are not the flows' memory
    seconds = time.perf_counter() - start
    gc.collect()
    parked = Parked(flows=flows,
                    anonymous_per_flow=(anonymous_rss_bytes() - anonymous) / flows,
                    rss_per_flow=(total_rss_bytes() - rss) / flows,
                    lmdb_cache_per_flow=_lmdb_cache_bytes(base / "Alice") / flows,
                    seconds=seconds)
    assert len(alice.flows()) == flows
    alice.stop()
    return parked


def park_hibernated(base: Path, flows: int, keys: tuple[bytes, bytes]) -> Parked:
    """Like ``park`` on a node that hibernates every parked flow (``max_live_parked=0``), in
    a fresh process: anonymous RSS growth per flow after a first batch."""
    alice_id, bob_id = _identities(keys)
    network, network_map = InMemoryNetwork(), NetworkMap()
    network_map.add(bob_id.party)
    alice = Node(alice_id, network.endpoint(alice_id.party), network_map=network_map,
                 storage=NodeStorage.open(base / "Alice", sync=True), max_live_parked=0)
    batch = min(_HIBERNATING_BATCH, flows)
    start = time.perf_counter()
    alice.start_flows([PingMany(bob_id.party, 1) for _ in range(batch)])
    _spool(base / "to-bob", network)
    gc.collect()
    anonymous, rss = anonymous_rss_bytes(), total_rss_bytes()
    for first in range(batch, flows, batch):
        alice.start_flows([PingMany(bob_id.party, 1) for _ in range(min(batch, flows - first))])
        _spool(base / "to-bob", network)
    seconds = time.perf_counter() - start
    gc.collect()
    counted = max(flows - batch, 1)
    parked = Parked(flows=flows,
                    anonymous_per_flow=(anonymous_rss_bytes() - anonymous) / counted,
                    rss_per_flow=(total_rss_bytes() - rss) / counted,
                    lmdb_cache_per_flow=_lmdb_cache_bytes(base / "Alice") / flows,
                    seconds=seconds)
    if alice.hibernated_flow_count != flows:
        raise AssertionError(f"{alice.hibernated_flow_count} of {flows} flows hibernated")
    alice.stop()
    return parked


def answer(base: Path, alice: Party, bob_id: NodeIdentity) -> None:
    """Bob, up at last (in memory), answers every frame spooled to him; his answers to Alice
    are spooled to ``base / "to-alice"``."""
    network, network_map = InMemoryNetwork(), NetworkMap()
    network_map.add(alice)
    driver = ManualDriver(network)
    runtime = NodeRuntime(network.endpoint(bob_id.party),
                          lambda transport: Node(bob_id, transport, network_map=network_map))
    driver.add(runtime)
    runtime.start(threaded=False)
    from_alice = network.endpoint(alice)  # never started: it only sends Alice's spooled frames
    batch = 0
    for frame in _frames(base / "to-bob"):
        from_alice.send(bob_id.party, frame)
        batch += 1
        if batch == _BATCH:
            driver.deliver_all()  # Alice is not started: Bob's answers stay queued
            _spool(base / "to-alice", network)
            batch = 0
    driver.deliver_all()
    _spool(base / "to-alice", network)
    runtime.stop()


def restart(base: Path, flows: int, keys: tuple[bytes, bytes]) -> Restart:
    """A new node on Alice's storage, then Bob's answers delivered until every flow is done."""
    alice_id, bob_id = _identities(keys)
    answers = list(_frames(base / "to-alice"))
    network, network_map = InMemoryNetwork(), NetworkMap()
    network_map.add(bob_id.party)
    bob = network.endpoint(bob_id.party)
    bob.start(lambda sender, frames: None)  # Bob's side is done: drop what Alice says

    def build(transport: Transport) -> Node:
        return Node(alice_id, transport, network_map=network_map,
                    storage=NodeStorage.open(base / "Alice", sync=True))

    runtime = NodeRuntime(network.endpoint(alice_id.party), build)
    gc.collect()
    start = time.perf_counter()
    alice = runtime.start(threaded=False)
    ready = time.perf_counter() - start
    for frame in answers:
        bob.send(alice_id.party, frame)
    while network.deliver_all():
        runtime.run_until_quiet()
    wake_all = time.perf_counter() - start
    unfinished, hospital = len(alice.flows()), alice.hospital()
    runtime.stop()
    if unfinished or hospital:
        raise AssertionError(f"after the restart {unfinished} of {flows} flows did not finish "
                             f"and {len(hospital)} are in the hospital")
    return Restart(ready=ready, wake_all=wake_all)


def measure(base: Path, flows: int) -> tuple[Parked, Parked, Restart]:
    """Park ``flows`` live flows here; park as many hibernating ones in a new process, and
    restart those in another: in this one, the heap still holds what parking grew (a stopped
    node does not free its flows)."""
    alice_id, bob_id = _identities(None)
    (base / "live").mkdir()
    parked = park(base / "live", flows, alice_id, bob_id.party)
    keys = (_raw_key(alice_id), _raw_key(bob_id))
    context = multiprocessing.get_context("spawn")
    hibernating = base / "hibernating"
    hibernating.mkdir()
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as fresh:
        hibernated = fresh.submit(park_hibernated, hibernating, flows, keys).result()
    answer(hibernating, alice_id.party, bob_id)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as restarted:
        return parked, hibernated, restarted.submit(restart, hibernating, flows, keys).result()


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench memory`` and ``restore``: 100,000 parked flows (1,000 with ``quick``,
    under the same ids)."""
    flows = 1_000 if quick else 100_000
    base = Path(tempfile.mkdtemp(prefix="fibers-parked-"))
    try:
        parked, hibernated, restarted = measure(base, flows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    n = f"{flows:,} parked"
    return [
        Result(id="memory.live_bytes", scenario="memory",
               name=f"anonymous RSS per live parked flow, {n}",
               value=parked.anonymous_per_flow, unit="B", flows=flows),
        Result(id="memory.hibernated_bytes", scenario="memory",
               name=f"anonymous RSS per hibernated flow, {flows:,} hibernated",
               value=hibernated.anonymous_per_flow, unit="B", flows=flows),
        Result(id="memory.lmdb_page_cache_bytes", scenario="memory",
               name=f"LMDB data.mdb resident (page cache) per flow, {n}",
               value=parked.lmdb_cache_per_flow, unit="B", flows=flows),
        Result(id="memory.rss_bytes", scenario="memory",
               name=f"all RSS per parked flow, {n}", value=parked.rss_per_flow, unit="B",
               flows=flows),
        Result(id="restore.ready_s.100000", scenario="restore",
               name=f"lazy restart until it takes messages, {n}", value=restarted.ready,
               unit="s", flows=flows),
        Result(id="restore.wake_all_s.100000", scenario="restore",
               name=f"lazy restart until all woken and finished, {n}",
               value=restarted.wake_all, unit="s", flows=flows),
        Result(id="restore.park_s.100000", scenario="restore",
               name=f"start and park {flows:,} flows", value=parked.seconds, unit="s",
               flows=flows),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="memory per parked flow and restart time")
    parser.add_argument("--flows", type=int, default=100_000)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fibers-parked-"))
    try:
        parked, hibernated, restarted = measure(base, args.flows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table = Table(title=f"{args.flows:,} parked durable flows")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("anonymous RSS per parked flow", f"{parked.anonymous_per_flow:,.0f} B")
    table.add_row("anonymous RSS per hibernated flow",
                  f"{hibernated.anonymous_per_flow:,.0f} B")
    table.add_row("time to start and hibernate them", f"{hibernated.seconds:.2f} s")
    table.add_row("LMDB page cache per flow", f"{parked.lmdb_cache_per_flow:,.0f} B")
    table.add_row("all RSS per parked flow", f"{parked.rss_per_flow:,.0f} B")
    table.add_row("time to start and park them", f"{parked.seconds:.2f} s")
    table.add_row("restart: until it takes messages", f"{restarted.ready:.2f} s")
    table.add_row("restart: until all finished", f"{restarted.wake_all:.2f} s")
    Console().print(table)


if __name__ == "__main__":
    main()
