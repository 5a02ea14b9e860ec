"""Python calls per in-memory round trip, by function: a measuring tool that does not depend on
how loaded the machine is (unlike the timings of ``benchmarks.roundtrip``).

One ``PingMany``/``PongMany`` pair (``benchmarks.roundtrip``, durability off) runs ``short``
round trips, then a fresh pair runs ``long`` round trips, each under ``cProfile``. Their
difference divided by ``long - short`` is the cost of one round trip without the pair's start
and end: deterministic for a given version of the code, so a before/after compares exactly.

Run: ``python -m benchmarks.calls [--top N] [--durable]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections import Counter
from dataclasses import dataclass

from benchmarks.roundtrip import PingMany
from fibers.testing import MockNetwork

FunctionKey = tuple[str, int, str]
"""(file, line, function name) as ``pstats`` names a function."""


@dataclass(frozen=True)
class CallProfile:
    """Python calls (primitive and recursive) per round trip, in all and by function."""

    per_round_trip: float
    by_function: dict[FunctionKey, float]

    def top(self, n: int) -> list[tuple[FunctionKey, float]]:
        """The ``n`` functions with the most calls per round trip, most first."""
        return sorted(self.by_function.items(), key=lambda kv: -kv[1])[:n]


def _calls(round_trips: int, *, durable: bool) -> Counter[FunctionKey]:
    """Calls by function while one pair does ``round_trips`` round trips (setup excluded)."""
    with MockNetwork(record_transcript=False, durable=durable) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        profile = cProfile.Profile()
        profile.enable()
        handle = alice.start_flow(PingMany(bob.party, round_trips))
        network.run_network()
        profile.disable()
        assert handle.result.result(timeout=0) == sum(range(round_trips))
    counts: Counter[FunctionKey] = Counter()
    stats: dict[FunctionKey, tuple[int, int, float, float, object]]
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for key, (_, total_calls, *_rest) in stats.items():
        counts[key] = total_calls
    return counts


def measure(short: int = 50, long: int = 250, *, durable: bool = False) -> CallProfile:
    """Calls per round trip: (calls for ``long`` round trips - calls for ``short``) /
    (``long`` - ``short``)."""
    if long <= short:
        raise ValueError(f"long ({long}) must exceed short ({short})")
    few, many = _calls(short, durable=durable), _calls(long, durable=durable)
    span = long - short
    by_function = {key: (many[key] - few.get(key, 0)) / span for key in many}
    by_function = {key: value for key, value in by_function.items() if value > 0}
    return CallProfile(sum(by_function.values()), by_function)


def _name(key: FunctionKey) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    short = filename.split("/site-packages/")[-1].split("/live/")[-1]
    return f"{short}:{line}({function})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Python calls per in-memory round trip")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--durable", action="store_true", help="with storage (fsync off)")
    args = parser.parse_args(argv)
    profile = measure(durable=args.durable)
    print(f"{profile.per_round_trip:.1f} Python calls per round trip"
          f"{' (durable)' if args.durable else ''}")
    for key, calls in profile.top(args.top):
        print(f"{calls:8.2f}  {_name(key)}")


if __name__ == "__main__":
    main()
