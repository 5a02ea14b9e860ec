"""Garbage-collector policy for a process whose nodes hold many parked flows.

A parked flow is a few dozen long-lived objects (its greenlet, frames, sessions, futures) that
sit unchanged until a message wakes it. CPython's cyclic collector nevertheless walks every one
of them at each full collection, and full collections come more often as a node parks more
flows: a restart of 100,000 flows spent much of its re-send in the collector. Two remedies:

* ``gc.freeze()`` moves every object alive at that moment to the permanent generation, which
  the collector never walks. ``ParkedFlowsGc`` freezes after a restore and after each further
  ``batch`` flows are parked.
* Objects frozen stay uncollected while frozen, even when their flow ends and they become
  cyclic garbage (acyclic garbage is still freed at once by reference counting), and a freeze
  also keeps whatever cyclic garbage was not collected yet. So when the live flows fall to
  ``RECLAIM_BELOW`` of what they were at the last freeze, ``ParkedFlowsGc`` unfreezes, collects
  everything once and freezes the survivors again. A freeze happens only at a new peak of live
  flows (``batch`` above the last), so what stays frozen is bounded by the peak's memory, and
  the collector's work by one full collection per freeze and per reclaim.
* A young-generation threshold of ``YOUNG_THRESHOLD`` instead of CPython's 700, so that the
  objects of a step that are alive when the collector happens to run in the middle of it are
  not promoted (and walked again by older collections) as often.

The policy is process-wide (the collector is): ``ParkedFlowsGc.install()`` sets the threshold
once per process; nodes in one process each keep their own ``ParkedFlowsGc`` and freezes from
any of them hold for all.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["DEFAULT_BATCH", "RECLAIM_BELOW", "YOUNG_THRESHOLD", "ParkedFlowsGc"]

YOUNG_THRESHOLD: Final = 10_000
"""Allocations (net of frees) between young-generation collections (CPython's default: 700)."""

DEFAULT_BATCH: Final = 5_000
"""Flows parked since the last freeze that trigger another."""

RECLAIM_BELOW: Final = 0.125
"""Share of the flows live at the last freeze below which the frozen objects are collected.
At 20,000 restored flows woken to the end, the collector's time was 1.9 s (reclaiming only
when none is left), 2.4 s (1/8), 3.2 s (1/2) against 3.5 s untuned: each reclaim is a full
collection, and the lower the share, the longer ended flows' cyclic garbage is kept."""


class ParkedFlowsGc:
    """When to freeze and unfreeze the collector for one node; see the module docstring.

    Call ``started()`` once the node is built (it has restored its flows), and
    ``observe(live)`` after each scheduling round, ``live`` being the count of the node's
    unfinished flows; ``observe`` is cheap when nothing is due (two comparisons)."""

    def __init__(self, batch: int = DEFAULT_BATCH, reclaim_below: float = RECLAIM_BELOW) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1 flow, got {batch}")
        if not 0 <= reclaim_below < 1:
            raise ValueError(f"reclaim_below must be in [0, 1), got {reclaim_below}")
        self.batch = batch
        self.reclaim_below = reclaim_below
        # Invariant: _frozen_at is the live count at the last freeze (0: nothing frozen by us).
        self._frozen_at = 0
        self.freezes = 0
        self.unfreezes = 0

    @staticmethod
    def install() -> None:
        """Raise the young-generation threshold (the older generations' are kept)."""
        young, middle, old = gc.get_threshold()
        if young < YOUNG_THRESHOLD:
            gc.set_threshold(YOUNG_THRESHOLD, middle, old)

    @staticmethod
    def started() -> None:
        """Once a node is built: freeze what the start built (the flows it restored, its
        services, the modules imported), all long-lived. The live count is not needed: the
        next ``observe`` freezes again at ``batch`` flows and starts counting from there."""
        gc.freeze()

    def observe(self, live: int) -> None:
        """After a round: freeze when ``batch`` more flows are live than at the last freeze;
        unfreeze, collect and freeze again when ``reclaim_below`` of them or fewer are left."""
        if live >= self._frozen_at + self.batch:
            self._freeze(live)
        elif self._frozen_at and live <= self._frozen_at * self.reclaim_below:
            gc.unfreeze()
            self.unfreezes += 1
            gc.collect()
            if live:
                self._freeze(live)
            else:
                self._frozen_at = 0

    def _freeze(self, live: int) -> None:
        gc.freeze()
        self.freezes += 1
        self._frozen_at = live
