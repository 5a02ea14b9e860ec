"""The vault's in-memory coin-selection index (used by ``ledger._vault.VaultService``).

A ``SelectionIndex`` keeps the vault's unconsumed states of one type in largest-first order,
split into groups (for cash: one group per issued token), so that a selection walks the states
of the groups it may spend, largest first, and stops as soon as the target is covered, instead
of filtering and sorting every state of the vault each time. It lives in memory only, next to
the vault's own maps: the vault adds and removes states as it records and consumes them, and
rebuilds its indexes when it reloads from storage. Soft locks are not part of it: a selection
checks each state it walks against the vault's locks.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from ledger._states import ContractState, StateAndRef, StateRef

__all__ = ["Entry", "SelectionIndex"]

Entry = tuple[int, StateRef]
"""``(-amount, ref)``: sorting entries ascending puts the largest amount first, ties by ref."""


class SelectionIndex:
    """The states of ``state_type`` (subclasses included) in largest-first order per group.

    ``amount_of`` and ``group_of`` must be pure functions of the state's data: they are called
    once, when a state is added, not at each selection.
    """

    def __init__(
        self,
        state_type: type[ContractState],
        amount_of: Callable[[Any], int],
        group_of: Callable[[Any], Hashable] | None,
    ) -> None:
        self.state_type = state_type
        self._amount_of = amount_of
        self._group_of = group_of
        # Invariant: each list of _order is sorted ascending and non-empty, and holds exactly
        # the entries (-amount, ref) of the refs that _where maps to its group and amount.
        self._order: dict[Hashable, list[Entry]] = {}
        self._where: dict[StateRef, tuple[Hashable, int]] = {}

    def add_all(self, states: Iterable[StateAndRef[ContractState]]) -> None:
        for sar in states:
            self.add(sar)

    def add(self, sar: StateAndRef[ContractState]) -> None:
        """Index ``sar`` if it is of this index's type (once: adding it again changes nothing)."""
        data = sar.state.data
        if not isinstance(data, self.state_type) or sar.ref in self._where:
            return
        amount = self._amount_of(data)
        group = None if self._group_of is None else self._group_of(data)
        insort(self._order.setdefault(group, []), (-amount, sar.ref))
        self._where[sar.ref] = (group, amount)

    def remove(self, ref: StateRef) -> None:
        """Forget ``ref`` (nothing happens if it is not indexed)."""
        where = self._where.pop(ref, None)
        if where is None:
            return
        group, amount = where
        order = self._order[group]
        del order[bisect_left(order, (-amount, ref))]
        if not order:
            del self._order[group]

    def groups(self, in_group: Callable[[Any], bool] | None) -> list[list[Entry]]:
        """The entry lists of the groups ``in_group`` accepts (all without it)."""
        return [order for group, order in self._order.items()
                if in_group is None or in_group(group)]

    def __len__(self) -> int:
        return len(self._where)


def largest_first(groups: list[list[Entry]]) -> Iterator[Entry]:
    """The entries of ``groups`` merged, largest amount first, ties by ref."""
    return iter(groups[0]) if len(groups) == 1 else heapq.merge(*groups)


def smallest_covering(
    groups: list[list[Entry]], target: int, eligible: Callable[[StateRef], bool]
) -> Entry | None:
    """The eligible entry of the smallest amount >= ``target`` (> 0), ties to the smallest ref.

    Each group's covering entries are a prefix of its list, made of runs of equal amounts,
    each run in increasing ref order. Groups are tried in the order of the best entry they
    could offer (their smallest covering amount, the first ref of its run), and within a group
    the runs from the smallest amount, each from its start, so a selection stops at the first
    eligible state that no other group can beat: it looks only at the states before it (those
    locked by other flows), however many groups and states there are."""
    candidates = []
    for order in groups:
        end = bisect_left(order, (1 - target,))  # past every entry whose amount is >= target
        if end:
            start = bisect_left(order, (order[end - 1][0],))
            candidates.append(((-order[end - 1][0], order[start][1]), end, order))
    candidates.sort(key=lambda candidate: candidate[0])
    best: Entry | None = None
    for bound, covering, order in candidates:
        if best is not None and bound >= (-best[0], best[1]):
            break  # neither this group nor any after it offers a smaller amount or ref
        end = covering
        while end > 0:
            start = bisect_left(order, (order[end - 1][0],))  # the run of that amount
            if best is not None and -order[start][0] > -best[0]:
                break  # the group's larger amounts cannot beat the best
            found = next((order[i] for i in range(start, end) if eligible(order[i][1])), None)
            if found is not None:
                if best is None or (-found[0], found[1]) < (-best[0], best[1]):
                    best = found
                break
            end = start
    return best
