"""Shrinking a failing schedule: delta debugging (Zeller's ddmin, complements only) over its
choices. A candidate is replayed as a guided schedule (``fibers.testing._explore.replay``):
its choices are taken in order, each as soon as it is possible, and every other event in the
default order (oldest frame first, timers when nothing else moves). What is left is a schedule
from which no chunk can be removed with the run still failing the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["ddmin"]

T = TypeVar("T")


def ddmin(items: list[T], fails: Callable[[list[T]], bool], max_tests: int = 150) -> list[T]:
    """A sub-list of ``items`` (which fail) that still fails, from which removing any single
    chunk at the finest granularity tried makes it pass; at most ``max_tests`` calls of
    ``fails`` (then the smallest failing list found so far)."""
    tests = 0
    if items and fails([]):
        return []
    granularity = 2
    while len(items) >= 2:
        size = -(-len(items) // granularity)
        reduced = False
        for start in range(0, len(items), size):
            complement = items[:start] + items[start + size:]
            tests += 1
            if tests > max_tests:
                return items
            if fails(complement):
                items, granularity, reduced = complement, max(granularity - 1, 2), True
                break
        if not reduced:
            if granularity >= len(items):
                break
            granularity = min(len(items), granularity * 2)
    if len(items) == 1 and tests < max_tests and fails([]):
        return []
    return items
