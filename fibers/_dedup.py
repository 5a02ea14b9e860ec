"""Session-init dedup records: a responder never runs the same session init twice, a message
from an initiator is never acknowledged and dropped while the initiator may still need it
consumed, and the records do not grow with the number of sessions a node has ever served.

Database ``dedup``, key ``session_prefix(initiator, session id, False)`` (see
``fibers._checkpoint_store``), value the state of that session on the responder's side:

=================  ==========================================================================
``b""``            accepted, the responder runs; the initiator may still re-send its init
``b"F" + s``       the responder finished; its final message of the session (its ``End`` or
                   ``ErrorEnd``, or the ``Reject`` of a refused init) is number ``s``
``b"E" + n``       ended: kept as the ``n``-th of the last ``RECENT_ENDED`` ended sessions
=================  ==========================================================================

(``b"A"`` and a bare ``b"F"``, written by earlier versions, are read as ``b""`` and as a
finished session whose final message is any one.)

What the router does with a message from an initiator for a session no flow routes
(``Router._on_unrouted``):

(a) with a record, the session ran (or was refused) and our side is over: the message is
    acknowledged and dropped, nobody will consume it;
(b) without one, the init was never stored here: it was lost in a crash before its first
    commit, or it is still on its way (the transport reordered them). The message is dropped
    *without* acknowledgement (``FrameStats.unknown_session``): the initiator still holds it
    and its init in its outbox and re-sends both until acknowledged, so the responder starts
    from the init and then receives the message in order. Acknowledging it would strand the
    responder waiting for a message its sender forgot.

(b) is only safe if no initiator ever holds an unacknowledged message of a session whose record
was pruned (it would re-send it forever). Three rules make that so:

1. The initiator forgets its init (deletes it from its outbox) in the commit that stores, or
   drops, the first message it receives in the session, before acknowledging that message
   (``CommitStage.init_implied``): the responder sends nothing before storing the init.
2. Once the initiator learns that the responder's side ended (it receives its ``End``,
   ``ErrorEnd`` or ``Reject``, routed to its flow, stored for its parked flow, or for a
   session it no longer runs), it deletes every message of its own in that session from its
   outbox in the commit that stores, or drops, that final message, and acknowledges the final
   message only after that commit (``CommitStage.session_over``; the acknowledgements of a
   round wait for its deletions, see ``CommitStage._acked``). From then on it sends nothing
   more in the session: its flow does not emit messages to a counterparty that ended
   (``SessionTable.post``), and a flow that already ended sends nothing at all.
3. A responder always ends its side with a message, even when the initiator ended first
   (``SessionTable.close``; a killed parked responder too, ``fibers._kill``), and the record
   records its number (``F + s``, in the commit of that last step, before the message leaves).
   The record ends only when the initiator acknowledges exactly that message
   (``initiator_acknowledged``), not merely one of the responder's messages: an earlier
   message says nothing of what the initiator still holds, since the responder's
   acknowledgements of the initiator's messages may have been lost (a crash after the commit
   that stored them, before they were sent), and the initiator re-sends what they were for.
   An acknowledgement counts whether it came in an ``Ack`` or riding on a message of the
   initiator's (``AckedSessionMessage``; its carrier may be dropped, its acks are still
   honoured), and only for a message of ours awaiting one (``CommitStage.acknowledged``):
   the final message is, from the commit after which it is sent (and from the restart that
   re-sends it) until its first acknowledgement, so that one is never ignored.

So when a record ends, the initiator has processed the responder's final message, hence
(rule 2) holds no message of the session any more and will never send one again, and (rule 1)
no init either. Copies already on the wire, or re-sent from the redelivery schedule before the
deletion, reach a node without the record and are dropped unacknowledged: harmless, since their
sender no longer holds them (redelivery skips keys no longer in the outbox). A Reject is number
0 of the responder's side; an initiator side message (``to_initiator``) for a session no flow
routes is always acknowledged and dropped: an initiator's session exists from before its init
left until its flow ends (or is held back or parked, which the router checks first).

Growth is bounded: records in states ``""`` and ``"F"`` belong to running responders or to
finished ones whose initiator has not acknowledged their final message yet (it is down or
unreachable); ended records are kept for the ``RECENT_ENDED`` most recently ended sessions only,
so that even a duplicate a misbehaving transport delivers late (after the acknowledgement) of
one of those is recognised, then evicted oldest first. The index ``b"\\xff" + n -> key`` orders
them and ``b"\\xfe"`` holds the next ``n``; neither byte occurs in UTF-8, so no peer name
collides.
"""

from __future__ import annotations

import struct
from typing import Final

from fibers._storage_api import Storage, Txn

DB: Final = "dedup"
RECENT_ENDED: Final = 4096
"""How many ended sessions keep their dedup record (the oldest is evicted first)."""

_LIVE: Final = b""
_ACKED: Final = b"A"  # written by earlier versions; read as _LIVE
_FINISHED: Final = b"F"
_ENDED: Final = b"E"
_INDEX: Final = b"\xff"
_NEXT: Final = b"\xfe"
_N = struct.Struct(">Q")


def accepted(store: Storage, txn: Txn, key: bytes) -> None:
    """The responder accepted the session init ``key`` (in the commit of its first step)."""
    store.put(txn, DB, key, _LIVE)


def rejected(store: Storage, txn: Txn, key: bytes) -> None:
    """The session init ``key`` was rejected: no responder ever runs for it. Recorded as a
    finished responder whose final message is the Reject (number 0), so that the record ends
    once the initiator acknowledged it."""
    store.put(txn, DB, key, _FINISHED + _N.pack(0))


def seen(store: Storage, txn: Txn, key: bytes) -> bool:
    """Whether the session init ``key`` was accepted before (running, finished or ended)."""
    return store.get(txn, DB, key) is not None


def initiator_acknowledged(store: Storage, txn: Txn, key: bytes, seq: int) -> None:
    """The initiator of session ``key`` acknowledged our message number ``seq`` in it: if that
    was the responder's final message, the initiator holds nothing of the session any more and
    the record ends."""
    state = store.get(txn, DB, key)
    if state in (_FINISHED, _FINISHED + _N.pack(seq)):
        _end(store, txn, key)


def responder_finished(store: Storage, txn: Txn, key: bytes, final_seq: int) -> None:
    """Our responder in session ``key`` finished (in the commit of its last step), and
    ``final_seq`` is the number of its final message in the session (sent after this
    commit)."""
    state = store.get(txn, DB, key)
    if state in (_LIVE, _ACKED):
        store.put(txn, DB, key, _FINISHED + _N.pack(final_seq))


def _end(store: Storage, txn: Txn, key: bytes) -> None:
    counter = store.get(txn, DB, _NEXT)
    n = _N.unpack(counter)[0] if counter is not None else 0
    store.put(txn, DB, _NEXT, _N.pack(n + 1))
    store.put(txn, DB, key, _ENDED + _N.pack(n))
    store.put(txn, DB, _INDEX + _N.pack(n), key)
    if n < RECENT_ENDED:
        return
    evicted = _INDEX + _N.pack(n - RECENT_ENDED)
    old_key = store.get(txn, DB, evicted)
    if old_key is not None:
        store.delete(txn, DB, evicted)
        if store.get(txn, DB, old_key) == _ENDED + _N.pack(n - RECENT_ENDED):
            store.delete(txn, DB, old_key)
