"""In-memory round trips: a Fibers ping-pong flow pair vs an asyncio queue ping-pong.

Both sides run in this process, one after the other, on the same payloads, so the ratio between
them is what to read (absolute figures depend on the machine). Durability is off: this measures
the engine (greenlet switches, session routing, wire encoding) and the in-memory transport.

Run: ``python -m benchmarks.roundtrip [--round-trips N] [--flows N]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

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


@dataclass(frozen=True)
class Result:
    name: str
    round_trips: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.round_trips / self.seconds

    @property
    def micros(self) -> float:
        return self.seconds / self.round_trips * 1e6


def fibers_round_trips(round_trips: int, flows: int) -> Result:
    """``flows`` concurrent ping-pong pairs doing ``round_trips`` in total."""
    with MockNetwork(record_transcript=False, durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        per_flow = round_trips // flows
        start = time.perf_counter()
        handles = [alice.start_flow(PingMany(bob.party, per_flow)) for _ in range(flows)]
        network.run_network()
        elapsed = time.perf_counter() - start
        assert all(h.result.result(timeout=0) == sum(range(per_flow)) for h in handles)
    return Result(f"fibers ({flows} flow pairs)", per_flow * flows, elapsed)


def asyncio_round_trips(round_trips: int, flows: int) -> Result:
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
        per_flow = round_trips // flows
        pairs = [(asyncio.Queue[int](), asyncio.Queue[int]()) for _ in range(flows)]
        start = time.perf_counter()
        results = await asyncio.gather(
            *(ping(a, b, per_flow) for a, b in pairs), *(pong(a, b) for a, b in pairs)
        )
        elapsed = time.perf_counter() - start
        assert all(r == sum(range(per_flow)) for r in results[:flows])
        return elapsed

    per_flow = round_trips // flows
    return Result(f"asyncio queues ({flows} task pairs)", per_flow * flows, asyncio.run(main()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=1)
    args = parser.parse_args(argv)
    ours = fibers_round_trips(args.round_trips, args.flows)
    baseline = asyncio_round_trips(args.round_trips, args.flows)
    table = Table(title="In-memory round trips (durability off)")
    for column in ("implementation", "round trips/s", "µs per round trip", "vs asyncio"):
        table.add_column(column, justify="right")
    for result in (ours, baseline):
        table.add_row(result.name, f"{result.per_second:,.0f}", f"{result.micros:.1f}",
                      f"{result.micros / baseline.micros:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
