"""Durable suspensions per second, side by side with a raw synced LMDB commit and a naive
checkpointer, measured in the same run (fsync on for all three).

* fibers: two nodes, N concurrent ping-pong flow pairs; every suspension is journaled,
  snapshotted and group-committed with fsync (``NodeStorage(sync=True)``).
* raw commit: one put of 200 bytes per synced LMDB commit, in a loop; the floor for "one
  durable suspension at a time".
* naive: the same flows on the same engine, checkpointing the way a simple framework would:
  dill of the whole flow state and one synced commit per suspension.
* every_step: Fibers again at the highest concurrency with ``snapshot_locals="every_step"``
  (the audit policy: locals pickled into every step record), beside the default policy.

Every flow pair does ``PER_FLOW`` round trips (two suspensions each) at every concurrency; a
concurrency too low to reach a round's count runs its pairs in waves, one after the other. So
each figure carries the same share of starting and finishing a flow, and the figures at 1, 100
and 1,000 flows compare.

Run: ``python -m benchmarks.durable [--flows 1 100 1000] [--round-trips N] [--rounds R]``, or
as part of ``fibers bench durable``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import dill
import lmdb
from rich.console import Console
from rich.table import Table

from benchmarks._report import Result
from benchmarks.roundtrip import PingMany, waves_of
from fibers._identity import NodeIdentity
from fibers._node import NetworkMap, Node
from fibers._state_machine import FlowStateMachine
from fibers._storage import NodeStorage
from fibers.runtime import ManualDriver, NodeRuntime
from fibers.storage import SnapshotLocals
from fibers.transport import InMemoryNetwork, Transport

PER_FLOW = 10  # round trips per flow pair, at every concurrency (quick runs too)


@dataclass(frozen=True)
class Figure:
    name: str
    suspensions: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.suspensions / self.seconds


class NaiveCheckpointNode(Node):
    """Checkpoints each step as dill of the flow and its sessions, one synced commit each."""

    env: lmdb.Environment

    def _run_step(self, machine: FlowStateMachine, throw: BaseException | None = None) -> None:
        super()._run_step(machine, throw)
        state = dill.dumps((machine.flow, list(machine.sessions.values())))
        with self.env.begin(write=True) as txn:
            txn.put(machine.run_id.uuid.bytes, state)


def _pump(driver: ManualDriver) -> None:
    while driver.deliver_all():
        pass


def _two_nodes(base: Path, naive: bool,
               snapshot_locals: SnapshotLocals = "on_demand") -> tuple[Node, Node, ManualDriver]:
    network, network_map = InMemoryNetwork(), NetworkMap()
    driver = ManualDriver(network)
    nodes = []
    for name in ("Alice", "Bob"):
        identity = NodeIdentity(name)
        network_map.add(identity.party)

        def build(transport: Transport, identity: NodeIdentity = identity) -> Node:
            if naive:
                node: Node = NaiveCheckpointNode(identity, transport, network_map=network_map)
                path = base / f"naive-{identity.party.name}"
                path.mkdir(parents=True, exist_ok=True)
                node.env = lmdb.open(str(path), map_size=1 << 32, sync=True)  # type: ignore[attr-defined]
                return node
            storage = NodeStorage.open(base / identity.party.name, sync=True)
            return Node(identity, transport, network_map=network_map, storage=storage,
                        snapshot_locals=snapshot_locals)

        runtime = NodeRuntime(network.endpoint(identity.party), build)
        driver.add(runtime)
        nodes.append(runtime.start(threaded=False))
    return nodes[0], nodes[1], driver


def fibers_suspensions(base: Path, flows: int, round_trips: int, naive: bool,
                       per_flow: int = PER_FLOW, *,
                       snapshot_locals: SnapshotLocals = "on_demand") -> Figure:
    """At least ``round_trips`` round trips, in waves of ``flows`` concurrent flow pairs of
    ``per_flow`` round trips each, on two durable nodes (or naive ones) with the snapshot
    policy ``snapshot_locals``."""
    alice, bob, driver = _two_nodes(base, naive, snapshot_locals)
    waves = waves_of(round_trips, flows, per_flow)
    elapsed = 0.0
    for _ in range(waves):
        start = time.perf_counter()
        handles = alice.start_flows([PingMany(bob.party, per_flow) for _ in range(flows)])
        _pump(driver)
        elapsed += time.perf_counter() - start
        assert all(h.result.result(timeout=0) == sum(range(per_flow)) for h in handles)
    for runtime in driver.runtimes:
        runtime.stop()
    # Each round trip suspends the initiator once (at its receive) and the responder once.
    name = ("naive dill + commit per suspension" if naive
            else f"fibers (journal + group commit, locals {snapshot_locals})")
    return Figure(f"{name}, {flows} flows", 2 * per_flow * flows * waves, elapsed)


def raw_commits(base: Path, count: int) -> Figure:
    env = lmdb.open(str(base / "raw"), map_size=1 << 30, sync=True)
    value = b"x" * 200
    start = time.perf_counter()
    for i in range(count):
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), value)
    elapsed = time.perf_counter() - start
    env.close()
    return Figure("raw synced LMDB commit (200 B)", count, elapsed)


def _median(figures: list[Figure]) -> Figure:
    """All the rounds' suspensions at the median round's rate."""
    rate = statistics.median(f.per_second for f in figures)
    suspensions = sum(f.suspensions for f in figures)
    return Figure(figures[0].name, suspensions, suspensions / rate)


def measure(base: Path, flows: list[int], round_trips: int, *, rounds: int = 3
            ) -> tuple[Figure, Figure, dict[int, tuple[Figure, Figure]], Figure]:
    """(raw commit, one suspension, {concurrency: (Fibers, naive)}, Fibers at the highest
    concurrency with ``snapshot_locals="every_step"``).

    One suspension is one flow pair doing a round's round trips in a row, so that its figure is
    the cost of a suspension and not of starting and ending a flow. The raw commit, one
    suspension and Fibers at each concurrency are each at its median over ``rounds``
    interleaved rounds (a slow spell of a shared disk or CPU then costs every workload a round,
    not one workload its figure; the every_step run follows the default one at the highest
    concurrency in each round, so the two policies compare side by side), and the naive
    checkpointer, in the middle round only. Each
    round does at least ``round_trips / rounds`` round trips per concurrency, ``PER_FLOW`` per
    flow pair (in waves where the concurrency is low), and ``round_trips / rounds`` raw
    commits."""
    raws: list[Figure] = []
    steady: list[Figure] = []
    runs: dict[int, tuple[list[Figure], list[Figure]]] = {n: ([], []) for n in flows}
    audit: list[Figure] = []
    trips = max(1, round_trips // rounds)
    for r in range(rounds):
        (base / f"round-{r}").mkdir(parents=True)
        raws.append(raw_commits(base / f"round-{r}", max(1, trips)))
        steady.append(fibers_suspensions(base / f"round-{r}" / "one", 1, trips, naive=False,
                                         per_flow=trips))
        for n, (ours, naive) in runs.items():
            ours.append(fibers_suspensions(base / f"round-{r}" / f"f{n}", n, trips, naive=False))
            if n == max(flows):
                audit.append(fibers_suspensions(base / f"round-{r}" / f"a{n}", n, trips,
                                                naive=False, snapshot_locals="every_step"))
            if r == rounds // 2:
                # Once, amid Fibers' rounds: one synced commit per suspension makes it the
                # slowest part of a run (20,000 commits at 1,000 flows), and its rate is that
                # of the disk's fsync at every concurrency.
                naive.append(fibers_suspensions(base / f"round-{r}" / f"n{n}", n, trips,
                                                naive=True))
    one = replace(_median(steady), name="fibers, one flow pair, its round trips in a row")
    return _median(raws), one, {n: (_median(ours), _median(naive))
                                for n, (ours, naive) in runs.items()}, _median(audit)


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench durable``: one suspension vs a raw synced commit, and suspensions/s at
    1, 100 and 1,000 flows (1, 3, 10 with ``quick``, under the same ids) vs the naive
    checkpointer, ``PER_FLOW`` round trips per flow at each."""
    full = (1, 100, 1000)
    flows = dict(zip(full, (1, 3, 10) if quick else full, strict=True))  # id -> ran
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-"))
    try:
        raw, one, rows, audit = measure(base, list(flows.values()), 30 if quick else 3000,
                                        rounds=1 if quick else 3)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = [Result(
        id="durable.one_suspension_vs_raw_commit", scenario="durable",
        name=f"one suspension: 1 flow pair, {one.suspensions // 2:,} round trips in a row",
        value=1e6 / one.per_second, unit="µs", baseline=1e6 / raw.per_second,
        baseline_name="raw synced commit", flows=1)]
    for n, ran in flows.items():
        ours, naive = rows[ran]
        results.append(Result(
            id=f"durable.suspensions_per_s.{n}", scenario="durable",
            name=f"{ran:,} flow{'s' if ran > 1 else ''}, fsync on",
            value=ours.per_second, unit="/s", baseline=naive.per_second,
            baseline_name="naive dill", flows=ran))
    default = rows[flows[1000]][0]
    results.append(Result(
        id="durable.every_step_per_s.1000", scenario="durable",
        name=f"{flows[1000]:,} flows, fsync on, snapshot_locals='every_step' (audit)",
        value=audit.per_second, unit="/s", baseline=default.per_second,
        baseline_name="the default policy (on_demand), same run", flows=flows[1000]))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="durable suspensions per second")
    parser.add_argument("--flows", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--round-trips", type=int, default=3000,
                        help=f"round trips per concurrency, {PER_FLOW} per flow pair")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-"))
    try:
        raw, one, by_flows, audit = measure(base, args.flows, args.round_trips,
                                            rounds=args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    table = Table(title="Durable suspensions (fsync on)")
    for column in ("workload", "suspensions/s", "µs each", "vs raw commit"):
        table.add_column(column, justify="right")
    for row in [raw, one, *(figure for pair in by_flows.values() for figure in pair), audit]:
        table.add_row(row.name, f"{row.per_second:,.0f}", f"{1e6 / row.per_second:,.1f}",
                      f"{raw.per_second / row.per_second:.2f}x the cost")
    Console().print(table)


if __name__ == "__main__":
    main()
