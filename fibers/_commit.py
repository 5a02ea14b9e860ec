"""The commit stage of the step pipeline: what a scheduler round wrote, committed as one group,
and what may only happen once it is durable (sending messages, settling results,
acknowledging what was received).

A round's writes are grouped in *units*. Each flow that did something in the round has one
unit (its received messages, its init record and its step, so they are stored together or not
at all); node-level work (forgetting acknowledged messages, rejecting a session, storing for a
parked flow, a service's writes outside flows) gets units of its own. Each unit is one nested
transaction of the group commit (``NodeStorage.group``): a unit whose writes fail is rolled
back alone; a failed group commit fails every unit that wrote something.

Invariant: a unit's ``after`` actions and ``acks`` happen only if its writes committed, so
nothing is acknowledged before it is stored and no message leaves before the step that
produced it is recorded. A unit without writes depends on no write of this round and always
counts as committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fibers._identity import Party
from fibers._storage import NodeStorage, Txn

if TYPE_CHECKING:
    from fibers._state_machine import FlowStateMachine

__all__ = ["AckEntry", "CommitQueue", "CommitResult", "Redelivery", "Unit", "commit_units"]

log = logging.getLogger("fibers.node")

AckEntry = tuple[int, bool, int]
"""(session id, to initiator, seq) of one received message, as an ``Ack`` lists it."""


@dataclass(eq=False, slots=True)
class Unit:
    """Writes stored together, and what waits for them."""

    owner: FlowStateMachine | None = None
    writes: list[Callable[[Txn], object]] = field(default_factory=list)
    after: list[Callable[[], object]] = field(default_factory=list)
    acks: list[tuple[Party, AckEntry]] = field(default_factory=list)
    # The owner's start record when this unit writes it (the flow's first step): a flow whose
    # unit failed has no stored record to be retried from but this one.
    start: bytes | None = None
    on_failure: Callable[[Exception], object] | None = None

    def ack(self, sender: Party, entry: AckEntry) -> None:
        """Acknowledge ``entry`` to ``sender`` once this unit committed."""
        self.acks.append((sender, entry))


@dataclass(slots=True)
class CommitResult:
    """The outcome of one group commit."""

    committed: list[Unit]
    failed: list[tuple[Unit, Exception]]

    def acks_by_peer(self) -> list[tuple[Party, list[AckEntry]]]:
        """The acknowledgements of the committed units, one list per peer (sent as one Ack)."""
        by_peer: dict[str, tuple[Party, list[AckEntry]]] = {}
        for unit in self.committed:
            for peer, entry in unit.acks:
                by_peer.setdefault(peer.name, (peer, []))[1].append(entry)
        return list(by_peer.values())


class CommitQueue:
    """The units of the current round (scheduler thread only)."""

    def __init__(self) -> None:
        # Invariant: _by_flow maps each flow to its unit in _units (one unit per flow per
        # round); both are emptied together by ``take``.
        self._units: list[Unit] = []
        self._by_flow: dict[FlowStateMachine, Unit] = {}
        self._loose: Unit | None = None

    def __bool__(self) -> bool:
        return bool(self._units)

    def for_flow(self, fiber: FlowStateMachine) -> Unit:
        """``fiber``'s unit of this round, made on first use."""
        unit = self._by_flow.get(fiber)
        if unit is None:
            unit = self._by_flow[fiber] = self.new_unit(fiber)
        return unit

    def new_unit(self, owner: FlowStateMachine | None = None) -> Unit:
        """A unit of its own (node-level work when ``owner`` is None)."""
        unit = Unit(owner)
        self._units.append(unit)
        return unit

    def loose(self) -> Unit:
        """The round's unit for service writes and actions made outside any flow."""
        if self._loose is None:
            self._loose = self.new_unit()
        return self._loose

    def take(self) -> list[Unit]:
        """The round's units in the order they were made; the queue starts a new round."""
        units, self._units = self._units, []
        self._by_flow.clear()
        self._loose = None
        return units

    def clear(self) -> None:
        """Forget the round (node stop: nothing of it is stored)."""
        self.take()


def commit_units(storage: NodeStorage | None, units: list[Unit], who: str) -> CommitResult:
    """Write ``units`` in one group commit (each in its nested transaction)."""
    failed: dict[int, tuple[Unit, Exception]] = {}
    writing = [unit for unit in units if unit.writes]
    if writing and storage is not None:
        try:
            with storage.group() as group:
                for unit in writing:
                    error = group.step(_writer(unit))
                    if error is not None:
                        failed[id(unit)] = (unit, error)
        except Exception as exc:  # the whole commit failed: nothing of it is stored
            log.error("%s: a group commit failed", who, exc_info=exc)
            failed = {id(unit): (unit, exc) for unit in writing}
    committed = [unit for unit in units if id(unit) not in failed]
    return CommitResult(committed, list(failed.values()))


def _writer(unit: Unit) -> Callable[[Txn], None]:
    def write(txn: Txn) -> None:
        for one in unit.writes:
            one(txn)

    return write


class Redelivery:
    """Outbox messages sent and not yet acknowledged, re-sent until they are: first after
    ``interval``, then at doubling intervals up to ``interval * 2**max_doublings`` (a peer
    that is down or cannot store is not flooded)."""

    def __init__(self, interval: timedelta, max_doublings: int = 5) -> None:
        self._interval = interval
        self._max_doublings = max_doublings
        # Invariant: _due maps each key sent and not yet acknowledged to when it is re-sent
        # next and how often it was re-sent; _next is the earliest of those times (None when
        # _due is empty, or a lower bound when keys were acknowledged since it was computed).
        self._due: dict[bytes, tuple[datetime, int]] = {}
        self._next: datetime | None = None

    def __len__(self) -> int:
        return len(self._due)

    @property
    def next_due(self) -> datetime | None:
        """When ``due`` next has keys to return (or a little earlier)."""
        return self._next

    def sent(self, key: bytes, now: datetime) -> None:
        """``key`` was sent (again, at restart, resets its backoff)."""
        due = now + self._interval
        self._due[key] = (due, 0)
        if self._next is None or due < self._next:
            self._next = due

    def acknowledged(self, key: bytes) -> None:
        """The recipient has stored ``key``: it is not re-sent."""
        self._due.pop(key, None)
        if not self._due:
            self._next = None

    def due(self, now: datetime) -> list[bytes]:
        """The keys to re-send now, in the order they were first sent; each is rescheduled."""
        keys = [key for key, (when, _) in self._due.items() if when <= now]
        for key in keys:
            resent = self._due[key][1] + 1
            self._due[key] = (now + self._interval * 2 ** min(resent, self._max_doublings),
                              resent)
        self._next = min((when for when, _ in self._due.values()), default=None)
        return keys

    def clear(self) -> None:
        """Forget everything (node stop)."""
        self._due.clear()
        self._next = None
