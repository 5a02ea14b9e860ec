"""What one two-party trade costs, counted: Ed25519 operations, codec work, hashes, MACs,
storage writes, pickles and Python calls per trade, and where its CPU goes by function.

Counts do not depend on how loaded the machine is (unlike ``benchmarks.trade``'s timings), so
they are what to compare before and after a change. The trade is ``benchmarks.trade``'s (three
durable nodes in one process, fsync off), ``--trades`` of them ``--concurrency`` at a time after
a warm-up trade, run under ``cProfile``: the CPU figures are inflated by the profiler and only
their shares mean something.

Run: ``python -m benchmarks.trade_profile [--trades N] [--concurrency C] [--top K]
[--snapshot-locals on_demand|every_step]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
from pathlib import Path

from benchmarks.trade import Market
from fibers.storage import SnapshotLocals

# (label, how the function shows in cProfile: file suffix and function name; names the engine
# has used for the same function are listed with "|")
COUNTED: tuple[tuple[str, str, str], ...] = (
    ("Ed25519 signs", "ledger/_keys.py", "sign"),
    ("Ed25519 verifies", "ledger/_crypto.py", "verify"),
    ("transaction ids computed", "ledger/_transactions.py", "group_hashes"),
    ("wire encodes", "fibers/_wire.py", "encode"),
    ("objects walked to encode", "fibers/_wire.py", "_fields_to_wire"),
    ("wire decodes", "fibers/_wire.py", "decode"),
    ("objects decoded", "fibers/_wire.py", "_revive_object"),
    ("SHA-256", "~", "<built-in method _hashlib.openssl_sha256>"),
    ("record MACs (BLAKE2b)", "fibers/_storage.py", "_mac_of"),
    ("guard HMACs", "~", "<built-in method _hashlib.hmac_digest>"),
    ("LMDB puts", "~", "<method 'put' of 'Transaction' objects>"),
    ("LMDB deletes", "fibers/_storage.py", "delete"),
    ("pickles", "~", "<method 'dump' of '_pickle.Pickler' objects>"),
    ("journaled service calls", "fibers/_requests.py", "_service_call"),
    ("messages sent", "fibers/_requests.py", "send|_send"),
    ("flow steps", "fibers/_node.py", "_run_step"),
)


def profile(trades: int, concurrency: int,
            snapshot_locals: SnapshotLocals = "on_demand") -> pstats.Stats:
    """The profile of ``trades`` trades after a warm-up one, on nodes with the snapshot policy
    ``snapshot_locals``."""
    base = Path(tempfile.mkdtemp(prefix="fibers-bench-trade-profile-"))
    try:
        market = Market(base, trades + 1, sync=False, snapshot_locals=snapshot_locals)
        try:
            market.trade(1, 1)
            profiler = cProfile.Profile()
            profiler.enable()
            market.trade(trades, concurrency)
            profiler.disable()
        finally:
            market.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return pstats.Stats(profiler)


def counts(stats: pstats.Stats, trades: int) -> list[tuple[str, float]]:
    """Each ``COUNTED`` function's calls per trade, then every Python call per trade."""
    table = stats.stats  # type: ignore[attr-defined]
    found = []
    for label, path, name in COUNTED:
        names = name.split("|")
        calls = sum(entry[1] for (file, _, function), entry in table.items()
                    if file.endswith(path) and function in names)
        found.append((label, calls / trades))
    found.append(("Python calls", sum(entry[1] for entry in table.values()) / trades))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="counts and profile of one trade")
    parser.add_argument("--trades", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--snapshot-locals", choices=["on_demand", "every_step"],
                        default="on_demand")
    args = parser.parse_args(argv)
    stats = profile(args.trades, args.concurrency, args.snapshot_locals)
    for label, value in counts(stats, args.trades):
        print(f"{value:10.1f}  {label} per trade")
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\nprofiled CPU {total / args.trades * 1e3:.2f} ms per trade; by own time:")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    for (file, line, function), entry in rows[:args.top]:
        share = entry[2] / total * 100
        print(f"{share:5.1f}%  {entry[1] / args.trades:8.1f} calls  "
              f"{file.rsplit('/', 1)[-1]}:{line}({function})")


if __name__ == "__main__":
    main()
