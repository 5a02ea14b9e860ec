"""The structured result every scenario returns, its rich table and its JSON form.

A ``Result`` is one figure of Fibers beside the baseline measured in the same run:
``ratio = value / baseline`` in the row's unit, so its reading follows the unit. For a cost
(µs, ms, s, KB) above 1 means Fibers costs more than the baseline; for a throughput (…/s) above
1 means Fibers does more per second. ``target`` is the goal from the benchmarks issue in words,
and ``met`` whether this run reached it (None when the row has no target, or when the run was
too small for the target to apply, as in ``--quick``).
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, kw_only=True)
class Result:
    """One measured figure beside its baseline; see the module docstring for ``ratio``."""

    scenario: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None
    met: bool | None = None
    # Concurrent flows behind the figure, where it is one point of a curve (for --plot).
    flows: int | None = None

    @property
    def ratio(self) -> float | None:
        """``value / baseline``, or None without a baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        """The fields and the ratio, as plain JSON values."""
        return {**asdict(self), "ratio": self.ratio}


@dataclass(frozen=True, kw_only=True)
class ScenarioReport:
    """What one scenario produced: its results, or why it was skipped."""

    scenario: str
    results: tuple[Result, ...] = ()
    skipped: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "results": [r.to_json() for r in self.results],
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


class ScenarioSkipped(Exception):
    """Raised by a scenario that cannot run here; the message says why and what to install."""


@dataclass(frozen=True)
class RunInfo:
    """The conditions of a run, written beside its figures."""

    quick: bool
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)
    python: str = field(default_factory=platform.python_version)
    machine: str = field(default_factory=platform.machine)


def format_number(value: float) -> str:
    """Three significant figures, thousands separated: ``12,300``, ``45.6``, ``0.0123``."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{digits}f}"


def format_ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{format_number(ratio)}x"


def _met_cell(met: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[met]


def results_table(reports: Iterable[ScenarioReport], *, title: str) -> Table:
    """One row per result (and one per skipped scenario), scenario by scenario."""
    table = Table(title=title)
    for column in ("scenario", "figure", "value", "baseline", "vs", "ratio", "target", "met"):
        table.add_column(column, justify="right" if column in ("value", "baseline", "ratio")
                         else "left")
    for report in reports:
        if table.rows:
            table.add_section()
        if report.skipped is not None:
            reason = report.skipped.split(":")[0]  # the cause; the fix is in the note
            table.add_row(report.scenario, Text(f"skipped: {reason}", style="dim"), *[""] * 6)
        for i, r in enumerate(report.results):
            baseline = "" if r.baseline is None else f"{format_number(r.baseline)} {r.unit}"
            table.add_row("" if i else r.scenario, Text(r.name),
                          f"{format_number(r.value)} {r.unit}", baseline,
                          Text(r.baseline_name or ""), format_ratio(r.ratio),
                          Text(r.target or ""), _met_cell(r.met))
    return table


def write_json(path: Path, info: RunInfo, reports: Iterable[ScenarioReport]) -> None:
    """Write the run as ``{"run": {...}, "scenarios": {name: report}}`` to ``path``."""
    document: Mapping[str, Any] = {
        "run": asdict(info),
        "scenarios": {r.scenario: r.to_json() for r in reports},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
