"""The scenarios of ``fibers bench``, by name, and the runner that measures a selection of them.

Each scenario is a ``scenario(*, quick: bool) -> list[Result]`` function in a module of this
package, imported only when it runs (``fibers --help`` and the DBOS import stay cheap). The
``memory`` and ``restore`` scenarios are two readings of one measurement (``parked.py``), taken
once per run however many of the two are asked for, and first: resident-set growth is read most
faithfully before the other scenarios have grown and fragmented the heap.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Console

from benchmarks._report import Result, ScenarioReport, ScenarioSkipped

# name -> (module under benchmarks/, what it measures). The order is the order of the report.
SCENARIOS: Final[dict[str, tuple[str, str]]] = {
    "roundtrip": ("roundtrip", "in-memory round trips vs asyncio and thread-per-flow ping-pong"),
    "durable": ("durable", "durable suspensions/s at 1/100/1,000 flows vs raw commit, naive"),
    "dbos": ("dbos_peer", "the durable workload as DBOS workflows on SQLite (needs dbos)"),
    "memory": ("parked", "RSS per parked durable flow over 100,000 flows"),
    "restore": ("parked", "time to restore 100,000 checkpointed flows after a restart"),
    "trade": ("trade_scenario", "two-party trades/s end to end vs the Ed25519 floor"),
    "latency": ("latency", "p50/p99 of one durable round trip vs a raw synced commit"),
}

Scenario = Callable[..., list[Result]]


def _scenario_function(name: str) -> Scenario:
    module = importlib.import_module(f"benchmarks.{SCENARIOS[name][0]}")
    function: Scenario = module.scenario
    return function


def _execution_order(names: Sequence[str]) -> list[str]:
    # memory/restore first (see the module docstring); the others as asked.
    return sorted(dict.fromkeys(names), key=lambda n: n not in ("memory", "restore"))


def run_suite(names: Sequence[str], *, quick: bool,
              console: Console | None = None) -> list[ScenarioReport]:
    """Run the named scenarios (each once) and return their reports in ``SCENARIOS`` order.

    A scenario that raises ``ScenarioSkipped`` is reported as skipped with its reason; any other
    exception propagates. With ``quick`` the counts are tiny and no target is judged (``met`` is
    None throughout): a quick run only shows that every scenario runs.
    """
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SCENARIOS)}")
    measured: dict[str, tuple[list[Result], float] | str] = {}  # module -> results or skip
    reports: dict[str, ScenarioReport] = {}
    for name in _execution_order(names):
        module = SCENARIOS[name][0]
        if module not in measured:
            if console is not None:
                console.print(f"[dim]running {name}…[/]")
            start = time.perf_counter()
            try:
                results = _scenario_function(name)(quick=quick)
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
        mine = tuple(dataclasses.replace(r, met=None) if quick else r
                     for r in results if r.scenario == name)
        reports[name] = ScenarioReport(scenario=name, results=mine, seconds=seconds)
    return [reports[n] for n in SCENARIOS if n in reports]
