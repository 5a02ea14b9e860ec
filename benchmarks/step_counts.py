"""Deterministic counts per durable suspension: Python calls, LMDB puts and deletes, MACs,
pickles, frames sent and group commits, on the ``durable`` scenario's flows
(``benchmarks/durable.py``: two nodes with fsync on, ping-pong flow pairs of ``PER_FLOW`` round
trips each).

Counts do not depend on how loaded the machine is, times do: this is the tool to measure a change
to the step path with, before and after, on a shared machine. It is not a test and asserts
nothing. Two workloads:

* ``concurrent``: ``--flows`` pairs at once (default 100; the counts per suspension are those of
  the 1,000-flow figure within a few percent, at a tenth of the profiling time);
* ``in a row``: one pair doing ``--in-a-row`` round trips (the one-suspension figure).

Run: ``python -m benchmarks.step_counts [--flows N] [--in-a-row N] [--top K]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.durable import PER_FLOW, _pump, _two_nodes
from benchmarks.roundtrip import PingMany

# (label, file suffix, function name) of the counted operations in cProfile's statistics.
_COUNTED: dict[str, tuple[str, tuple[str, ...]]] = {
    # LMDB's own calls, whichever engine function makes them.
    "lmdb puts": ("~", ("<method 'put' of 'Transaction' objects>",)),
    "lmdb deletes": ("~", ("<method 'delete' of 'Transaction' objects>",
                           "<method 'delete' of 'Cursor' objects>")),
    # One MAC per sealed record written or read (``_mac_of`` is not counted: ``put_sealed``
    # may compute its MAC inline).
    "MACs": ("fibers/_storage.py", ("put_sealed", "seal", "unseal")),
    "frames sent": ("fibers/transport.py", ("send",)),
    "group commits": ("fibers/_storage.py", ("write_each",)),
}
_PICKLES = ("<method 'dump' of '_pickle.Pickler' objects>", "<built-in method _pickle.dumps>")


@dataclass
class Counts:
    """What one workload did, per suspension."""

    name: str
    suspensions: int
    python_calls: float
    all_calls: float
    counted: dict[str, float]
    top: list[tuple[int, str]]


def _run(flows: int, per_flow: int, top: int) -> Counts:
    base = Path(tempfile.mkdtemp(prefix="fibers-counts-"))
    try:
        alice, bob, driver = _two_nodes(base, naive=False)
        # One wave unprofiled first: imports, first-use caches and LMDB growth are not counted.
        alice.start_flows([PingMany(bob.party, per_flow) for _ in range(flows)])
        _pump(driver)
        profile = cProfile.Profile()
        profile.enable()
        handles = alice.start_flows([PingMany(bob.party, per_flow) for _ in range(flows)])
        _pump(driver)
        profile.disable()
        assert all(h.result.result(timeout=0) == sum(range(per_flow)) for h in handles)
        for runtime in driver.runtimes:
            runtime.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    suspensions = 2 * per_flow * flows
    python_calls = all_calls = 0
    counted = dict.fromkeys(_COUNTED, 0.0)
    counted["pickles"] = 0.0
    rows: list[tuple[int, str]] = []
    for (filename, line, function), (_, calls, *_rest) in stats.items():
        all_calls += calls
        if filename != "~":
            python_calls += calls
            rows.append((calls, f"{Path(filename).name}:{line} {function}"))
        for label, (suffix, name) in _COUNTED.items():
            if function in name and filename.endswith(suffix):
                counted[label] += calls
        if filename == "~" and function in _PICKLES:
            counted["pickles"] += calls
    rows.sort(reverse=True)
    return Counts(
        name=f"{flows} flow pair{'s' if flows > 1 else ''} x {per_flow} round trips",
        suspensions=suspensions,
        python_calls=python_calls / suspensions,
        all_calls=all_calls / suspensions,
        counted={k: v / suspensions for k, v in counted.items()},
        top=[(calls, where) for calls, where in rows[:top]],
    )


def _show(counts: Counts) -> None:
    print(f"== {counts.name}: {counts.suspensions:,} suspensions")
    print(f"   Python calls per suspension: {counts.python_calls:.1f} "
          f"({counts.all_calls:.1f} with calls of builtins)")
    for label, value in counts.counted.items():
        print(f"   {label} per suspension: {value:.2f}")
    if counts.top:
        print("   most called (calls per suspension):")
        for calls, where in counts.top:
            print(f"     {calls / counts.suspensions:7.2f}  {where}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="counts per durable suspension")
    parser.add_argument("--flows", type=int, default=100)
    parser.add_argument("--in-a-row", type=int, default=200)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    _show(_run(args.flows, PER_FLOW, args.top))
    _show(_run(1, args.in_a_row, args.top))


if __name__ == "__main__":
    main()
