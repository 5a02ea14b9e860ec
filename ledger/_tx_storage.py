"""``TransactionStorage``: the validated transactions (``service_hub.validated_transactions``).

Follows the storage model of ``ledger._services``. Database ``transactions``: the id's 32 bytes
-> sealed wire encoding of ``(sequence, SignedTransaction)``; the sequence number keeps the
order transactions were recorded in across restarts.

Database ``transactions_scratch``: transactions downloaded by a flow but not verified yet
(``stage``), keyed by the flow's run id (16 bytes) then the transaction id (32 bytes) ->
sealed wire encoding of the ``SignedTransaction``. Resolution stages what it downloads there,
so that a large history lives in storage rather than in the flow's locals; ``record`` promotes
a transaction out of it, and whatever a flow left staged is discarded when the flow ends.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from fibers import StateMachineRunId, wire
from fibers.services import Stream, journaled
from ledger._crypto import HASH_SIZE, SecureHash
from ledger._services import LedgerService
from ledger._transactions import SignedTransaction

if TYPE_CHECKING:
    from fibers import Node
    from fibers.storage import Storage, Txn
    from ledger._vault import VaultService

__all__ = ["TransactionStorage"]

_DB: Final = "transactions"
_SCRATCH: Final = "transactions_scratch"
log = logging.getLogger("ledger.transactions")


class TransactionStorage(LedgerService):
    """Every transaction this node has recorded as valid, by id.

    ``record`` does not verify: the flows that call it (finality, resolution) verify first.
    Recording also hands the transaction to the vault, in the same atomic step.
    """

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB, _SCRATCH])
        # Invariant: _txs holds exactly the committed transactions plus those recorded by
        # steps not yet committed, in recording order; _sizes has the same keys.
        self._txs: dict[SecureHash, SignedTransaction] = {}
        self._sizes: dict[SecureHash, int] = {}
        # Invariant: _staged mirrors the scratch database (plus uncommitted stages), and holds
        # no transaction that is in _txs.
        self._staged: dict[StateMachineRunId, dict[SecureHash, SignedTransaction]] = {}
        self._seq = itertools.count()
        self._feed: Stream[SignedTransaction] = Stream()
        self.reload_from_storage()
        node.on_flow_end(self.discard_staged)

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
        key, value = tx_id.bytes, wire.encode((next(self._seq), stx))
        vault: VaultService | None = getattr(self._node.services, "vault", None)
        if vault is not None:
            vault._notify(stx)  # first: it may raise (a state's code); its write joins ours
        self._txs[tx_id] = stx
        self._sizes[tx_id] = len(value)
        storage = self._storage
        if storage is not None:
            self._write(lambda txn: storage.put_sealed(txn, _DB, key, value))
        self._unstage(tx_id)
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

    def size_of(self, tx_id: SecureHash) -> int:
        """About how many bytes the recorded transaction ``tx_id`` takes to send (0 if it is
        not recorded)."""
        return self._sizes.get(tx_id, 0)

    # ----- the scratch area -----------------------------------------------------------------

    @journaled
    def stage(self, run_id: StateMachineRunId, stx: SignedTransaction) -> int:
        """Keep ``stx``, downloaded but not verified, in the scratch area of the flow
        ``run_id`` (written with its step); return its size in bytes, encoded.

        Staged transactions are not recorded: ``get`` does not see them, nor does the vault.
        ``record`` promotes one; the rest are discarded when the flow ends. Journaled, so a
        replayed flow does not stage again what it staged (and perhaps promoted) before.
        """
        if not isinstance(stx, SignedTransaction):
            raise TypeError(f"stage takes a SignedTransaction, got {type(stx).__qualname__}")
        value = wire.encode(stx)
        tx_id = stx.id
        if tx_id in self._txs:
            return len(value)
        self._staged.setdefault(run_id, {})[tx_id] = stx
        storage = self._storage
        if storage is not None:
            key = run_id.uuid.bytes + tx_id.bytes
            self._write(lambda txn: storage.put_sealed(txn, _SCRATCH, key, value))
        return len(value)

    def staged(self, run_id: StateMachineRunId, tx_id: SecureHash) -> SignedTransaction | None:
        """The transaction ``tx_id`` if the flow ``run_id`` staged it and it is not recorded
        yet, or None."""
        return self._staged.get(run_id, {}).get(tx_id)

    def staged_count(self, run_id: StateMachineRunId | None = None) -> int:
        """How many transactions the flow ``run_id`` (or every flow) has staged."""
        if run_id is not None:
            return len(self._staged.get(run_id, ()))
        return sum(map(len, self._staged.values()))

    def discard_staged(self, run_id: StateMachineRunId) -> None:
        """Forget what the flow ``run_id`` staged (the node calls this when a flow ends)."""
        dropped = self._staged.pop(run_id, None)
        storage = self._storage
        if dropped is None or storage is None:
            return
        prefix = run_id.uuid.bytes
        self._write(lambda txn: storage.delete_prefix(txn, _SCRATCH, prefix))
        self._flush()

    def _unstage(self, tx_id: SecureHash) -> None:
        storage = self._storage
        for run_id, staged in list(self._staged.items()):
            if staged.pop(tx_id, None) is None:
                continue
            if not staged:
                del self._staged[run_id]
            if storage is not None:
                self._write(_deleter(storage, run_id.uuid.bytes + tx_id.bytes))

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
        loaded: list[tuple[int, SecureHash, SignedTransaction, int]] = []
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _DB, b""):
                record = wire.decode(storage.unseal(_DB, key, blob))
                match record:
                    case (int() as seq, SignedTransaction() as stx):
                        loaded.append((seq, SecureHash(key), stx, len(blob)))
                    case _:
                        raise ValueError(f"record {key.hex()} in database {_DB!r} is not "
                                         "(sequence, SignedTransaction)")
        loaded.sort(key=lambda item: item[0])
        self._txs = {tx_id: stx for _, tx_id, stx, _ in loaded}
        self._sizes = {tx_id: size for _, tx_id, _, size in loaded}
        self._seq = itertools.count(loaded[-1][0] + 1 if loaded else 0)
        self._staged = self._load_staged(storage)

    def _load_staged(
        self, storage: Storage
    ) -> dict[StateMachineRunId, dict[SecureHash, SignedTransaction]]:
        staged: dict[StateMachineRunId, dict[SecureHash, SignedTransaction]] = {}
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _SCRATCH, b""):
                stx = wire.decode(storage.unseal(_SCRATCH, key, blob))
                if not isinstance(stx, SignedTransaction) or len(key) != 16 + HASH_SIZE:
                    raise ValueError(f"record {key.hex()} in database {_SCRATCH!r} is not a "
                                     "staged SignedTransaction")
                run_id = StateMachineRunId.parse(str(uuid.UUID(bytes=key[:16])))
                staged.setdefault(run_id, {})[SecureHash(key[16:])] = stx
        return staged

    def __repr__(self) -> str:
        return f"<TransactionStorage of {self._node.party}: {len(self._txs)} transactions>"


def _deleter(storage: Storage, key: bytes) -> Callable[[Txn], object]:
    """The write that deletes ``key`` from the scratch database (made here, so that storage
    sees this module as its writer; docs/architecture.md, "Storage")."""
    return lambda txn: storage.delete(txn, _SCRATCH, key)
