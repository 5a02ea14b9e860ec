"""Redelivery of sent messages that were not acknowledged, used by the commit stage
(fibers._commit; docs/architecture.md, "Fault paths"): a receiver that could not store a
message does not acknowledge it, and the sender's node re-sends it, backing off.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["Redelivery"]


class Redelivery:
    """Outbox messages sent and not yet acknowledged, re-sent until they are: first after
    ``interval``, then at doubling intervals up to ``interval * 2**max_doublings`` (a peer
    that is down or cannot store is not flooded)."""

    def __init__(self, interval: timedelta, max_doublings: int = 5) -> None:
        self._interval = interval
        self._max_doublings = max_doublings
        # Invariant: _due maps each key sent and not yet acknowledged to when it is re-sent
        # next and how often it was re-sent; next_due is the earliest of those times (None
        # when _due is empty, or a lower bound when keys were acknowledged since it was
        # computed). A field, not a property: a node reads it at every round.
        self._due: dict[bytes, tuple[datetime, int]] = {}
        self.next_due: datetime | None = None
        """When ``due`` next has keys to return (or a little earlier); read only."""

    def __len__(self) -> int:
        return len(self._due)

    def sent(self, key: bytes, now: datetime) -> None:
        """``key`` was sent (again, at restart, resets its backoff)."""
        due = now + self._interval
        self._due[key] = (due, 0)
        if self.next_due is None or due < self.next_due:
            self.next_due = due

    def acknowledged(self, key: bytes) -> bool:
        """The recipient has stored ``key``: it is not re-sent. Returns whether it was
        waiting for that (sent and not yet acknowledged)."""
        if self._due.pop(key, None) is None:
            return False
        if not self._due:
            self.next_due = None
        return True

    def due(self, now: datetime) -> list[bytes]:
        """The keys to re-send now, in the order they were first sent; each is rescheduled."""
        keys = [key for key, (when, _) in self._due.items() if when <= now]
        for key in keys:
            resent = self._due[key][1] + 1
            self._due[key] = (now + self._interval * 2 ** min(resent, self._max_doublings),
                              resent)
        self.next_due = min((when for when, _ in self._due.values()), default=None)
        return keys

    def clear(self) -> None:
        """Forget everything (node stop)."""
        self._due.clear()
        self.next_due = None
