"""The scenarios of ``fibers bench``, by name, and the runner that measures a selection of them.

Each scenario is a ``scenario(*, quick: bool) -> list[Result]`` function in a module of this
package. The runner calls each in a new process of its own (``spawn``), so that no scenario runs
in a heap another has grown: 100,000 parked flows leave gigabytes behind (a stopped node does
not free its flows), and every later full garbage collection would walk them. The ``memory``
and ``restore`` scenarios are two readings of one measurement (``parked.py``), taken once per
run however many of the two are asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Final

from rich.console import Console

from benchmarks._report import Result, ScenarioReport, ScenarioSkipped

# name -> (module under benchmarks/, what it measures). The order is the order of the report.
SCENARIOS: Final[dict[str, tuple[str, str]]] = {
    "roundtrip": ("roundtrip", "in-memory round trips vs asyncio and thread-per-flow ping-pong"),
    "durable": ("durable", "durable suspensions/s at 1/100/1,000 flows vs raw commit, naive"),
    "dbos": ("dbos_peer", "the durable workload as DBOS workflows on SQLite and PostgreSQL"),
    "memory": ("parked", "anonymous RSS per parked flow over 100,000 flows, LMDB cache apart"),
    "restore": ("parked", "100,000 parked flows after a restart: ready, then all finished"),
    "trade": ("trade_scenario", "CPU and time per two-party trade vs its Ed25519 floor"),
    "latency": ("latency", "p50/p99 of one durable round trip vs a raw synced commit"),
    "explore": ("explore", "simulation explorer schedules/s on the two-party trade"),
}

def _scenario_results(module: str, quick: bool) -> list[Result]:
    # Runs in the scenario's own process; module-level so that spawn can find it.
    module_ = importlib.import_module(f"benchmarks.{module}")
    scenario: Callable[..., list[Result]] = module_.scenario
    return scenario(quick=quick)


def run_isolated(module: str, *, quick: bool) -> list[Result]:
    """``benchmarks.<module>.scenario(quick=quick)`` in a new process; its exceptions (such as
    ``ScenarioSkipped``) are raised here."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as process:
        return process.submit(_scenario_results, module, quick).result()


def run_suite(names: Sequence[str], *, quick: bool,
              console: Console | None = None) -> list[ScenarioReport]:
    """Run the named scenarios (each once) and return their reports in ``SCENARIOS`` order.

    A scenario that raises ``ScenarioSkipped`` is reported as skipped with its reason; any other
    exception propagates. Each result is judged against its id's target
    (``benchmarks.targets``). With ``quick`` the counts are tiny and no target is judged
    (``met`` is None throughout): a quick run only shows that every scenario runs.
    """
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SCENARIOS)}")
    measured: dict[str, tuple[list[Result], float] | str] = {}  # module -> results or skip
    reports: dict[str, ScenarioReport] = {}
    for name in dict.fromkeys(names):
        module = SCENARIOS[name][0]
        if module not in measured:
            if console is not None:
                console.print(f"[dim]running {name}…[/]")
            start = time.perf_counter()
            try:
                results = run_isolated(module, quick=quick)
            except ScenarioSkipped as skipped:
                measured[module] = str(skipped)
                if console is not None:
                    console.print(f"{name}: skipped: {skipped}", markup=False, soft_wrap=True)
            else:
                measured[module] = (results, time.perf_counter() - start)
        outcome = measured[module]
        if isinstance(outcome, str):
            reports[name] = ScenarioReport(scenario=name, skipped=outcome)
            continue
        results, seconds = outcome
        mine = tuple(dataclasses.replace(r, met=None) if quick else r.judged()
                     for r in results if r.scenario == name)
        reports[name] = ScenarioReport(scenario=name, results=mine, seconds=seconds)
    return [reports[n] for n in SCENARIOS if n in reports]
