"""``fibers bench``: run benchmark scenarios, print their table, write JSON and a plot.

The scenarios and their measurements live in the ``benchmarks`` package (``benchmarks.suite``
names them); this module is the command line around them. Exit status 0 whether or not the
targets are met (it is a report), 2 when the options cannot be honoured (an unknown scenario,
``--plot`` without matplotlib or without the ``durable`` scenario).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from benchmarks._report import RunInfo, results_table, write_json
from benchmarks.plot import PlotUnavailableError, check_available, plot_throughput
from benchmarks.suite import SCENARIOS, run_suite


def _scenario_name(text: str) -> str:
    if text not in SCENARIOS:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {text!r}; choose from {', '.join(SCENARIOS)}")
    return text


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fibers bench``, and the scenario list in its help, on its subparser."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the list's lines
    parser.epilog = "scenarios:\n" + "\n".join(f"  {name:10} {what}"
                                               for name, (_, what) in SCENARIOS.items())
    parser.add_argument("scenarios", nargs="*", type=_scenario_name, metavar="SCENARIO",
                        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, about a second per scenario: a smoke test whose "
                        "figures mean nothing and whose targets are not judged")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", dest="json_path",
                        help="also write the results as JSON to PATH")
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH", dest="plot_path",
                        help="also write a PNG of durable throughput against concurrency "
                        "(needs matplotlib: the 'bench' extra)")


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What ``fibers bench`` was asked to do; no scenarios means all of them."""

    scenarios: tuple[str, ...] = ()
    quick: bool = False
    json_path: Path | None = None
    plot_path: Path | None = None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> BenchOptions:
        return cls(scenarios=tuple(args.scenarios), quick=args.quick, json_path=args.json_path,
                   plot_path=args.plot_path)


def _error(message: str) -> int:
    print(f"fibers bench: error: {message}", file=sys.stderr)
    return 2


def run_bench(console: Console, options: BenchOptions) -> int:
    """Run the scenarios, print the table, write ``--json``/``--plot``; the exit status."""
    names = list(options.scenarios or SCENARIOS)
    if options.plot_path is not None:
        # Checked before running: a full run takes minutes.
        try:
            check_available()
        except PlotUnavailableError as missing:
            return _error(str(missing))
        if "durable" not in names:
            return _error("--plot draws the durable scenario's figures; add 'durable' "
                          "to the scenarios (or name none to run them all)")
    info = RunInfo(quick=options.quick)
    reports = run_suite(names, quick=options.quick, console=console)
    title = (f"fibers bench{' --quick (smoke counts, not figures)' if options.quick else ''}: "
             f"{info.cpus} cores, Python {info.python}")
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # a log or a pipe: wide enough that the rows do not wrap
    console.print(results_table(reports, title=title))
    if options.json_path is not None:
        write_json(options.json_path, info, reports)
        console.print(f"wrote {options.json_path}")
    if options.plot_path is not None:
        plot_throughput(reports, options.plot_path, cpus=info.cpus)
        console.print(f"wrote {options.plot_path}")
    return 0
