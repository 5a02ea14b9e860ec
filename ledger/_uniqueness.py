"""``UniquenessProvider``: a notary's record of consumed states (``service_hub.uniqueness``).

Follows the storage model of ``ledger._services``. Database ``notary_commits``: ``ref_key`` ->
sealed wire encoding of ``(consuming tx id, requesting party's name)``. A state is consumed at
most once, ever: the map only grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from fibers import Party, wire
from fibers.services import journaled
from ledger._crypto import HASH_SIZE, SecureHash
from ledger._notary_errors import NotaryError, NotaryException
from ledger._services import LedgerService, ref_from_key, ref_key
from ledger._states import MAX_OUTPUT_INDEX, StateRef

if TYPE_CHECKING:
    from fibers import Node
    from fibers.storage import Txn

__all__ = ["UniquenessProvider", "check_refs"]

_DB: Final = "notary_commits"


class UniquenessProvider(LedgerService):
    """Commits the inputs of notarised transactions; refuses any input consumed by another."""

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_DB])
        # Invariant: _commits holds exactly what storage holds (it changes only once a write is
        # stored, or on reload); _pending holds the commits of steps not yet stored, and is
        # emptied when they are stored (promoted) or lost (reload). Conflicts are checked
        # against both, so two steps of one group commit cannot consume a state twice.
        self._commits: dict[StateRef, tuple[SecureHash, str]] = {}
        self._pending: dict[StateRef, tuple[SecureHash, str]] = {}
        self.reload_from_storage()

    def commit(self, inputs: Sequence[StateRef], tx_id: SecureHash, caller: Party) -> None:
        """Mark ``inputs`` consumed by ``tx_id`` (requested by ``caller``).

        Every input is checked first: if one is not a well-formed ``StateRef`` (say an index of
        -1 or beyond 32 bits, which a decoded value can no longer carry but a caller in this
        process can), nothing changes and ``NotaryException(NotaryError.TransactionInvalid)``
        names it. If an input is already consumed by another transaction, nothing is committed
        and ``NotaryException(NotaryError.Conflict(tx_id, {input: consuming tx}))`` is raised.
        Committing a transaction again is a no-op (re-notarisation is idempotent). The outcome
        is journaled: a notary flow replayed after a restart sees the answer it saw live.
        """
        refs = tuple(inputs)
        check_refs(refs, tx_id)
        conflicts = self._try_commit(refs, tx_id, caller.name)
        self._flush()
        if conflicts:
            raise NotaryException(NotaryError.Conflict(tx_id, conflicts))

    @journaled
    def _try_commit(
        self, inputs: tuple[StateRef, ...], tx_id: SecureHash, caller: str
    ) -> dict[StateRef, SecureHash]:
        """Commit all of ``inputs`` or none; return the conflicting ones."""
        conflicts = {}
        for ref in inputs:
            by = self._consumer(ref)
            if by is not None and by != tx_id:
                conflicts[ref] = by
        new = [ref for ref in dict.fromkeys(inputs) if self._consumer(ref) is None]
        if conflicts or not new:
            return conflicts
        storage = self._storage
        if storage is None:
            self._commits.update(dict.fromkeys(new, (tx_id, caller)))
            return {}
        # Everything that can fail is done before memory changes.
        value = wire.encode((tx_id, caller))
        keys = [ref_key(ref) for ref in new]

        def write(txn: Txn) -> None:
            for key in keys:
                storage.put_sealed(txn, _DB, key, value)

        def landed(txn: Txn) -> bool:
            return storage.get(txn, _DB, keys[0]) is not None

        def promote() -> None:
            for ref in new:
                entry = self._pending.pop(ref, None)
                if entry is not None:
                    self._commits[ref] = entry

        self._write(write)
        self._pending.update(dict.fromkeys(new, (tx_id, caller)))
        self._after_commit(landed, promote)
        return {}

    def _consumer(self, ref: StateRef) -> SecureHash | None:
        commit = self._commits.get(ref) or self._pending.get(ref)
        return None if commit is None else commit[0]

    def consumed_by(self, ref: StateRef) -> SecureHash | None:
        """The transaction that consumed ``ref`` according to this notary (stored, or in a
        step not yet stored), or None."""
        return self._consumer(ref)

    def reload_from_storage(self) -> None:
        """Rebuild the index from storage (at start, and after steps failed to commit)."""
        storage = self._storage
        if storage is None:
            return
        commits: dict[StateRef, tuple[SecureHash, str]] = {}
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _DB, b""):
                match wire.decode(storage.unseal(_DB, key, blob)):
                    case (SecureHash() as tx_id, str() as caller):
                        commits[ref_from_key(key)] = (tx_id, caller)
                    case _:
                        raise ValueError(f"record {key.hex()} in database {_DB!r} is not "
                                         "(tx id, caller)")
        self._commits = commits
        self._pending = {}

    def committed(self) -> dict[StateRef, tuple[SecureHash, str]]:
        """A copy of the stored commits as this provider holds them in memory: input ->
        (consuming transaction, requesting party's name). For audits and tests."""
        return dict(self._commits)

    def __repr__(self) -> str:
        return f"<UniquenessProvider of {self._node.party}: {len(self._commits)} consumed states>"


def check_refs(refs: Sequence[object], tx_id: SecureHash) -> None:
    """Raise ``NotaryException(NotaryError.TransactionInvalid)`` naming the first of ``refs``
    that is not a well-formed ``StateRef`` (a ``SecureHash`` and an index in
    ``0..MAX_OUTPUT_INDEX``), however it was built."""
    for position, ref in enumerate(refs):
        problem = _ref_problem(ref)
        if problem is not None:
            raise NotaryException(NotaryError.TransactionInvalid(
                tx_id, f"input {position} is not a valid state reference: {problem}"))


def _ref_problem(ref: object) -> str | None:
    if type(ref) is not StateRef:
        return f"it is a {type(ref).__qualname__}, not a StateRef"
    txhash: object = getattr(ref, "txhash", None)
    index: object = getattr(ref, "index", None)
    if (type(txhash) is not SecureHash or type(getattr(txhash, "bytes", None)) is not bytes
            or len(txhash.bytes) != HASH_SIZE):
        return "its transaction hash is not a 32-byte SecureHash"
    if type(index) is not int or not 0 <= index <= MAX_OUTPUT_INDEX:
        shown = index if type(index) is int and index.bit_length() <= 64 else "out of range"
        return f"its index must be an int in 0..{MAX_OUTPUT_INDEX}, got {shown}"
    return None
