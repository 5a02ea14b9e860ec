"""Latency of one durable round trip (p50, p99), beside a raw synced LMDB commit's.

Two durable nodes (``NodeStorage(sync=True)``: every group commit is fsynced) and one flow pair
doing many round trips one after the other. The initiator stamps the clock each time an answer
arrives; the gaps between stamps are round trips, each two durable suspensions (the initiator's
after it sends, the responder's after it answers) with their commits and acknowledgements. The
baseline times each of as many single-put synced LMDB commits on the same disk.

Run: ``python -m benchmarks.latency [--round-trips N]``, or as part of ``fibers bench latency``.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lmdb
from rich.console import Console
from rich.table import Table

from benchmarks._report import Result
from benchmarks.durable import _pump, _two_nodes
from fibers import FlowLogic, Party, initiated_by, initiating_flow, suspendable

# Clock stamps of the running TimedPing, one per answer. Module-level on purpose: the stamps are
# the benchmark's instrument, not flow state, so they stay out of the flow's checkpoints.
_STAMPS: list[float] = []


@initiating_flow
class TimedPing(FlowLogic[None]):
    """Sends 0, 1, 2, … and stamps the clock as each answer arrives."""

    def __init__(self, other: Party, round_trips: int) -> None:
        self.other, self.round_trips = other, round_trips

    @suspendable
    def call(self) -> None:
        _STAMPS.append(time.perf_counter())
        for i in range(self.round_trips):
            self.send_and_receive(self.other, i, int).unwrap(int)
            _STAMPS.append(time.perf_counter())
        self.send(self.other, -1)


@initiated_by(TimedPing)
class TimedPong(FlowLogic[None]):
    """Answers each number with itself until -1."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while (n := self.receive(self.other, int).unwrap(int)) >= 0:
            self.send(self.other, n)


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``samples``, interpolated."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[round(p) - 1]


def round_trip_seconds(base: Path, round_trips: int) -> list[float]:
    """The duration of each of ``round_trips`` sequential durable round trips."""
    alice, bob, network = _two_nodes(base, naive=False)
    _STAMPS.clear()
    try:
        # One more than asked: the first also starts the responder's flow, so it is dropped.
        alice.start_flow(TimedPing(bob.party, round_trips + 1))
        _pump(network)
        stamps = _STAMPS[1:]
    finally:
        alice.stop()
        bob.stop()
    assert len(stamps) == round_trips + 1, "the timed flow did not run to its end"
    return [later - earlier for earlier, later in itertools.pairwise(stamps)]


def commit_seconds(base: Path, count: int) -> list[float]:
    """The duration of each of ``count`` synced LMDB commits of one 200-byte put."""
    env = lmdb.open(str(base / "raw"), map_size=1 << 30, sync=True)
    value = b"x" * 200
    samples = []
    try:
        for i in range(count):
            start = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), value)
            samples.append(time.perf_counter() - start)
    finally:
        env.close()
    return samples


def measure(round_trips: int, *, rounds: int = 5) -> tuple[list[float], list[float]]:
    """(round trip seconds, raw commit seconds), ``round_trips`` of each, taken in ``rounds``
    alternating batches so that a slow spell of a shared disk falls on both."""
    base = Path(tempfile.mkdtemp(prefix="fibers-latency-"))
    trips: list[float] = []
    commits: list[float] = []
    try:
        for r in range(rounds):
            count = round_trips // rounds + (r < round_trips % rounds)
            trips += round_trip_seconds(base / f"nodes-{r}", count)
            (base / f"raw-{r}").mkdir()
            commits += commit_seconds(base / f"raw-{r}", count)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return trips, commits


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench latency``: p50 and p99 over 2,000 round trips (50 with ``quick``)."""
    trips, commits = measure(50 if quick else 2000, rounds=1 if quick else 5)
    return [
        Result(id=f"latency.round_trip_us.p{p}", scenario="latency",
               name=f"durable round trip, p{p}", value=percentile(trips, p) * 1e6, unit="µs",
               baseline=percentile(commits, p) * 1e6, baseline_name=f"raw commit p{p}")
        for p in (50, 99)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="latency of one durable round trip")
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args(argv)
    trips, commits = measure(args.round_trips)
    table = Table(title=f"Latency over {args.round_trips:,} sequential round trips (fsync on)")
    for column in ("measure", "p50 µs", "p99 µs", "max µs"):
        table.add_column(column, justify="right")
    for name, samples in (("durable round trip", trips), ("raw synced commit", commits)):
        table.add_row(name, *(f"{percentile(samples, p) * 1e6:,.0f}" for p in (50, 99)),
                      f"{max(samples) * 1e6:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
