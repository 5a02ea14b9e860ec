"""``VaultService``: the unconsumed states relevant to this node (``service_hub.vault``).

Follows the storage model of ``ledger._services``. Databases: ``vault_states`` (``ref_key`` ->
sealed wire encoding of the ``TransactionState``) holds the unconsumed relevant states;
``vault_consumed`` (``ref_key`` -> sealed id of the consuming transaction) remembers which of
them were consumed and by what.

A state is *relevant* when one of its participants, or the owner of an ``OwnableState``, has
one of this node's keys (its legal identity key or a key from ``fresh_key``).

**Soft locks** reserve unconsumed states for one flow run (``lock_id``, normally the flow's
``run_id``) so that two flows of this node do not select the same states. They live in memory
only, because they belong to running flows: the node releases a flow's locks when it ends
(completed, failed or killed), and a flow restored after a restart takes its locks again as
it replays its ``soft_lock``/``select_states`` calls. The outcome of each reservation is
journaled, so a replayed flow sees the answer it saw live.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from fibers import FlowException, Party, StateMachineRunId, serializable, wire
from fibers.services import Stream, journaled, wake_on_restart
from ledger._crypto import SecureHash
from ledger._errors import _rebuild
from ledger._services import LedgerService, ref_from_key, ref_key
from ledger._states import ContractState, OwnableState, StateAndRef, StateRef, TransactionState
from ledger._transactions import SignedTransaction
from ledger._vault_index import SelectionIndex, largest_first, smallest_covering

if TYPE_CHECKING:
    from fibers import Node
    from fibers.storage import Txn

__all__ = [
    "InsufficientStatesException", "StatesNotAvailableException", "VaultService", "VaultUpdate",
]

T = TypeVar("T", bound=ContractState)
_STATES: Final = "vault_states"
_CONSUMED: Final = "vault_consumed"
_MAX_INDEXES: Final = 16  # selection indexes kept; a caller passing fresh lambdas evicts its own
log = logging.getLogger("ledger.vault")


class StatesNotAvailableException(FlowException):
    """States could not be soft-locked: ``refs`` are consumed, not in the vault, or locked by
    another flow; ``holder`` says which (and by whom)."""

    def __init__(self, refs: Iterable[StateRef], holder: str) -> None:
        self.refs = tuple(refs)
        self.holder = holder
        states = ", ".join(str(ref) for ref in self.refs)
        verb = "is" if len(self.refs) == 1 else "are"
        super().__init__(f"state{'s' if len(self.refs) != 1 else ''} {states} {verb} not "
                         f"available: {holder}")

    @classmethod
    def _refusing(cls, reasons: dict[StateRef, str]) -> StatesNotAvailableException:
        distinct = set(reasons.values())
        if len(distinct) == 1:
            return cls(reasons, distinct.pop())
        return cls(reasons, "; ".join(f"{ref} is {why}" for ref, why in reasons.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class InsufficientStatesException(ValueError):
    """``select_states`` found unlocked, unconsumed states worth only ``available`` of the
    ``needed`` amount."""

    def __init__(self, needed: int, available: int, state_type: str = "states") -> None:
        super().__init__(
            f"not enough {state_type} to select: needed {needed}, but the unconsumed ones not "
            f"soft-locked by other flows add up to {available}")
        self.needed, self.available, self.state_type = needed, available, state_type

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


@serializable
@dataclass(frozen=True)
class VaultUpdate:
    """What one recorded transaction changed in the vault: the relevant states it consumed and
    the relevant states it produced."""

    consumed: tuple[StateAndRef[ContractState], ...]
    produced: tuple[StateAndRef[ContractState], ...]

    @property
    def is_empty(self) -> bool:
        """Whether the update neither consumed nor produced anything."""
        return not (self.consumed or self.produced)

    def of_type(self, state_type: type[ContractState]) -> VaultUpdate:
        """This update restricted to states of ``state_type``."""
        return VaultUpdate(
            tuple(s for s in self.consumed if isinstance(s.state.data, state_type)),
            tuple(s for s in self.produced if isinstance(s.state.data, state_type)))


class VaultService(LedgerService):
    """The node's unconsumed relevant states, their feed of updates, and soft locks."""

    def __init__(self, node: Node) -> None:
        super().__init__(node, [_STATES, _CONSUMED])
        # Invariant: a ref is in at most one of _unconsumed and _consumed.
        self._unconsumed: dict[StateRef, StateAndRef[ContractState]] = {}
        self._consumed: dict[StateRef, SecureHash] = {}
        # Invariant: _locks and _locked_by describe the same locks, and only unconsumed refs
        # are locked.
        self._locks: dict[StateRef, StateMachineRunId] = {}
        self._locked_by: dict[StateMachineRunId, set[StateRef]] = {}
        self._feed: Stream[VaultUpdate] = Stream()
        # Invariant: every index holds exactly the _unconsumed states of its type (most recently
        # used last).
        self._indexes: OrderedDict[_IndexKey, SelectionIndex] = OrderedDict()
        self.reload_from_storage()
        node.on_flow_end(self.release_soft_locks)

    # ----- recording ------------------------------------------------------------------------------

    def notify(self, stx: SignedTransaction) -> VaultUpdate:
        """Consume this vault's states that ``stx`` spends and add its relevant outputs; return
        the update (published on ``track()`` once committed, unless empty). Called by
        ``TransactionStorage.record``; calling it for a transaction again changes nothing."""
        update = self._notify(stx)
        self._flush()
        return update

    def _notify(self, stx: SignedTransaction) -> VaultUpdate:
        """``notify`` without committing: the caller's step (or flush) commits it."""
        tx_id, tx = stx.id, stx.tx
        ours = self._our_keys()
        refs = [StateRef(tx_id, i) for i in range(len(tx.outputs))]
        produced = tuple(
            StateAndRef(output, ref) for ref, output in zip(refs, tx.outputs, strict=True)
            if ref not in self._unconsumed and ref not in self._consumed
            and _is_relevant(output.data, ours))
        # Everything that may raise (a state's participants) is done: now mutate.
        consumed = tuple(self._unconsumed.pop(ref) for ref in tx.inputs if ref in self._unconsumed)
        for sar in consumed:
            self._consumed[sar.ref] = tx_id
            self._unlock(sar.ref)
        for sar in produced:
            self._unconsumed[sar.ref] = sar
        for index in self._indexes.values():
            for sar in consumed:
                index.remove(sar.ref)
            index.add_all(produced)
        update = VaultUpdate(consumed, produced)
        if not update.is_empty:
            self._store(tx_id, update)
        return update

    def _store(self, tx_id: SecureHash, update: VaultUpdate) -> None:
        storage = self._storage
        puts = [(ref_key(s.ref), wire.encode(s.state)) for s in update.produced]
        spent = [ref_key(s.ref) for s in update.consumed]
        spender = tx_id.bytes
        if storage is not None:
            def write(txn: Txn) -> None:
                for key in spent:
                    storage.delete(txn, _STATES, key)
                    storage.put_sealed(txn, _CONSUMED, key, spender)
                for key, value in puts:
                    storage.put_sealed(txn, _STATES, key, value)

            self._write(write)

        def landed(txn: Txn) -> bool:
            assert storage is not None
            if puts:  # produced, and maybe consumed again by a later step of the same commit
                key = puts[0][0]
                return (storage.get(txn, _STATES, key) is not None
                        or storage.get(txn, _CONSUMED, key) is not None)
            return storage.get_sealed(txn, _CONSUMED, spent[0]) == spender

        self._after_commit(landed, lambda: self._feed.publish(update))

    def _our_keys(self) -> set[bytes]:
        keys = getattr(self._node.services, "key_management", None)
        return cast(set[bytes], keys.keys()) if keys is not None else {self._node.party.owning_key}

    # ----- queries --------------------------------------------------------------------------------

    def query(
        self,
        state_type: type[T],
        *,
        criteria: Callable[[StateAndRef[T]], bool] | None = None,
        include_soft_locked: bool = True,
    ) -> list[StateAndRef[T]]:
        """The unconsumed states of ``state_type`` (instances of it, subclasses included) that
        pass ``criteria``, ordered by ``StateRef``; without soft-locked ones if
        ``include_soft_locked`` is False."""
        found = []
        for ref in sorted(self._unconsumed):
            sar = self._unconsumed[ref]
            if not isinstance(sar.state.data, state_type):
                continue
            if not include_soft_locked and ref in self._locks:
                continue
            typed = cast(StateAndRef[T], sar)
            if criteria is None or criteria(typed):
                found.append(typed)
        return found

    def state_and_ref(self, ref: StateRef) -> StateAndRef[ContractState] | None:
        """The unconsumed state at ``ref`` if this vault holds it, else None."""
        return self._unconsumed.get(ref)

    def resolve_state(self, ref: StateRef) -> TransactionState[ContractState] | None:
        """The output ``ref`` points at, from the vault or any recorded transaction (consumed
        or not, relevant or not); None if this node has not recorded its transaction. Usable
        as the ``StateResolver`` of ``SignedTransaction.verify``."""
        sar = self._unconsumed.get(ref)
        if sar is not None:
            return sar.state
        transactions = getattr(self._node.services, "validated_transactions", None)
        stx = transactions.get(ref.txhash) if transactions is not None else None
        if not isinstance(stx, SignedTransaction) or not 0 <= ref.index < len(stx.tx.outputs):
            return None
        return stx.tx.outputs[ref.index]

    def consumed_by(self, ref: StateRef) -> SecureHash | None:
        """The transaction that consumed this vault's state ``ref``, if it did."""
        return self._consumed.get(ref)

    def track(self, state_type: type[ContractState] = ContractState) -> Stream[VaultUpdate]:
        """The feed of updates since this node started, each published once committed, with
        only states of ``state_type``; updates with none of them are left out. Like every
        ``Stream`` it replays its history to a new subscriber (``query`` is the snapshot).

        With a narrower ``state_type`` each call makes a filtered stream that lives as long as
        the vault: call it once per observer."""
        if state_type is ContractState:
            return self._feed
        filtered: Stream[VaultUpdate] = Stream()

        def forward(update: VaultUpdate) -> None:
            narrowed = update.of_type(state_type)
            if not narrowed.is_empty:
                filtered.publish(narrowed)

        self._feed.subscribe(forward)
        return filtered

    # ----- soft locks -----------------------------------------------------------------------------

    def soft_lock(self, lock_id: StateMachineRunId, refs: Iterable[StateRef]) -> None:
        """Reserve ``refs`` for ``lock_id`` (re-locking its own states is fine). Raises
        ``StatesNotAvailableException`` naming the states that are consumed, not in this
        vault, or locked by another id; then nothing is locked."""
        wanted = tuple(dict.fromkeys(refs))
        refused = self._reserve(lock_id, wanted)
        if refused:
            raise StatesNotAvailableException._refusing(refused)
        self._rehold(lock_id, wanted)

    @journaled
    def _reserve(
        self, lock_id: StateMachineRunId, refs: tuple[StateRef, ...]
    ) -> dict[StateRef, str]:
        """Lock all of ``refs`` or none; return why each refused one is not available."""
        refused = {ref: why for ref in refs if (why := self._unavailable(ref, lock_id))}
        if not refused:
            for ref in refs:
                self._hold(ref, lock_id)
        return refused

    def _unavailable(self, ref: StateRef, lock_id: StateMachineRunId) -> str | None:
        if ref in self._consumed:
            return f"consumed by transaction {self._consumed[ref]}"
        if ref not in self._unconsumed:
            return "not an unconsumed state in this node's vault"
        holder = self._locks.get(ref, lock_id)
        return None if holder == lock_id else f"soft-locked by flow {holder}"

    def _rehold(self, lock_id: StateMachineRunId, refs: Iterable[StateRef]) -> None:
        """Take the locks a journaled reservation granted, again: a no-op live, and how a flow
        replayed after a restart gets its locks back (so it is replayed as soon as its node
        restarts: ``wake_on_restart``). States consumed since are skipped."""
        wake_on_restart()
        for ref in refs:
            if ref in self._unconsumed and self._locks.get(ref, lock_id) == lock_id:
                self._hold(ref, lock_id)

    def _hold(self, ref: StateRef, lock_id: StateMachineRunId) -> None:
        self._locks[ref] = lock_id
        self._locked_by.setdefault(lock_id, set()).add(ref)

    def _unlock(self, ref: StateRef) -> None:
        holder = self._locks.pop(ref, None)
        if holder is not None:
            held = self._locked_by[holder]
            held.discard(ref)
            if not held:
                del self._locked_by[holder]

    def release_soft_locks(
        self, lock_id: StateMachineRunId, refs: Iterable[StateRef] | None = None
    ) -> None:
        """Release the locks ``lock_id`` holds (only those on ``refs``, if given). The node
        calls this when a flow ends."""
        held = self._locked_by.get(lock_id, set())
        for ref in list(held) if refs is None else [r for r in refs if r in held]:
            self._unlock(ref)

    def soft_locked(self, lock_id: StateMachineRunId) -> set[StateRef]:
        """The states ``lock_id`` holds locked."""
        return set(self._locked_by.get(lock_id, ()))

    def select_states(
        self,
        state_type: type[T],
        amount_of: Callable[[T], int],
        target: int,
        lock_id: StateMachineRunId,
        *,
        criteria: Callable[[StateAndRef[T]], bool] | None = None,
        group_of: Callable[[T], Hashable] | None = None,
        in_group: Callable[[Any], bool] | None = None,
    ) -> list[StateAndRef[T]]:
        """Unconsumed states of ``state_type`` passing ``criteria``, not locked by another id,
        whose ``amount_of`` add up to at least ``target``; soft-locked to ``lock_id``.

        The vault keeps an index of the states per ``(state_type, amount_of, group_of)`` in
        memory, ordered largest first, so a selection looks at the states it needs rather than
        sorting them all: ``amount_of`` and ``group_of`` must be pure functions of the state
        (pass module-level functions, not a new lambda per call, or the index is rebuilt each
        time). With ``group_of``, only states whose group ``in_group`` accepts are candidates
        (for cash: the group is the issued token), as if ``criteria`` also checked that.

        Deterministic choice: the smallest single state worth ``target`` or more when there is
        one (no change when it matches exactly); otherwise the largest states first, so that
        as few states as possible are spent. Ties go to the smaller ``StateRef``. States worth
        nothing are never chosen. Raises ``InsufficientStatesException`` (needed, available)
        if the candidates are not worth ``target``, and ``ValueError`` if ``target`` < 0.
        """
        chosen, available = self._select(state_type, amount_of, target, lock_id, criteria,
                                         group_of=group_of, in_group=in_group)
        if chosen is None:
            raise InsufficientStatesException(target, available, f"{state_type.__qualname__} "
                                              "states")
        self._rehold(lock_id, [sar.ref for sar in chosen])
        return chosen

    @journaled
    def _select(
        self,
        state_type: type[T],
        amount_of: Callable[[T], int],
        target: int,
        lock_id: StateMachineRunId,
        criteria: Callable[[StateAndRef[T]], bool] | None,
        *,
        group_of: Callable[[T], Hashable] | None = None,
        in_group: Callable[[Any], bool] | None = None,
    ) -> tuple[list[StateAndRef[T]] | None, int]:
        """The selection and, when it is None (not enough), the candidates' total; else the
        chosen states' total."""
        if type(target) is not int or target < 0:
            raise ValueError(f"select_states needs a target amount >= 0, got {target!r}")
        if target == 0:
            return [], 0
        groups = self._index(state_type, amount_of, group_of).groups(in_group)
        unconsumed, locks = self._unconsumed, self._locks

        def eligible(ref: StateRef) -> bool:
            return locks.get(ref, lock_id) == lock_id and (
                criteria is None or criteria(cast(StateAndRef[T], unconsumed[ref])))

        covering = smallest_covering(groups, target, eligible)
        if covering is not None:
            picked = [(-covering[0], covering[1])]
        else:
            picked, total = [], 0
            for negative, ref in largest_first(groups):
                if negative >= 0 or total >= target:
                    break  # covered, or only states worth nothing are left
                if eligible(ref):
                    picked.append((-negative, ref))
                    total += -negative
            if total < target:
                return None, total
        chosen = [cast(StateAndRef[T], unconsumed[ref]) for _, ref in picked]
        for sar in chosen:
            self._hold(sar.ref, lock_id)
        return chosen, sum(amount for amount, _ in picked)

    def _index(self, state_type: type[ContractState], amount_of: Callable[[Any], int],
               group_of: Callable[[Any], Hashable] | None) -> SelectionIndex:
        """The index of ``state_type`` by ``amount_of`` and ``group_of``, built on first use."""
        key = (state_type, amount_of, group_of)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = SelectionIndex(state_type, amount_of, group_of)
            index.add_all(self._unconsumed.values())
            if len(self._indexes) > _MAX_INDEXES:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(key)
        return index

    # ----- storage --------------------------------------------------------------------------------

    def reload_from_storage(self) -> None:
        """Rebuild the index from storage (at start, and after steps failed to commit); locks
        on states that are still unconsumed are kept."""
        storage = self._storage
        if storage is None:
            return
        unconsumed: dict[StateRef, StateAndRef[ContractState]] = {}
        consumed: dict[StateRef, SecureHash] = {}
        with storage.read() as txn:
            for key, blob in storage.prefix_items(txn, _STATES, b""):
                state = wire.decode(storage.unseal(_STATES, key, blob))
                if not isinstance(state, TransactionState):
                    raise ValueError(f"record {key.hex()} in database {_STATES!r} is not a "
                                     "TransactionState")
                ref = ref_from_key(key)
                unconsumed[ref] = StateAndRef(state, ref)
            for key, blob in storage.prefix_items(txn, _CONSUMED, b""):
                consumed[ref_from_key(key)] = SecureHash(storage.unseal(_CONSUMED, key, blob))
        self._unconsumed, self._consumed = unconsumed, consumed
        indexes = [SelectionIndex(*key) for key in self._indexes]
        for index in indexes:
            index.add_all(unconsumed.values())
        self._indexes = OrderedDict(zip(self._indexes, indexes, strict=True))
        for ref in [ref for ref in self._locks if ref not in unconsumed]:
            self._unlock(ref)

    def __repr__(self) -> str:
        return (f"<VaultService of {self._node.party}: {len(self._unconsumed)} unconsumed, "
                f"{len(self._locks)} soft-locked>")


_IndexKey = tuple[type[ContractState], Callable[[Any], int], Callable[[Any], Hashable] | None]


def _is_relevant(state: ContractState, ours: set[bytes]) -> bool:
    if isinstance(state, OwnableState):
        owner = getattr(state, "owner", None)
        if isinstance(owner, Party) and owner.owning_key in ours:
            return True
    return any(isinstance(p, Party) and p.owning_key in ours for p in state.participants)
