"""The durable workload as DBOS workflows, on SQLite and on PostgreSQL, beside Fibers.

DBOS (``pip install 'fibers[bench]'``) is what a Python user would pick today for durable
workflows. Its unit of durability is the step: each step's result is written to the system
database before the workflow goes on, as each Fibers suspension is checkpointed before the flow
goes on. So the workload is N concurrent workflows each running ``PER_FLOW`` steps that echo a
number (the ``durable`` scenario's flows do as many round trips), in waves where N is too low
to reach the run's count; the figure is steps per second, workflow start and completion
included, beside Fibers' suspensions per second on the ``durable`` scenario's ping-pong at the
same concurrency, measured in the same process.

Two system databases, each with every commit fsynced:

* SQLite in a temporary directory (DBOS's default; SQLite's rollback journal with
  ``synchronous=FULL``): ``durable.vs_dbos_sqlite.<N>``.
* PostgreSQL, DBOS's production backend, whose server commits concurrent workflows' transactions
  together: a server of its own on a temporary data directory (``benchmarks._postgres``):
  ``durable.vs_dbos_postgres.<N>``. Where no server can be started, these results are reported
  as unmeasured with the reason.

DBOS is a process-wide singleton: each measurement gets a fresh ``DBOS`` (new database) and
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._postgres import PostgresUnavailableError, temporary_server
from benchmarks._report import Result, ScenarioSkipped
from benchmarks.durable import PER_FLOW, Figure, fibers_suspensions
from benchmarks.roundtrip import waves_of

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


def dbos_steps(url: str, flows: list[int], steps: int,
               per_flow: int = PER_FLOW) -> dict[int, Figure]:
    """For each concurrency N in ``flows``: at least ``steps`` DBOS steps, in waves of N
    concurrent workflows of ``per_flow`` steps each, on one DBOS launched on the system
    database at ``url``."""
    from dbos import DBOS

    workflow = _registered()[1]
    config: Any = {
        "name": "fibers-bench",
        "system_database_url": url,
        "run_admin_server": False,  # it would listen on a port
        "log_level": "WARNING",
    }
    backend = url.split(":", 1)[0]
    figures = {}
    DBOS(config=config)
    try:
        DBOS.launch()
        for n in flows:
            waves, elapsed = waves_of(steps, n, per_flow), 0.0
            for _ in range(waves):
                start = time.perf_counter()
                handles = [DBOS.start_workflow(workflow, per_flow) for _ in range(n)]
                results = [h.get_result() for h in handles]
                elapsed += time.perf_counter() - start
                assert results == [sum(range(per_flow))] * n
            figures[n] = Figure(f"DBOS on {backend}, {n} workflows", waves * n * per_flow,
                                elapsed)
    finally:
        DBOS.destroy()
    return figures


@dataclass(frozen=True)
class Row:
    """Fibers and DBOS at one concurrency; ``postgres`` is the reason when it could not run."""

    fibers: Figure
    sqlite: Figure
    postgres: Figure | str


def _counts(quick: bool) -> tuple[int, int]:
    """(Fibers round trips, DBOS steps) per concurrency: DBOS, tens of times slower per step,
    does fewer, which keeps a full run within a few minutes."""
    return (10, 10) if quick else (2000, 1000)


def run(flows: list[int], *, quick: bool) -> dict[int, Row]:
    """Fibers, DBOS on SQLite and DBOS on PostgreSQL at each concurrency; ``ScenarioSkipped``
    when dbos is not installed."""
    if not available():
        raise ScenarioSkipped(MISSING)
    trips, steps = _counts(quick)
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-dbos-"))

    def on(url: Callable[[int], str]) -> dict[int, Figure]:
        # A full run gives each concurrency a new database, so none runs on the rows another
        # left; a quick run launches DBOS once per backend (a launch takes about a second).
        if quick:
            return dbos_steps(url(0), flows, steps)
        return {n: dbos_steps(url(n), [n], steps)[n] for n in flows}

    try:
        ours = {n: fibers_suspensions(base / f"fibers-{n}", n, trips, naive=False)
                for n in flows}
        sqlite = on(lambda n: f"sqlite:///{base / f'dbos-{n}.sqlite'}")
        postgres: dict[int, Figure | str]
        try:
            with temporary_server() as server:
                postgres = {**on(lambda n: f"{server}_{n}")}  # widened to Figure | str
        except PostgresUnavailableError as missing:
            postgres = dict.fromkeys(flows, f"PostgreSQL: {missing}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {n: Row(ours[n], sqlite[n], postgres[n]) for n in flows}


def scenario(*, quick: bool) -> list[Result]:
    """``fibers bench dbos``: Fibers suspensions/s vs DBOS steps/s at 1, 100 and 1,000 flows
    (1, 2 and 4 with ``quick``, under the same ids), on SQLite and on PostgreSQL."""
    full = (1, 100, 1000)
    flows = dict(zip(full, (1, 2, 4) if quick else full, strict=True))  # id -> ran
    rows = run(list(flows.values()), quick=quick)
    results = []
    for n, ran in flows.items():
        row = rows[ran]
        for backend, peer in (("sqlite", row.sqlite), ("postgres", row.postgres)):
            name = f"{ran:,} flow{'s' if ran > 1 else ''}, fsync on"
            if isinstance(peer, str):
                results.append(Result(
                    id=f"durable.vs_dbos_{backend}.{n}", scenario="dbos", name=name,
                    value=None, unit="/s", unmeasured=peer, flows=ran))
                continue
            results.append(Result(
                id=f"durable.vs_dbos_{backend}.{n}", scenario="dbos", name=name,
                value=row.fibers.per_second, unit="/s", baseline=peer.per_second,
                baseline_name=f"DBOS steps, {backend}", flows=ran))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="durable workload: Fibers vs DBOS on SQLite and PostgreSQL")
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
    for row in rows.values():
        ours = row.fibers
        table.add_row(ours.name, f"{ours.per_second:,.0f}", f"{1e6 / ours.per_second:,.1f}", "")
        for peer in (row.sqlite, row.postgres):
            if isinstance(peer, str):
                table.add_row(peer, "", "", "")
                continue
            table.add_row(peer.name, f"{peer.per_second:,.0f}", f"{1e6 / peer.per_second:,.1f}",
                          f"{ours.per_second / peer.per_second:.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
