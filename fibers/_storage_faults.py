"""Injected storage failures, to test what the engine does when the disk fails.

``NodeStorage.inject_faults(FaultPlan())`` (``fibers._storage``) makes chosen writes or group
commits raise ``InjectedStorageFault``; the plan numbers the writes and commits it sees.
"""

from __future__ import annotations

import random

__all__ = ["FaultPlan", "InjectedStorageFault"]


class InjectedStorageFault(OSError):
    """A storage failure injected by a ``FaultPlan`` (it stands for a full disk or an I/O
    error: the write or commit that raised it did not happen)."""


class FaultPlan:
    """Which writes and group commits of a ``NodeStorage`` fail, to test fault paths.

    Install with ``storage.inject_faults(FaultPlan())``; then arm it::

        plan.fail_writes(3)             # the write numbered 3 (counted from installation) fails
        plan.fail_next_writes(2)        # the next two writes fail
        plan.fail_writes_to("inbox")    # the next write to database "inbox" fails
        plan.fail_commits(0)            # the first group commit fails (nothing of it is stored)
        plan.fail_next_commits(1)       # the next group commit fails
        plan.fail_at_random(0.05, seed=7)  # each write and commit fails with probability 0.05

    A write is one ``put``, ``put_sealed``, ``delete`` or ``delete_prefix``; ``writes`` and
    ``commits`` count them since installation (failed ones included), so a test can run a
    scenario once to count its writes and then fail each in turn. A failing write or commit
    raises ``InjectedStorageFault`` and does not happen.
    """

    def __init__(self) -> None:
        self.writes = 0
        self.commits = 0
        self.injected = 0  # how many failures were raised
        self._write_numbers: set[int] = set()
        self._next_writes = 0
        self._db_writes: dict[str, int] = {}
        self._commit_numbers: set[int] = set()
        self._next_commits = 0
        self._random: random.Random | None = None
        self._probability = 0.0

    def fail_writes(self, *numbers: int) -> FaultPlan:
        """Make the writes with these numbers (0 = the first after installation) fail."""
        self._write_numbers.update(numbers)
        return self

    def fail_next_writes(self, count: int = 1) -> FaultPlan:
        """Make the next ``count`` writes fail, whatever their database."""
        self._next_writes = count
        return self

    def fail_writes_to(self, db_name: str, count: int = 1) -> FaultPlan:
        """Make the next ``count`` writes to database ``db_name`` fail."""
        self._db_writes[db_name] = count
        return self

    def fail_commits(self, *numbers: int) -> FaultPlan:
        """Make the group commits with these numbers (0 = the first) fail as a whole."""
        self._commit_numbers.update(numbers)
        return self

    def fail_next_commits(self, count: int = 1) -> FaultPlan:
        """Make the next ``count`` group commits fail as a whole."""
        self._next_commits = count
        return self

    def fail_at_random(self, probability: float, *, seed: int) -> FaultPlan:
        """Make each write and each group commit fail with ``probability`` (reproducible from
        ``seed``)."""
        self._random, self._probability = random.Random(seed), probability
        return self

    def disarm_write(self, number: int) -> None:
        """Stop planning write ``number`` to fail (``fail_writes``); nothing if it was not
        planned or has already happened. For a caller that armed a write that never came."""
        self._write_numbers.discard(number)

    def clear(self) -> None:
        """Disarm every planned failure (the counters keep counting)."""
        self._write_numbers.clear()
        self._next_writes = 0
        self._db_writes.clear()
        self._commit_numbers.clear()
        self._next_commits = 0
        self._random = None

    def before_write(self, operation: str, db_name: str) -> None:
        """Called by the storage before each write; raises if this one is planned to fail."""
        number, self.writes = self.writes, self.writes + 1
        fail = number in self._write_numbers or self._draw()
        self._write_numbers.discard(number)
        if self._next_writes > 0:
            self._next_writes -= 1
            fail = True
        if self._db_writes.get(db_name, 0) > 0:
            self._db_writes[db_name] -= 1
            fail = True
        if fail:
            self.injected += 1
            raise InjectedStorageFault(
                f"injected failure of write {number} ({operation} to {db_name!r})"
            )

    def before_commit(self) -> None:
        """Called by the storage before each group commit; raises if it is planned to fail."""
        number, self.commits = self.commits, self.commits + 1
        fail = number in self._commit_numbers or self._draw()
        self._commit_numbers.discard(number)
        if self._next_commits > 0:
            self._next_commits -= 1
            fail = True
        if fail:
            self.injected += 1
            raise InjectedStorageFault(f"injected failure of group commit {number}")

    def _draw(self) -> bool:
        return self._random is not None and self._random.random() < self._probability
