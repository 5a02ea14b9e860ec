"""Session-init dedup records: a responder never runs the same session init twice, and the
records do not grow with the number of sessions a node has ever served.

Database ``dedup``, key ``session_prefix(initiator, session id, False)`` (see
``fibers._checkpoint_store``), value the state of that session on the responder's side:

=================  ==========================================================================
``b""``            accepted, the responder runs; the initiator may still re-send its init
``b"A"``           accepted, and the initiator acknowledged one of the responder's messages
``b"F"``           the responder finished; the initiator has not acknowledged anything yet
``b"E" + n``       ended: kept as the ``n``-th of the last ``RECENT_ENDED`` ended sessions
=================  ==========================================================================

Why an ended session's record can go. The initiator keeps its init in its outbox, and re-sends
it after a restart, until it knows the responder stored it. Every message the responder sends
in the session is sent only after the init is stored, so the initiator forgets its init (deletes
it from its outbox) in the same commit that stores, or drops, the first message it receives in
the session, and acknowledges that message only after the commit (see the router,
``fibers._router``).
So once the initiator acknowledged any of the responder's messages, it will never send the init
again, and once the responder has also finished, nothing can ask for the session any more.

Growth is bounded: records in states ``""``, ``"A"`` and ``"F"`` belong to running responders or
to finished ones whose initiator has not acknowledged anything yet (it is down or unreachable);
ended records are kept for the ``RECENT_ENDED`` most recently ended sessions only, so that even
a duplicate a misbehaving transport delivers late (after the acknowledgement) of one of those
is recognised, then evicted oldest first. The index ``b"\\xff" + n -> key`` orders them and
``b"\\xfe"`` holds the next ``n``; neither byte occurs in UTF-8, so no peer name collides.
"""

from __future__ import annotations

import struct
from typing import Final

from fibers._storage import NodeStorage, Txn

DB: Final = "dedup"
RECENT_ENDED: Final = 4096
"""How many ended sessions keep their dedup record (the oldest is evicted first)."""

_LIVE: Final = b""
_ACKED: Final = b"A"
_FINISHED: Final = b"F"
_ENDED: Final = b"E"
_INDEX: Final = b"\xff"
_NEXT: Final = b"\xfe"
_N = struct.Struct(">Q")


def accepted(store: NodeStorage, txn: Txn, key: bytes) -> None:
    """The responder accepted the session init ``key`` (in the commit of its first step)."""
    store.put(txn, DB, key, _LIVE)


def rejected(store: NodeStorage, txn: Txn, key: bytes) -> None:
    """The session init ``key`` was rejected: no responder ever runs for it. Recorded as a
    finished responder, so that the record ends once the initiator acknowledged the Reject."""
    store.put(txn, DB, key, _FINISHED)


def seen(store: NodeStorage, txn: Txn, key: bytes) -> bool:
    """Whether the session init ``key`` was accepted before (running, finished or ended)."""
    return store.get(txn, DB, key) is not None


def initiator_acknowledged(store: NodeStorage, txn: Txn, key: bytes) -> None:
    """The initiator of session ``key`` acknowledged one of our messages in it: it will never
    re-send its init."""
    state = store.get(txn, DB, key)
    if state == _LIVE:
        store.put(txn, DB, key, _ACKED)
    elif state == _FINISHED:
        _end(store, txn, key)


def responder_finished(store: NodeStorage, txn: Txn, key: bytes) -> None:
    """Our responder in session ``key`` finished (in the commit of its last step)."""
    state = store.get(txn, DB, key)
    if state == _ACKED:
        _end(store, txn, key)
    elif state == _LIVE:
        store.put(txn, DB, key, _FINISHED)


def _end(store: NodeStorage, txn: Txn, key: bytes) -> None:
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
