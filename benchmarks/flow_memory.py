"""What one live parked flow keeps in memory, by where it was allocated: a measuring tool.

Parks ``flows`` durable ``PingMany`` flows the way ``benchmarks.parked`` does (Alice sends to
Bob, who is down, and waits), under ``tracemalloc``, and prints the bytes per flow still
allocated afterwards, grouped by source line, with the anonymous RSS growth per flow beside
it. tracemalloc sees Python's allocations only: the difference to the RSS is the greenlets'
saved C stacks, the interpreter's data-stack chunks and allocator overhead.

Run: ``python -m benchmarks.flow_memory [--flows N] [--top N]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import tracemalloc
from pathlib import Path

from benchmarks._memory import anonymous_rss_bytes
from benchmarks.parked import _spool
from benchmarks.roundtrip import PingMany
from fibers._identity import NodeIdentity
from fibers._node import NetworkMap, Node
from fibers._storage import NodeStorage
from fibers.transport import InMemoryNetwork


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="memory kept per live parked flow, by line")
    parser.add_argument("--flows", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--volatile", action="store_true", help="a node without storage")
    parser.add_argument("--no-trace", action="store_true", help="anonymous RSS only")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fibers-flow-memory-"))
    try:
        network, network_map = InMemoryNetwork(), NetworkMap()
        alice_id, bob = NodeIdentity("Alice"), NodeIdentity("Bob").party
        network_map.add(bob)
        storage = None if args.volatile else NodeStorage.open(base / "Alice", sync=False)
        alice = Node(alice_id, network.endpoint(alice_id.party), network_map=network_map,
                     storage=storage)
        alice.start_flows([PingMany(bob, 1) for _ in range(100)])  # warm every cache
        _spool(base / "to-bob", network)
        gc.collect()
        if not args.no_trace:
            tracemalloc.start(1)
        before = tracemalloc.take_snapshot() if not args.no_trace else None
        rss = anonymous_rss_bytes()
        alice.start_flows([PingMany(bob, 1) for _ in range(args.flows)])
        _spool(base / "to-bob", network)
        gc.collect()
        grown = (anonymous_rss_bytes() - rss) / args.flows
        print(f"anonymous RSS per parked flow: {grown:,.0f} B ({args.flows:,} flows)")
        if before is not None:
            after = tracemalloc.take_snapshot()
            stats = after.compare_to(before, "lineno")
            total = sum(s.size_diff for s in stats)
            print(f"tracemalloc per parked flow: {total / args.flows:,.0f} B")
            for stat in stats[:args.top]:
                frame = stat.traceback[0]
                print(f"{stat.size_diff / args.flows:8.1f} B {stat.count_diff / args.flows:6.2f}"
                      f" objs  {frame.filename.split('/')[-1]}:{frame.lineno}")
        alice.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
