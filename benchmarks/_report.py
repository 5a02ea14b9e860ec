"""The structured result every scenario returns, its rich table and its JSON form.

A ``Result`` is one figure of Fibers, under a stable ``id``, beside the baseline measured in
the same run: ``ratio = value / baseline`` in the row's unit, so its reading follows the unit.
For a cost (µs, ms, s, B) above 1 means Fibers costs more than the baseline; for a throughput
(…/s) above 1 means Fibers does more per second. Its target, if any, is ``TARGETS[id]``
(``benchmarks/targets.py``); ``met`` is whether this run reached it (None when the id has no
target, the result was not measured, or the run was too small to judge, as ``--quick``). A
result that cannot be measured yet has ``value`` None and says why in ``unmeasured``.
"""

from __future__ import annotations

import dataclasses
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

from benchmarks.targets import TARGETS


@dataclass(frozen=True, kw_only=True)
class Result:
    """One measured figure beside its baseline; see the module docstring for ``ratio``."""

    id: str
    scenario: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    # Concurrent flows (or flows in all) behind the figure in this run; for --plot, and to
    # read a --quick run, whose counts are smaller than its ids say.
    flows: int | None = None
    # Why the figure could not be measured (value is then None); None when it was.
    unmeasured: str | None = None
    met: bool | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.unmeasured is None):
            raise ValueError(f"result {self.id}: give a value or the reason it is unmeasured, "
                             "not both or neither")

    @property
    def ratio(self) -> float | None:
        """``value / baseline``, or None without a baseline (or a value)."""
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def target(self) -> str | None:
        """The target of this id in words, or None when it has none."""
        target = TARGETS.get(self.id)
        return None if target is None else target.text

    def judged(self) -> Result:
        """This result with ``met`` set against its target (None without one)."""
        target = TARGETS.get(self.id)
        met = None if target is None else target.met(value=self.value, ratio=self.ratio)
        return dataclasses.replace(self, met=met)

    def to_json(self) -> dict[str, Any]:
        """The fields, the target and the ratio, as plain JSON values."""
        return {**asdict(self), "target": self.target, "ratio": self.ratio}


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


def _figure_cell(result: Result) -> Text:
    """The id, and under it what the figure is (and why it is unmeasured, if it is)."""
    cell = Text(result.id, style="bold")
    cell.append(f"\n{result.name}", style="dim")
    if result.unmeasured is not None:
        cell.append(f"\nnot measured: {result.unmeasured}", style="yellow")
    return cell


def _baseline_cell(result: Result) -> Text:
    if result.baseline is None:
        return Text("")
    cell = Text(f"{format_number(result.baseline)} {result.unit}")
    cell.append(f"\n{result.baseline_name or ''}", style="dim")
    return cell


def results_table(reports: Iterable[ScenarioReport], *, title: str) -> Table:
    """One row per result (and one per skipped scenario), scenario by scenario."""
    table = Table(title=title)
    # The widest id fits unbroken: ids are what a reader greps and compares across runs.
    table.add_column("id / figure", min_width=max(len(i) for i in ("x" * 37, *TARGETS)),
                     overflow="fold", ratio=1)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("baseline", justify="right", max_width=22)
    table.add_column("ratio", justify="right", no_wrap=True)
    table.add_column("target", max_width=26)
    table.add_column("met", no_wrap=True)
    for report in reports:
        if table.rows:
            table.add_section()
        if report.skipped is not None:
            reason = report.skipped.split(":")[0]  # the cause; the fix is in the note
            table.add_row(Text(f"{report.scenario}: skipped: {reason}", style="dim"),
                          *[""] * 5)
        for r in report.results:
            value = "—" if r.value is None else f"{format_number(r.value)} {r.unit}"
            table.add_row(_figure_cell(r), value, _baseline_cell(r), format_ratio(r.ratio),
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
