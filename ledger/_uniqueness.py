"""``UniquenessProvider``: a notary's record of consumed states (``service_hub.uniqueness``).

Follows the storage model of ``ledger._services``. Database ``notary_commits``: ``ref_key`` ->
sealed wire encoding of ``(consuming tx id, requesting party's name)``. A state is consumed at
most once, ever: the map only grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from fibers import Party, _wire
from fibers.services import journaled
from ledger._crypto import SecureHash
from ledger._notary_errors import NotaryError, NotaryException
from ledger._services import LedgerService, ref_from_key, ref_key
from ledger._states import StateRef

if TYPE_CHECKING:
    from fibers._node import Node
    from fibers._storage import Txn

__all__ = ["UniquenessProvider"]

_DB: Final = "notary_commits"


class UniquenessProvider(LedgerService):
    """Commits the inputs of notarised transactions; refuses any input consumed by another."""

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB])
        # Invariant: the committed commits plus those of steps not yet committed.
        self._commits: dict[StateRef, tuple[SecureHash, str]] = {}
        self.reload_from_storage()

    def commit(self, inputs: Sequence[StateRef], tx_id: SecureHash, caller: Party) -> None:
        """Mark ``inputs`` consumed by ``tx_id`` (requested by ``caller``).

        If an input is already consumed by another transaction, nothing is committed and
        ``NotaryException(NotaryError.Conflict(tx_id, {input: consuming tx}))`` is raised.
        Committing a transaction again is a no-op (re-notarisation is idempotent). The outcome
        is journaled: a notary flow replayed after a restart sees the answer it saw live.
        """
        conflicts = self._try_commit(tuple(inputs), tx_id, caller.name)
        self._flush()
        if conflicts:
            raise NotaryException(NotaryError.Conflict(tx_id, conflicts))

    @journaled
    def _try_commit(
        self, inputs: tuple[StateRef, ...], tx_id: SecureHash, caller: str
    ) -> dict[StateRef, SecureHash]:
        """Commit all of ``inputs`` or none; return the conflicting ones."""
        conflicts = {ref: self._commits[ref][0] for ref in inputs
                     if ref in self._commits and self._commits[ref][0] != tx_id}
        new = [ref for ref in dict.fromkeys(inputs) if ref not in self._commits]
        if conflicts or not new:
            return conflicts
        for ref in new:
            self._commits[ref] = (tx_id, caller)
        storage = self._storage
        if storage is not None:
            value = _wire.encode((tx_id, caller))
            keys = [ref_key(ref) for ref in new]

            def write(txn: Txn) -> None:
                for key in keys:
                    storage.put_sealed(txn, _DB, key, value)

            self._write(write)
        return {}

    def consumed_by(self, ref: StateRef) -> SecureHash | None:
        """The transaction that consumed ``ref`` according to this notary, or None."""
        commit = self._commits.get(ref)
        return None if commit is None else commit[0]

    def reload_from_storage(self) -> None:
        """Rebuild the index from storage (at start, and after steps failed to commit)."""
        storage = self._storage
        if storage is None:
            return
        commits: dict[StateRef, tuple[SecureHash, str]] = {}
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _DB, b""):
                match _wire.decode(storage.unseal(_DB, key, blob)):
                    case (SecureHash() as tx_id, str() as caller):
                        commits[ref_from_key(key)] = (tx_id, caller)
                    case _:
                        raise ValueError(f"record {key.hex()} in database {_DB!r} is not "
                                         "(tx id, caller)")
        self._commits = commits

    def __repr__(self) -> str:
        return f"<UniquenessProvider of {self._node.party}: {len(self._commits)} consumed states>"
