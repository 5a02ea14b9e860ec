"""The seam between a node and the network that carries its frames (see
docs/transport-and-runtime.md).

A ``Transport`` is one node's endpoint on a network. The node hands it outbound frames
(already-encoded bytes) with ``send(recipient, frame)``; whoever runs the node (its
``fibers.runtime.NodeRuntime``) calls ``start(deliver)`` once, and from then on the transport
calls ``deliver(sender, frames)`` for the frames that arrive. The sender is never something a
node writes: it is the endpoint's own party, and on a real network the authenticated peer of
the connection a frame came in on. ``stop()`` ends delivery; frames for a stopped endpoint are
the network's to keep or drop (the in-memory network keeps them until the endpoint starts
again; a TCP transport leaves them to the sender's re-send of unacknowledged messages).

Where a peer is reached is the network map's business: ``NodeInfo.address`` (see
``fibers.NetworkMap``) carries it for transports that need one.

``InMemoryNetwork`` is the in-process implementation: a hub handing out one endpoint per
party, with one FIFO queue of frames delivered on demand (``deliver_next``, ``deliver_all``),
so tests and simulations decide every interleaving; ``immediate=True`` makes it hand each
frame to a started recipient at once, for nodes that run on their own threads.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fibers._identity import Party

__all__ = ["Deliver", "InFlightMessage", "InMemoryNetwork", "InMemoryTransport", "Transport"]

log = logging.getLogger("fibers.transport")

Deliver = Callable[[Party, Sequence[bytes]], None]
"""A node's inbound entry: frames from one sender, in the order they were sent. It is called
on the transport's own thread and must not block (a ``NodeRuntime`` queues them)."""


class Transport(Protocol):
    """One node's endpoint on a network. Delivery is at-least-once and in order per pair of
    parties; the session layer removes duplicates."""

    @property
    def party(self) -> Party:
        """The party this endpoint speaks for: the sender of every frame it sends."""

    def start(self, deliver: Deliver) -> None:
        """Begin handing inbound frames to ``deliver``. Called once per start of the node."""

    def stop(self) -> None:
        """Stop delivering; no ``deliver`` call begins after this returns. Idempotent."""

    def send(self, recipient: Party, frame: bytes) -> None:
        """Queue ``frame`` for ``recipient``, sent as this endpoint's party. Must not block
        and must not call back into the sending node; may be called before ``start``."""


@dataclass(slots=True)
class InFlightMessage:
    """A frame on its way between two parties of an in-memory network. Treat it as read only
    (not frozen: one is made per frame, and a frozen dataclass costs three times as much to
    build)."""

    sender: Party
    recipient: Party
    frame: bytes


class InMemoryTransport:
    """The endpoint of one party on an ``InMemoryNetwork`` (get it from
    ``InMemoryNetwork.endpoint``)."""

    def __init__(self, network: InMemoryNetwork, party: Party) -> None:
        self._network = network
        self._party = party

    @property
    def party(self) -> Party:
        return self._party

    def start(self, deliver: Deliver) -> None:
        self._network.attach(self._party, deliver)

    def stop(self) -> None:
        self._network.detach(self._party)

    def send(self, recipient: Party, frame: bytes) -> None:
        self._network.post(InFlightMessage(self._party, recipient, frame))

    def __repr__(self) -> str:
        return f"<InMemoryTransport {self._party.name}>"


