"""``fibers bench trade``: CPU and time per two-party trade beside its Ed25519 floor.

The measurement is ``benchmarks.trade``'s (see its docstring for what a trade and the floor
are); this module only runs it at the scenario's counts and turns its figures into results.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks._report import Result
from benchmarks.trade import crypto_cost, measure, per_trade_crypto
from benchmarks.trade_processes import measure_processes


def scenario(*, quick: bool) -> list[Result]:
    """``trade.vs_crypto_floor``: CPU ms per trade, 50 at a time with fsync off, against the
    crypto floor (the cost of the signatures and verifications of one trade), and
    ``trade.every_step_vs_crypto_floor`` the same with ``snapshot_locals="every_step"``; and
    ``trade.ms.fsync_<off|on>.<1|50>``: wall ms per trade at 1 and 50 at a time, fsync off and
    on, beside the same floor; ``trade.per_s.processes``: trades per second on three node
    processes (benchmarks/trade_processes.py), 50 at a time with fsync on, beside the same
    figure in one process. ``quick``: 5 trades, 1 and 5 at a time (3 on processes), under the
    same ids."""
    trades, concurrency = (5, (1, 5)) if quick else (200, (1, 50))
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-trade-"))
    try:
        counts = per_trade_crypto(base / "count")
        sign_cost, verify_cost = crypto_cost(200 if quick else 5000)
        figures = {(sync, c): measure(base / f"run-{sync}-{c}", trades, c, sync)
                   for sync in (False, True) for c in concurrency}
        every_step = measure(base / "every-step", trades, concurrency[1], False, "every_step")
        on_processes = measure_processes(base / "processes", 3 if quick else trades,
                                         3 if quick else concurrency[1])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor_ms = (counts.signs * sign_cost + counts.verifies * verify_cost) * 1e3
    floor = f"floor: {counts.signs} signs + {counts.verifies} verifies"
    cpu = figures[False, concurrency[1]]
    results = [Result(
        id="trade.vs_crypto_floor", scenario="trade",
        name=f"CPU per trade, {cpu.name}; {floor}",
        value=cpu.cpu_seconds / cpu.trades * 1e3, unit="ms",
        baseline=floor_ms, baseline_name="Ed25519 floor", flows=concurrency[1]),
        Result(
            id="trade.every_step_vs_crypto_floor", scenario="trade",
            name=f"CPU per trade, {every_step.name} (audit policy); {floor}",
            value=every_step.cpu_seconds / every_step.trades * 1e3, unit="ms",
            baseline=floor_ms, baseline_name="Ed25519 floor", flows=concurrency[1])]
    for (sync, c), figure in figures.items():
        full_c = 1 if c == 1 else 50
        results.append(Result(
            id=f"trade.ms.fsync_{'on' if sync else 'off'}.{full_c}", scenario="trade",
            name=f"per trade, {figure.name}; {floor}", value=1e3 / figure.per_second, unit="ms",
            baseline=floor_ms, baseline_name="Ed25519 floor", flows=c))
    one = figures[True, concurrency[1]]
    results.append(Result(
        id="trade.per_s.processes", scenario="trade",
        name=f"trades/s on 3 node processes (TLS, RPC), {on_processes.concurrency} at a time, "
        "fsync on", value=on_processes.per_second, unit="/s", baseline=one.per_second,
        baseline_name=f"one process, {one.name}", flows=on_processes.concurrency))
    return results
