"""``TransactionStorage``: the validated transactions (``service_hub.validated_transactions``).

Follows the storage model of ``ledger._services``. Database ``transactions``: the id's 32 bytes
-> sealed wire encoding of ``(sequence, SignedTransaction)``; the sequence number keeps the
order transactions were recorded in across restarts.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Final

from fibers import _wire
from fibers._stream import Stream
from fibers.services import journaled
from ledger._crypto import SecureHash
from ledger._services import LedgerService
from ledger._transactions import SignedTransaction

if TYPE_CHECKING:
    from fibers._node import Node
    from fibers._storage import Txn
    from ledger._vault import VaultService

__all__ = ["TransactionStorage"]

_DB: Final = "transactions"
log = logging.getLogger("ledger.transactions")


class TransactionStorage(LedgerService):
    """Every transaction this node has recorded as valid, by id.

    ``record`` does not verify: the flows that call it (finality, resolution) verify first.
    Recording also hands the transaction to the vault, in the same atomic step.
    """

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB])
        # Invariant: _txs holds exactly the committed transactions plus those recorded by
        # steps not yet committed, in recording order.
        self._txs: dict[SecureHash, SignedTransaction] = {}
        self._seq = itertools.count()
        self._feed: Stream[SignedTransaction] = Stream()
        self.reload_from_storage()

    @journaled
    def record(self, stx: SignedTransaction) -> bool:
        """Record ``stx`` and let the vault consume and produce its states; False (and nothing
        changes) if it is already recorded.

        Once the write has committed, ``stx`` is published on ``track()`` and flows waiting
        in ``wait_for_ledger_commit(stx.id)`` are woken. Journaled: a flow replayed after a
        restart gets the recorded answer and the transaction is not recorded twice.
        """
        if not isinstance(stx, SignedTransaction):
            raise TypeError(f"record takes a SignedTransaction, got {type(stx).__qualname__}")
        tx_id = stx.id
        if tx_id in self._txs:
            return False
        key, value = tx_id.bytes, _wire.encode((next(self._seq), stx))
        vault: VaultService | None = getattr(self._node.services, "vault", None)
        if vault is not None:
            vault._notify(stx)  # first: it may raise (a state's code); its write joins ours
        self._txs[tx_id] = stx
        storage = self._storage
        if storage is not None:
            self._write(lambda txn: storage.put_sealed(txn, _DB, key, value))
        self._after_commit(lambda txn: self._landed(txn, key), lambda: self._published(stx))
        self._flush()
        return True

    def _landed(self, txn: Txn, key: bytes) -> bool:
        assert self._storage is not None
        return self._storage.get(txn, _DB, key) is not None

    def _published(self, stx: SignedTransaction) -> None:
        self._feed.publish(stx)
        self._node.signal(f"tx:{stx.id}")

    def get(self, tx_id: SecureHash) -> SignedTransaction | None:
        """The recorded transaction ``tx_id``, or None."""
        return self._txs.get(tx_id)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txs

    def __len__(self) -> int:
        return len(self._txs)

    def all(self) -> list[SignedTransaction]:
        """Every recorded transaction, in the order they were recorded (so each comes after
        the recorded transactions it spends from)."""
        return list(self._txs.values())

    def track(self) -> Stream[SignedTransaction]:
        """The feed of transactions recorded since this node started, each published once its
        record has committed. Like every ``Stream`` it replays its history to a new subscriber;
        ``all()`` is the snapshot that includes what was recorded before the start."""
        return self._feed

    def reload_from_storage(self) -> None:
        """Rebuild the index from storage (at start, and after steps failed to commit)."""
        storage = self._storage
        if storage is None:
            return
        loaded: list[tuple[int, SecureHash, SignedTransaction]] = []
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _DB, b""):
                record = _wire.decode(storage.unseal(_DB, key, blob))
                match record:
                    case (int() as seq, SignedTransaction() as stx):
                        loaded.append((seq, SecureHash(key), stx))
                    case _:
                        raise ValueError(f"record {key.hex()} in database {_DB!r} is not "
                                         "(sequence, SignedTransaction)")
        loaded.sort(key=lambda item: item[0])
        self._txs = {tx_id: stx for _, tx_id, stx in loaded}
        self._seq = itertools.count(loaded[-1][0] + 1 if loaded else 0)

    def __repr__(self) -> str:
        return f"<TransactionStorage of {self._node.party}: {len(self._txs)} transactions>"
