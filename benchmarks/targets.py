"""The targets of ``fibers bench``: one table, by result id.

Every result of every scenario carries a stable ``id`` (``durable.suspensions_per_s.1000``);
the ids listed here with a ``Target`` are the contract of the fast-steps issue (issue 13), each
judged on the result's ``ratio`` (``value / baseline``) or on its ``value`` in its unit. An id
absent from ``TARGETS`` is reported without a goal. A run judges a target only when it is a full
run (``--quick`` judges none) and the result was measured (an unmeasured result, such as the
DBOS comparison where no PostgreSQL server can be found, has no value to judge).

An id names the figure of a full run: its last part, where there is one, is the concurrency or
the flow count of the full run (``.1000``: 1,000 concurrent flows). ``--quick`` keeps the ids and
shrinks the counts; the result's ``flows`` field says what actually ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True)
class Target:
    """A bound on a result's ``ratio`` or ``value``: ``op`` is ``<=`` or ``>=``."""

    on: Literal["ratio", "value"]
    op: Literal["<=", ">="]
    bound: float
    text: str

    def met(self, *, value: float | None, ratio: float | None) -> bool | None:
        """Whether ``value`` (or ``ratio``) meets the bound; None when it was not measured."""
        figure = ratio if self.on == "ratio" else value
        if figure is None:
            return None
        return figure <= self.bound if self.op == "<=" else figure >= self.bound


# id -> target. Invariant: every key is an id some scenario reports (tests/benchmarks checks it).
TARGETS: Final[dict[str, Target]] = {
    "durable.suspensions_per_s.1000": Target(
        "value", ">=", 50_000, ">= 50,000/s"),
    "durable.one_suspension_vs_raw_commit": Target("ratio", "<=", 1.3, "<= 1.3x raw commit"),
    "roundtrip.vs_asyncio.1": Target("ratio", "<=", 2.0, "<= 2x asyncio"),
    "memory.hibernated_bytes": Target("value", "<=", 1024, "<= 1,024 B"),
    "memory.live_bytes": Target("value", "<=", 8192, "<= 8,192 B"),
    "restore.ready_s.100000": Target("value", "<=", 1.0, "<= 1 s"),
    "restore.wake_all_s.100000": Target("value", "<=", 10.0, "<= 10 s"),
    "trade.vs_crypto_floor": Target("ratio", "<=", 3.0, "<= 3x floor"),
    # Issue 14: three node processes (mutual TLS, driven over RPC), 50 at a time, fsync on.
    "trade.per_s.processes": Target("value", ">=", 300, ">= 300/s"),
}

# Ids the issue asks to be reported without a bound: a run must contain them all the same.
REPORTED: Final[tuple[str, ...]] = (
    "durable.vs_dbos_sqlite.1000",
    "durable.vs_dbos_postgres.1000",
    # The audit snapshot policy beside the default one (docs/checkpoint-format.md).
    "durable.every_step_per_s.1000",
    "trade.every_step_vs_crypto_floor",
)

# Every id the issue names: a full run reports each (measured, or unmeasured with its reason).
CONTRACT: Final[tuple[str, ...]] = (*TARGETS, *REPORTED)