class InMemoryNetwork:
    """A deterministic in-process network: one FIFO queue of frames.

    Frames wait in ``queue`` until ``deliver_next``/``deliver_all`` hands them over, or, with
    ``immediate=True``, are handed to a started recipient as they are sent. Frames to a party
    whose endpoint is stopped (a stopped node) stay queued until it starts again; an immediate
    network hands them over, in order, when it does. Thread-safe.
    """

    def __init__(self, *, immediate: bool = False) -> None:
        self.immediate = immediate
        # Invariant: a frame is in `queue` or was handed to exactly one deliver callback.
        self.queue: deque[InFlightMessage] = deque()
        self._receivers: dict[str, Deliver] = {}
        self._endpoints: dict[str, InMemoryTransport] = {}
        self._lock = threading.RLock()

    def endpoint(self, party: Party) -> InMemoryTransport:
        """The endpoint of ``party`` (the same object each time for the same party)."""
        with self._lock:
            endpoint = self._endpoints.get(party.name)
            if endpoint is None or endpoint.party != party:
                endpoint = self._endpoints[party.name] = InMemoryTransport(self, party)
            return endpoint

    def is_started(self, party: Party) -> bool:
        """Whether ``party``'s endpoint takes frames."""
        return party.name in self._receivers

    def pending(self) -> list[InFlightMessage]:
        """Frames whose recipient is started, in delivery order."""
        with self._lock:
            return [m for m in self.queue if m.recipient.name in self._receivers]

    def deliver_next(self) -> InFlightMessage | None:
        """Deliver the oldest frame whose recipient is started; None when there is none."""
        taken = self.take_next()
        if taken is None:
            return None
        message, deliver = taken
        deliver(message.sender, [message.frame])
        return message

    def take_next(self) -> tuple[InFlightMessage, Deliver] | None:
        """Take the oldest frame whose recipient is started off the queue, with the callback
        it is for: the caller must hand it over (``deliver_next`` does). None when there is
        none."""
        with self._lock:
            queue, receivers = self.queue, self._receivers
            if queue and queue[0].recipient.name in receivers:
                message: InFlightMessage | None = queue.popleft()  # the common case
            else:
                message = self._take_next()
            if message is None:
                return None
            return message, receivers[message.recipient.name]

    def _take_next(self) -> InFlightMessage | None:
        queue, receivers = self.queue, self._receivers
        if queue and queue[0].recipient.name in receivers:
            return queue.popleft()  # the common case: the head is deliverable
        for message in queue:
            if message.recipient.name in receivers:
                queue.remove(message)
                return message
        return None

    def deliver_all(self) -> int:
        """Deliver every frame whose recipient is started, each recipient's in queue order
        (recipients in the order their first frame was queued), as a node draining its inbound
        queue would. Returns how many were delivered."""
        with self._lock:
            batches: dict[str, list[InFlightMessage]] = {}
            kept: deque[InFlightMessage] = deque()
            for message in self.queue:
                if message.recipient.name in self._receivers:
                    batches.setdefault(message.recipient.name, []).append(message)
                else:
                    kept.append(message)
            self.queue = kept
            calls = [(self._receivers[name], batch) for name, batch in batches.items()]
        for deliver, batch in calls:
            _deliver_runs(deliver, batch)
        return sum(len(batch) for _, batch in calls)

    # ----- the endpoints' side ----------------------------------------------------------------

    def attach(self, party: Party, deliver: Deliver) -> None:
        """Hand frames for ``party`` to ``deliver`` (its endpoint started)."""
        with self._lock:
            if party.name in self._receivers:
                raise RuntimeError(f"the endpoint of {party} is already started")
            self._receivers[party.name] = deliver
            if not self.immediate:
                return
            waiting = [m for m in self.queue if m.recipient.name == party.name]
            self.queue = deque(m for m in self.queue if m.recipient.name != party.name)
            if waiting:  # under the lock: frames sent meanwhile must not overtake these
                _deliver_runs(deliver, waiting)

    def detach(self, party: Party) -> None:
        """Stop handing frames to ``party``; they stay queued (its endpoint stopped)."""
        with self._lock:
            self._receivers.pop(party.name, None)

    def post(self, message: InFlightMessage) -> None:
        """Put ``message`` on the network (handed over at once when immediate)."""
        with self._lock:
            deliver = self._receivers.get(message.recipient.name) if self.immediate else None
            if deliver is None:
                self.queue.append(message)
                return
            # Under the lock, so two senders' frames reach the recipient in the order sent.
            deliver(message.sender, [message.frame])


def _deliver_runs(deliver: Deliver, messages: list[InFlightMessage]) -> None:
    """Hand ``messages`` (one recipient's) to ``deliver``, one call per run of frames from the
    same sender, keeping their order."""
    start = 0
    for i in range(1, len(messages) + 1):
        if i == len(messages) or messages[i].sender != messages[start].sender:
            deliver(messages[start].sender, [m.frame for m in messages[start:i]])
            start = i
