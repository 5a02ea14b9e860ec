"""In-memory round trips: a Fibers ping-pong flow pair vs an asyncio queue ping-pong and a
thread-per-flow queue ping-pong.

All three run in this process, one after the other, on the same payloads, so the ratio between
them is what to read (absolute figures depend on the machine). Durability is off: this measures
the engine (greenlet switches, session routing, wire encoding) and the in-memory transport.

Every flow (task, thread) pair does the same number of round trips, ``PER_FLOW``, at every
concurrency; a concurrency too low to reach the total runs its pairs in waves, one wave after
the other. So each figure includes the same share of starting and ending a pair, and figures at
different concurrencies compare.

Run: ``python -m benchmarks.roundtrip [--round-trips N] [--flows N] [--per-flow K]``, or as
part of ``fibers bench roundtrip``.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from benchmarks._report import Result as BenchResult
from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable
from fibers.testing import MockNetwork


@initiating_flow
class PingMany(FlowLogic[int]):
    def __init__(self, other: Party, round_trips: int) -> None:
        self.other, self.round_trips = other, round_trips

    @suspendable
    def call(self) -> int:
        total = 0
        for i in range(self.round_trips):
            total += self.send_and_receive(self.other, i, int).unwrap(int)
        self.send(self.other, -1)
        return total


@initiated_by(PingMany)
class PongMany(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while (n := self.receive(self.other, int).unwrap(int)) >= 0:
            self.send(self.other, n)


PER_FLOW = 100  # round trips per pair at every concurrency, full run
QUICK_PER_FLOW = 10


def waves_of(round_trips: int, flows: int, per_flow: int) -> int:
    """Waves of ``flows`` pairs of ``per_flow`` round trips each to do at least ``round_trips``."""
    return max(1, -(-round_trips // (flows * per_flow)))


@dataclass(frozen=True)
class Figure:
    name: str
    round_trips: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.round_trips / self.seconds

    @property
    def micros(self) -> float:
        return self.seconds / self.round_trips * 1e6


def fibers_round_trips(waves: int, flows: int, per_flow: int) -> Figure:
    """``waves`` times, ``flows`` concurrent ping-pong pairs of ``per_flow`` round trips."""
    with MockNetwork(record_transcript=False, durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        elapsed = 0.0
        for _ in range(waves):
            start = time.perf_counter()
            handles = [alice.start_flow(PingMany(bob.party, per_flow)) for _ in range(flows)]
            network.run_network()
            elapsed += time.perf_counter() - start
            assert all(h.result.result(timeout=0) == sum(range(per_flow)) for h in handles)
    return Figure(f"fibers ({flows} flow pairs)", waves * per_flow * flows, elapsed)


def asyncio_round_trips(waves: int, flows: int, per_flow: int) -> Figure:
    """The same shape with asyncio tasks and queues."""

    async def ping(out: asyncio.Queue[int], back: asyncio.Queue[int], n: int) -> int:
        total = 0
        for i in range(n):
            await out.put(i)
            total += await back.get()
        await out.put(-1)
        return total

    async def pong(inbox: asyncio.Queue[int], out: asyncio.Queue[int]) -> None:
        while (n := await inbox.get()) >= 0:
            await out.put(n)

    async def main() -> float:
        elapsed = 0.0
        for _ in range(waves):
            start = time.perf_counter()
            pairs = [(asyncio.Queue[int](), asyncio.Queue[int]()) for _ in range(flows)]
            results = await asyncio.gather(
                *(ping(a, b, per_flow) for a, b in pairs), *(pong(a, b) for a, b in pairs)
            )
            elapsed += time.perf_counter() - start
            assert all(r == sum(range(per_flow)) for r in results[:flows])
        return elapsed

    return Figure(f"asyncio queues ({flows} task pairs)", waves * per_flow * flows,
                  asyncio.run(main()))


def thread_round_trips(waves: int, flows: int, per_flow: int) -> Figure:
    """The same shape with one thread per flow and ``queue.Queue`` between each pair."""
    elapsed = 0.0
    for _ in range(waves):
        elapsed += _thread_wave(flows, per_flow)
    return Figure(f"threads + queues ({flows} thread pairs)", waves * per_flow * flows, elapsed)


def _thread_wave(flows: int, per_flow: int) -> float:
    totals: list[int] = []

    def ping(out: queue.Queue[int], back: queue.Queue[int]) -> None:
        total = 0
        for i in range(per_flow):
            out.put(i)
            total += back.get()
        out.put(-1)
        totals.append(total)  # list.append is atomic under the GIL

    def pong(inbox: queue.Queue[int], out: queue.Queue[int]) -> None:
        while (n := inbox.get()) >= 0:
            out.put(n)

    pairs = [(queue.Queue[int](), queue.Queue[int]()) for _ in range(flows)]
    threads = [threading.Thread(target=ping, args=pair) for pair in pairs]
    threads += [threading.Thread(target=pong, args=pair) for pair in pairs]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    assert totals == [sum(range(per_flow))] * flows
    return elapsed


def measure(round_trips: int, flows: int,
            per_flow: int = PER_FLOW) -> tuple[Figure, Figure, Figure]:
    """(fibers, asyncio, threads), each doing at least ``round_trips`` round trips in waves of
    ``flows`` concurrent pairs of ``per_flow`` round trips."""
    waves = waves_of(round_trips, flows, per_flow)
    return (fibers_round_trips(waves, flows, per_flow),
            asyncio_round_trips(waves, flows, per_flow),
            thread_round_trips(waves, flows, per_flow))


def scenario(*, quick: bool) -> list[BenchResult]:
    """``fibers bench roundtrip``: µs per round trip at 1 and 100 pairs, vs both baselines,
    ``PER_FLOW`` round trips per pair (``QUICK_PER_FLOW`` with ``quick``)."""
    per_flow = QUICK_PER_FLOW if quick else PER_FLOW
    results = []
    for flows in (1, 100):
        ours, asyncio_, threads = measure(1_000 if quick else 20_000, flows, per_flow)
        pairs = f"{flows} pair{'s' if flows > 1 else ''}, {per_flow} round trips each"
        results.append(BenchResult(
            id=f"roundtrip.vs_asyncio.{flows}", scenario="roundtrip", name=pairs,
            value=ours.micros, unit="µs", baseline=asyncio_.micros, baseline_name="asyncio",
            flows=flows))
        results.append(BenchResult(
            id=f"roundtrip.vs_threads.{flows}", scenario="roundtrip", name=pairs,
            value=ours.micros, unit="µs", baseline=threads.micros, baseline_name="threads",
            flows=flows))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=1)
    parser.add_argument("--per-flow", type=int, default=PER_FLOW)
    args = parser.parse_args(argv)
    figures = measure(args.round_trips, args.flows, args.per_flow)
    baseline = figures[1]
    table = Table(title="In-memory round trips (durability off)")
    for column in ("implementation", "round trips/s", "µs per round trip", "vs asyncio"):
        table.add_column(column, justify="right")
    for figure in figures:
        table.add_row(figure.name, f"{figure.per_second:,.0f}", f"{figure.micros:.1f}",
                      f"{figure.micros / baseline.micros:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
