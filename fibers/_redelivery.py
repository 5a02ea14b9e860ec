"""Redelivery of sent messages that were not acknowledged, used by the commit stage
(fibers._commit; docs/architecture.md, "Fault paths"): a receiver that could not store a
message does not acknowledge it, and the sender's node re-sends it, backing off.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime, timedelta

__all__ = ["Redelivery"]


class Redelivery:
    """Outbox messages sent and not yet acknowledged, re-sent until they are: first after
    ``interval``, then at doubling intervals up to ``interval * 2**max_doublings`` (a peer
    that is down or cannot store is not flooded).

    The schedule is a heap, so that ``due`` costs in proportion to the keys that are due, not
    to every key waiting: a node with many messages to a peer that is down (or, after a
    restart, many flows woken one after another) re-sends a few at a time without walking
    them all at each round."""

    def __init__(self, interval: timedelta, max_doublings: int = 5) -> None:
        self._interval = interval
        self._max_doublings = max_doublings
        self._seq = itertools.count()
        # Invariant: _due maps each key sent and not yet acknowledged to the number of its one
        # live entry in _heap, (when it is re-sent next, that number, key, how often it was
        # re-sent); an entry whose number is not its key's in _due is stale (acknowledged, or
        # sent again) and is dropped when it reaches the top. next_due is at or before the
        # earliest live entry (None when _due is empty). A field, not a property: a node
        # reads it at every round.
        self._due: dict[bytes, int] = {}
        self._heap: list[tuple[datetime, int, bytes, int]] = []
        self.next_due: datetime | None = None
        """When ``due`` next has keys to return (or a little earlier); read only."""

    def __len__(self) -> int:
        return len(self._due)

    def sent(self, key: bytes, now: datetime) -> None:
        """``key`` was sent (again, at restart, resets its backoff)."""
        self._schedule(key, now + self._interval, 0)

    def sent_all(self, keys: list[bytes], now: datetime) -> None:
        """Every one of ``keys`` was sent (a restart's re-send): ``sent`` for each, in one
        heap rebuild rather than one push each."""
        if not keys:
            return
        when, due, heap, numbers = now + self._interval, self._due, self._heap, self._seq
        for key in keys:
            number = next(numbers)
            due[key] = number
            heap.append((when, number, key, 0))
        heapq.heapify(heap)
        if self.next_due is None or when < self.next_due:
            self.next_due = when

    def _schedule(self, key: bytes, when: datetime, resent: int) -> None:
        number = next(self._seq)
        self._due[key] = number
        heapq.heappush(self._heap, (when, number, key, resent))
        if self.next_due is None or when < self.next_due:
            self.next_due = when

    def acknowledged(self, key: bytes) -> bool:
        """The recipient has stored ``key``: it is not re-sent. Returns whether it was
        waiting for that (sent and not yet acknowledged)."""
        if self._due.pop(key, None) is None:
            return False
        if not self._due:
            self._heap.clear()
            self.next_due = None
        return True

    def due(self, now: datetime) -> list[bytes]:
        """The keys to re-send now (earliest first); each is re-sent again later, backing
        off, until acknowledged."""
        heap, due, keys = self._heap, self._due, []
        later: list[tuple[bytes, datetime, int]] = []
        while heap and heap[0][0] <= now:
            _, number, key, resent = heapq.heappop(heap)
            if due.get(key) != number:
                continue
            keys.append(key)
            resent += 1
            later.append((key, now + self._interval * 2 ** min(resent, self._max_doublings),
                          resent))
        while heap and due.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # stale tops: next_due is then exact
        self.next_due = heap[0][0] if heap else None
        for key, when, resent in later:
            self._schedule(key, when, resent)
        return keys

    def clear(self) -> None:
        """Forget everything (node stop)."""
        self._due.clear()
        self._heap.clear()
        self.next_due = None
