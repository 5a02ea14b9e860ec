"""The seam between a node and the network that carries its frames.

A node hands each outbound frame (already-encoded bytes) to its ``Transport`` and receives
inbound frames through ``Node.deliver(sender, frame)``. The in-memory implementation here is what
``MockNetwork`` and the embedded demo use; a TCP/TLS implementation plugs in the same way.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fibers._identity import Party

log = logging.getLogger("fibers.transport")


class Transport(Protocol):
    """Carries frames from this node to others. Delivery is at-least-once and in order per pair
    of nodes; the session layer removes duplicates."""

    def send(self, sender: Party, recipient: Party, frame: bytes) -> None:
        """Queue ``frame`` for ``recipient``. Must not block and must not call back into the
        sending node."""


@dataclass(frozen=True, slots=True)
class InFlightMessage:
    """A frame on its way between two nodes of an in-memory network."""

    sender: Party
    recipient: Party
    frame: bytes


# Receives a batch of (sender, frame) in order; a node handles a batch in one scheduler round.
Receiver = Callable[[list[tuple[Party, bytes]]], None]


class InMemoryNetwork:
    """A deterministic in-process network: one FIFO queue of frames, delivered on demand.

    Nodes attach a receiver under their party name; frames to a name with no receiver attached
    (a stopped node) stay queued until one attaches again.
    """

    def __init__(self) -> None:
        self.queue: deque[InFlightMessage] = deque()
        self._receivers: dict[str, Receiver] = {}

    def attach(self, party: Party, receiver: Receiver) -> None:
        """Deliver frames for ``party`` to ``receiver`` from now on."""
        self._receivers[party.name] = receiver

    def detach(self, party: Party) -> None:
        """Stop delivering to ``party``; its frames wait in the queue."""
        self._receivers.pop(party.name, None)

    def send(self, sender: Party, recipient: Party, frame: bytes) -> None:
        self.queue.append(InFlightMessage(sender, recipient, frame))

    def deliverable(self) -> list[InFlightMessage]:
        """Frames whose recipient is attached, in delivery order."""
        return [m for m in self.queue if m.recipient.name in self._receivers]

    def deliver(self, message: InFlightMessage) -> None:
        """Remove ``message`` from the queue and hand it to its recipient."""
        self.queue.remove(message)
        self._receivers[message.recipient.name]([(message.sender, message.frame)])

    def deliver_all(self) -> int:
        """Deliver every queued deliverable frame, each recipient's in one batch (in order),
        as a node draining its inbound queue would. Returns how many were delivered."""
        batches: dict[str, list[tuple[Party, bytes]]] = {}
        kept: deque[InFlightMessage] = deque()
        for message in self.queue:
            if message.recipient.name in self._receivers:
                batches.setdefault(message.recipient.name, []).append(
                    (message.sender, message.frame))
            else:
                kept.append(message)
        self.queue = kept
        for name, batch in batches.items():
            self._receivers[name](batch)
        return sum(len(b) for b in batches.values())

    def deliver_next(self) -> InFlightMessage | None:
        """Deliver the oldest deliverable frame; None when there is none."""
        queue, receivers = self.queue, self._receivers
        if queue and (receiver := receivers.get(queue[0].recipient.name)) is not None:
            message = queue.popleft()  # the common case: the head is deliverable
            receiver([(message.sender, message.frame)])
            return message
        for message in queue:
            if message.recipient.name in self._receivers:
                self.deliver(message)
                return message
        return None
