"""``fibers bench --plot PATH``: durable throughput against concurrency, as a PNG.

One line per system, from the results of one run: Fibers and the naive dill checkpointer from the
``durable`` scenario (``durable.suspensions_per_s.<N>``), DBOS on SQLite and on PostgreSQL from
the ``dbos`` scenario when it ran (``durable.vs_dbos_<backend>.<N>``), and the rate of raw synced
LMDB commits one at a time as a dashed reference. Both axes are logarithmic.
Needs matplotlib (``pip install 'fibers[bench]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks._report import Result, ScenarioReport

MISSING = "--plot needs matplotlib, which is not installed: pip install 'fibers[bench]'"


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed; the message says what to install."""


def available() -> bool:
    """Whether matplotlib can be imported here."""
    return importlib.util.find_spec("matplotlib") is not None


def check_available() -> None:
    """Raise ``PlotUnavailableError`` unless matplotlib can be imported."""
    if not available():
        raise PlotUnavailableError(MISSING)


def throughput_series(reports: Iterable[ScenarioReport]) -> dict[str, list[tuple[int, float]]]:
    """{system: [(flows, suspensions or steps per second), ...]} sorted by flows."""
    series: dict[str, list[tuple[int, float]]] = {}

    def add(label: str, result: Result, value: float | None) -> None:
        if result.flows is not None and value is not None:
            series.setdefault(label, []).append((result.flows, value))

    for report in reports:
        for result in report.results:
            if result.id.startswith("durable.every_step_per_s."):
                add("Fibers, snapshot_locals='every_step'", result, result.value)
            elif result.id.startswith("durable.suspensions_per_s."):
                add("Fibers", result, result.value)
                add("naive dill checkpointer", result, result.baseline)
            elif result.id.startswith("durable.vs_dbos_sqlite."):
                add("DBOS on SQLite", result, result.baseline)
            elif result.id.startswith("durable.vs_dbos_postgres."):
                add("DBOS on PostgreSQL", result, result.baseline)
    return {label: sorted(points) for label, points in series.items()}


def raw_commit_rate(reports: Iterable[ScenarioReport]) -> float | None:
    """Synced LMDB commits per second one after the other, from the ``durable`` scenario."""
    for report in reports:
        for result in report.results:
            if result.id == "durable.one_suspension_vs_raw_commit" and result.baseline:
                return 1e6 / result.baseline
    return None


def plot_throughput(reports: Sequence[ScenarioReport], path: Path, *, cpus: int) -> None:
    """Write the PNG to ``path``; ``ValueError`` if the run has no durable figures."""
    check_available()
    series = throughput_series(reports)
    if "Fibers" not in series:
        raise ValueError("--plot draws the durable scenario's figures: run 'durable' too")
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the file
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for label, points in series.items():
            flows, values = zip(*points, strict=True)
            axes.plot(flows, values, marker="o", label=label)
        raw = raw_commit_rate(reports)
        if raw is not None:
            axes.axhline(raw, linestyle="--", color="grey", label="raw synced commit, 1 at a time")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("concurrent flows")
        axes.set_ylabel("durable suspensions (steps) per second")
        axes.set_title(f"Durable throughput, fsync on ({cpus} cores)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
