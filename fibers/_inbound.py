"""What a node does with inbound frames it cannot use: counts of dropped frames by reason, and
the bound on how far ahead of its turn a session message may arrive.

Every frame a node drops is logged with the sender and the reason and counted in its
``FrameStats`` (``Node.frame_stats``), so operators see a misbehaving or incompatible peer; the
other frames of the same batch are handled as if the dropped one had never arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

REORDER_WINDOW: Final = 256
"""How many messages past the next expected one a session buffers out of order.

A message numbered ``next_recv_seq + REORDER_WINDOW`` or higher is dropped without an
acknowledgement (and counted as ``too_far_ahead``): the sender keeps it in its outbox and sends
it again when it re-sends what was not acknowledged (when it restores), by which time the gap is
filled. So a
session's out-of-order buffer holds at most ``REORDER_WINDOW - 1`` messages, whatever a peer
sends. Peers over an in-order transport only reach this after a loss, so the bound is wide
enough never to throttle an honest peer that sends a burst while one message is re-sent."""


@dataclass(slots=True)
class FrameStats:
    """Inbound frames a node dropped, by reason. Read with ``Node.frame_stats``; ``total`` is
    the sum. Counters only grow while the node runs (they restart at zero with the node)."""

    malformed: int = 0
    """Frames that are not a well-formed session message (bad bytes, wrong types, a field out
    of range, truncated, oversize)."""
    wrong_sender: int = 0
    """Session messages sent by a party that is not the session's counterparty."""
    too_far_ahead: int = 0
    """Session messages numbered beyond the reorder window (``REORDER_WINDOW``)."""
    unknown_session: int = 0
    """Messages from an initiator for a session this node has no record of (no running flow,
    no session-init dedup record): not acknowledged, so the initiator re-sends them after the
    init they follow (see ``fibers._dedup``)."""
    failed: int = 0
    """Frames whose handling raised an unexpected error (a bug: the error is logged in full)."""
    stale_acks: int = 0
    """Acknowledgement entries (not frames) ignored because they named no message sent to
    their sender and awaiting its acknowledgement: a duplicate (the message was re-sent and
    acknowledged twice), or a peer acknowledging what it was never sent, or not yet. Not in
    ``total``: the frame that carried them was used."""

    @property
    def total(self) -> int:
        """Every frame dropped, whatever the reason."""
        return sum(getattr(self, f.name) for f in fields(self) if f.name != "stale_acks")
