"""A replaying event stream: the feed behind progress tracking.

A :class:`Stream` records every value published to it. A subscriber first receives that whole
history (and then the completion or error, if the stream has ended), then live values, so an
observer that attaches in the middle of a flow sees exactly what an early one saw.

Threading: a stream is single-threaded. It is published to, subscribed to and unsubscribed from
by one thread (the node's scheduler thread, which runs the flows that publish) and it takes no
locks. Observers in other threads must hand values over themselves (a queue, ``call_soon``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Stream", "Subscription"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


class Subscription(Generic[T]):
    """One subscriber's attachment to a :class:`Stream`; made by :meth:`Stream.subscribe` only."""

    def __init__(
        self,
        stream: Stream[T],
        on_next: Callable[[T], object],
        on_error: Callable[[BaseException], object] | None,
        on_completed: Callable[[], object] | None,
    ) -> None:
        self._stream: Stream[T] | None = stream
        self._on_next = on_next
        self._on_error = on_error
        self._on_completed = on_completed
        # Invariant: history[:cursor] has been delivered to this subscriber, in order.
        self._cursor = 0
        self._terminal_delivered = False

    @property
    def active(self) -> bool:
        """True until unsubscribed, a callback of this subscriber raised, or the end arrived."""
        return self._stream is not None

    def unsubscribe(self) -> None:
        """Stop delivery to this subscriber. Idempotent; safe to call from inside a callback."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream._detach(self)

    def _deliver_one(self, history: list[T], error: BaseException | None, ended: bool) -> bool:
        """Deliver the next pending notification, if any; return whether one was delivered."""
        if self._cursor < len(history):
            value = history[self._cursor]
            self._cursor += 1
            self._call(self._on_next, value)
            return True
        if ended and not self._terminal_delivered:
            self._terminal_delivered = True
            if error is not None:
                self._call(self._on_error, error)
            else:
                self._call(self._on_completed)
            self.unsubscribe()  # nothing more can arrive; let the stream forget this subscriber
            return True
        return False

    def _call(self, callback: Callable[..., object] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            # An observer must never break the flow that publishes: a failing subscriber is
            # dropped and the failure logged, and everyone else keeps receiving.
            _log.exception("stream subscriber %r raised; it has been unsubscribed", callback)
            self.unsubscribe()


class Stream(Generic[T]):
    """A replaying stream of values of type ``T``, ended at most once by completion or error.

    Contract:

    * :meth:`subscribe` first delivers the full history (every value published so far, then the
      completion or error if the stream has ended), then every later value, in publication order.
    * Callbacks run synchronously inside :meth:`publish`, :meth:`complete`, :meth:`fail` and
      :meth:`subscribe`. A call made from inside a callback does not recurse: its deliveries
      are queued and made when the outer delivery loop regains control, so every subscriber
      still sees values in publication order.
    * A callback that raises is unsubscribed and its exception logged; it never propagates to the
      publisher.
    * The history is kept for the life of the stream (the life of its progress tracker).
    * Single-threaded: see the module docstring.
    """

    def __init__(self) -> None:
        self._history: list[T] = []
        self._ended = False
        self._error: BaseException | None = None
        self._subscriptions: list[Subscription[T]] = []
        # True while a delivery loop runs further up the stack; nested calls only queue.
        self._delivering = False

    @property
    def values(self) -> list[T]:
        """A copy of every value published so far, oldest first."""
        return list(self._history)

    @property
    def has_ended(self) -> bool:
        """True once :meth:`complete` or :meth:`fail` has been called."""
        return self._ended

    @property
    def error(self) -> BaseException | None:
        """The exception the stream failed with, or None."""
        return self._error

    def publish(self, value: T) -> None:
        """Record ``value`` and deliver it to every subscriber.

        Raises RuntimeError if the stream has ended: an ended stream's history is final.
        """
        self._check_open("publish to")
        self._history.append(value)
        self._deliver()

    def complete(self) -> None:
        """End the stream normally; subscribers' ``on_completed`` is called once."""
        self._check_open("complete")
        self._ended = True
        self._deliver()

    def fail(self, exc: BaseException) -> None:
        """End the stream with ``exc``; subscribers' ``on_error`` is called once with it."""
        self._check_open("fail")
        self._ended = True
        self._error = exc
        self._deliver()

    def subscribe(
        self,
        on_next: Callable[[T], object],
        on_error: Callable[[BaseException], object] | None = None,
        on_completed: Callable[[], object] | None = None,
    ) -> Subscription[T]:
        """Attach a subscriber and replay the history to it; see the class contract.

        A stream that fails while ``on_error`` is None ends silently for that subscriber.
        """
        subscription = Subscription(self, on_next, on_error, on_completed)
        self._subscriptions.append(subscription)
        self._deliver()
        return subscription

    def _check_open(self, action: str) -> None:
        if self._ended:
            raise RuntimeError(
                f"cannot {action} a stream that has already ended"
                f" ({'failed' if self._error is not None else 'completed'})"
            )

    def _detach(self, subscription: Subscription[T]) -> None:
        self._subscriptions.remove(subscription)

    def _deliver(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            # One notification per subscriber per pass, so that in the ordinary case each value
            # reaches every subscriber before the next one is delivered to anybody.
            progressed = True
            while progressed:
                progressed = False
                for subscription in list(self._subscriptions):
                    if subscription.active and subscription._deliver_one(
                        self._history, self._error, self._ended
                    ):
                        progressed = True
        finally:
            self._delivering = False

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else "completed" if self._ended else "open"
        return (
            f"<Stream {state}, {len(self._history)} values, {len(self._subscriptions)} subscribers>"
        )
