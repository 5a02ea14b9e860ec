"""Acknowledgement and redelivery bookkeeping of the commit stage (``fibers._commit``): the
outbox keys peers acknowledged, deleted with the next commit, and the re-sending of messages
not acknowledged yet. See docs/architecture.md, "Fault paths".
"""

from __future__ import annotations

from datetime import datetime

from fibers import _dedup as dedup
from fibers._checkpoint_store import CheckpointStore
from fibers._node_types import NetworkMap
from fibers._redelivery import Redelivery
from fibers._storage_api import Storage, Txn
from fibers.transport import Transport

__all__ = ["PLAIN", "WHOLE_SESSION", "Forget", "forget_acknowledged", "redeliver"]

Forget = tuple[bytes, int]
"""An outbox key to delete and what it is: ``WHOLE_SESSION`` (the key is the prefix of every
outbox key of one session), ``PLAIN``, or the seq of our message to an initiator (whose
acknowledgement may end its session's dedup record, see ``fibers._dedup``)."""

WHOLE_SESSION = -1
PLAIN = -2


def forget_acknowledged(store: Storage, txn: Txn, keys: list[Forget]) -> None:
    """Delete acknowledged messages (and the messages of sessions whose responder ended) from
    the outbox; an acknowledgement from an initiator may also end its session's dedup record
    (see ``fibers._dedup``)."""
    for key, what in keys:
        if what == WHOLE_SESSION:
            store.delete_prefix(txn, "outbox", key)
            continue
        store.delete(txn, "outbox", key)
        if what >= 0:  # our message ``what`` to an initiator: the dedup key is its session's,
            # the other direction (message key = session prefix + seq, see message_key)
            dedup.initiator_acknowledged(store, txn, key[:-5] + b"\0", what)


def redeliver(checkpoints: CheckpointStore, unacked: Redelivery, network_map: NetworkMap,
              transport: Transport, now: datetime) -> None:
    """Re-send the outbox messages unacknowledged for a redelivery interval: a receiver
    that could not store one did not acknowledge it."""
    for key, frame in checkpoints.outbox_records(unacked.due(now)):
        if frame is None:
            unacked.acknowledged(key)  # deleted meanwhile
            continue
        try:
            recipient = network_map.party(key.partition(b"\0")[0].decode())
        except KeyError:
            continue  # re-sent once the map knows it, and tracked until acknowledged
        transport.send(recipient, frame)
