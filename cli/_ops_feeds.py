"""Plumbing of ``NodeOps``: feeds (subscriptions with callbacks that can never break the
node), and the drivers that move an in-process network one event at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["FeedSubscription", "Listeners", "NetworkDriver", "TrackedStart"]

T = TypeVar("T")
log = logging.getLogger("cli.ops")


class NetworkDriver(Protocol):
    """Moves the network the node runs on by one event (e.g. ``EmbeddedNetwork`` or
    ``MockNetwork``, both on ``fibers.runtime.ManualDriver``)."""

    def step(self) -> bool:
        """Deliver one message or fire the next timer; False when nothing can move."""


class FeedSubscription:
    """One observer's attachment to a feed of :class:`NodeOps`; ``unsubscribe`` is idempotent."""

    def __init__(self, on_close: Callable[[], object]) -> None:
        self._on_close: Callable[[], object] | None = on_close

    @property
    def active(self) -> bool:
        """True until unsubscribed (or the feed ended)."""
        return self._on_close is not None

    def unsubscribe(self) -> None:
        """Stop deliveries to this observer."""
        close, self._on_close = self._on_close, None
        if close is not None:
            close()


@dataclass(frozen=True)
class TrackedStart:
    """A flow started with its progress feed (``NodeOps.start_tracked_flow``)."""

    run_id: str
    flow_class: str
    feed: FeedSubscription

    @property
    def short(self) -> str:
        """The first 8 hex digits of the run id."""
        return self.run_id[:8]


class Listeners(Generic[T]):
    """Callbacks of a feed; one that raises is logged and dropped, never breaking the node."""

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[T], object]] = {}
        self._next = 0

    def add(self, callback: Callable[[T], object]) -> FeedSubscription:
        key, self._next = self._next, self._next + 1
        self._callbacks[key] = callback
        return FeedSubscription(lambda: self._callbacks.pop(key, None))

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def publish(self, value: T) -> None:
        for key, callback in list(self._callbacks.items()):
            try:
                callback(value)
            except Exception:
                log.exception("a feed observer raised; it has been unsubscribed")
                self._callbacks.pop(key, None)
