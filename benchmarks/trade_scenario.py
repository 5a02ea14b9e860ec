"""``fibers bench trade``: two-party trades end to end beside the Ed25519 floor.

The measurement is ``benchmarks.trade``'s (see its docstring for what a trade and the floor
are); this module only runs it at the scenario's counts and turns its figures into results.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks._report import Result
from benchmarks.trade import crypto_cost, measure, per_trade_crypto


def scenario(*, quick: bool) -> list[Result]:
    """ms per trade at 1 and 50 trades at a time (1 and 5 with ``quick``), fsync off and on,
    each beside the crypto floor: the cost of the signatures and verifications of one trade."""
    trades, concurrency = (5, (1, 5)) if quick else (200, (1, 50))
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-trade-"))
    try:
        counts = per_trade_crypto(base / "count")
        sign_cost, verify_cost = crypto_cost(200 if quick else 5000)
        figures = [measure(base / f"run-{sync}-{c}", trades, c, sync)
                   for sync in (False, True) for c in concurrency]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor_ms = (counts.signs * sign_cost + counts.verifies * verify_cost) * 1e3
    return [
        Result(scenario="trade", name=figure.name, value=1e3 / figure.per_second,
               unit="ms", baseline=floor_ms,
               baseline_name="crypto floor",
               target=">= 300/s, <= 3x",
               met=figure.per_second >= 300 and 1e3 / figure.per_second <= 3 * floor_ms)
        for figure in figures
    ]
