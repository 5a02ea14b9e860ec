"""The durable workload as DBOS workflows on SQLite, beside Fibers, in the same run.

DBOS (``pip install 'fibers[bench]'``) is what a Python user would pick today for durable
workflows. Its unit of durability is the step: each step's result is written to the system
database before the workflow goes on, as each Fibers suspension is checkpointed before the flow
goes on. So the workload is N concurrent workflows each running K steps that echo a number, on a
SQLite system database in a temporary directory (SQLite's defaults: rollback journal,
``synchronous=FULL``, so every commit is fsynced, like LMDB with ``sync=True``). The figure is
steps per second, workflow start and completion included, beside Fibers' suspensions per second
on the ``durable`` scenario's ping-pong at the same concurrency.

DBOS is a process-wide singleton: each concurrency gets a fresh ``DBOS`` (new database) and
``DBOS.destroy()`` afterwards; the workflow and step functions are registered once per process.

Run: ``python -m benchmarks.dbos_peer [--flows 1 100 1000]``, or as part of ``fibers bench dbos``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._report import Result, ScenarioSkipped
from benchmarks.durable import Figure, fibers_suspensions

MISSING = "dbos is not installed: pip install 'fibers[bench]'"


def available() -> bool:
    """Whether ``dbos`` can be imported here."""
    return importlib.util.find_spec("dbos") is not None


def _echo(i: int) -> int:
    return i


def _ping(steps: int) -> int:
    step = _registered()[0]
    return sum(step(i) for i in range(steps))


@functools.cache
def _registered() -> tuple[Callable[[int], int], Callable[[int], int]]:
    """(step, workflow), registered with DBOS on first use (DBOS keeps a global registry)."""
    from dbos import DBOS

    step: Callable[[int], int] = DBOS.step()(_echo)
    workflow: Callable[[int], int] = DBOS.workflow()(_ping)
    return step, workflow


def dbos_steps(base: Path, flows: int, steps_per_flow: int) -> Figure:
    """``flows`` concurrent DBOS workflows of ``steps_per_flow`` steps each."""
    from dbos import DBOS

    workflow = _registered()[1]
    config: Any = {
        "name": "fibers-bench",
        "system_database_url": f"sqlite:///{base / f'dbos-{flows}.sqlite'}",
        "run_admin_server": False,  # it would listen on a port
        "log_level": "WARNING",
    }
    base.mkdir(parents=True, exist_ok=True)
    DBOS(config=config)
    try:
        DBOS.launch()
        start = time.perf_counter()
        handles = [DBOS.start_workflow(workflow, steps_per_flow) for _ in range(flows)]
        assert all(h.get_result() == sum(range(steps_per_flow)) for h in handles)
        elapsed = time.perf_counter() - start
    finally:
        DBOS.destroy()
    return Figure(f"DBOS on SQLite, {flows} workflows", flows * steps_per_flow, elapsed)


def measure(base: Path, flows: int, *, quick: bool) -> tuple[Figure, Figure]:
    """(fibers, DBOS) at ``flows`` concurrent flows. Fibers does the ``durable`` scenario's
    counts; DBOS, ten times slower per step, about 1,000 steps in all (at least 5 per flow),
    which keeps a full run under a minute."""
    if quick:
        trips, steps = max(50, flows), max(2, 20 // flows)
    else:
        trips, steps = max(2000, 10 * flows), max(5, 1000 // flows)
    ours = fibers_suspensions(base / f"fibers-{flows}", flows, trips, naive=False)
    return ours, dbos_steps(base / f"dbos-{flows}", flows, steps)


def run(flows: list[int], *, quick: bool) -> dict[int, tuple[Figure, Figure]]:
    """(fibers, DBOS) at each concurrency; ``ScenarioSkipped`` when dbos is not installed."""
    if not available():
        raise ScenarioSkipped(MISSING)
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-dbos-"))
    try:
        return {n: measure(base, n, quick=quick) for n in flows}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench dbos``: Fibers suspensions/s vs DBOS steps/s at 1, 100 and 1,000 flows
    (1 and 10 with ``quick``)."""
    rows = run([1, 10] if quick else [1, 100, 1000], quick=quick)
    return [
        Result(scenario="dbos", name=f"{n:,} flow{'s' if n > 1 else ''}",
               value=ours.per_second, unit="/s", baseline=peer.per_second,
               baseline_name="DBOS steps", target=">= 100x",
               met=ours.per_second >= 100 * peer.per_second, flows=n)
        for n, (ours, peer) in rows.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="durable workload: Fibers vs DBOS on SQLite")
    parser.add_argument("--flows", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args(argv)
    console = Console()
    try:
        rows = run(args.flows, quick=False)
    except ScenarioSkipped as skipped:
        console.print(f"skipped: {skipped}")
        return
    table = Table(title="Durable steps per second (fsync on): Fibers vs DBOS")
    for column in ("workload", "per second", "µs each", "Fibers vs DBOS"):
        table.add_column(column, justify="right")
    for ours, peer in rows.values():
        for figure in (ours, peer):
            table.add_row(figure.name, f"{figure.per_second:,.0f}",
                          f"{1e6 / figure.per_second:,.1f}",
                          f"{ours.per_second / peer.per_second:.1f}x" if figure is ours else "")
    console.print(table)


if __name__ == "__main__":
    main()
