"""Filtered transactions: some component groups revealed, the others present only as hashes.

A non-validating notary sees a transaction's inputs, notary and time window this way and can
still prove the id it signs is the id of the whole transaction (see ``ledger._merkle``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeVar

from fibers import Party, SerializationError, serializable
from ledger._crypto import HASH_SIZE, SecureHash
from ledger._merkle import GROUPS, group_hash, merkle_root
from ledger._states import Command, ContractState, StateRef, TimeWindow, TransactionState

__all__ = ["FilteredGroup", "FilteredTransaction"]

_T = TypeVar("_T")

# Per group: the type of its components and how many it may have.
_KINDS: Final[dict[str, tuple[type, int | None]]] = {
    "inputs": (StateRef, None), "outputs": (TransactionState, None),
    "commands": (Command, None), "notary": (Party, 1), "time_window": (TimeWindow, 1),
}


@serializable
@dataclass(frozen=True, slots=True)
class FilteredGroup:
    """A revealed component group: its name, its components in order and their nonces."""

    name: str
    components: tuple[Any, ...]
    nonces: tuple[SecureHash, ...]


@serializable
@dataclass(frozen=True, slots=True)
class FilteredTransaction:
    """A view of transaction ``id`` that reveals only the groups in ``revealed``.

    ``group_hashes`` holds the hash of every group, in ``ledger._merkle.GROUPS`` order. Made by
    ``WireTransaction.filtered``. Trust the accessors only after :meth:`verify` returned True.
    """

    id: SecureHash
    group_hashes: tuple[SecureHash, ...]
    revealed: tuple[FilteredGroup, ...]

    def verify(self) -> bool:
        """Whether the revealed components and the group hashes recompute to ``id``.

        Never raises: a filtered transaction received from a peer that is malformed in any way
        (wrong types, counts, hashes) simply does not verify.
        """
        try:
            return self._recomputes()
        except SerializationError:
            return False

    def _recomputes(self) -> bool:
        hashes = self.group_hashes
        if not (_is_hash(self.id) and type(hashes) is tuple and len(hashes) == len(GROUPS)
                and all(map(_is_hash, hashes)) and merkle_root(hashes) == self.id):
            return False
        if type(self.revealed) is not tuple:
            return False
        seen: set[str] = set()
        for group in self.revealed:
            if type(group) is not FilteredGroup or group.name in seen or group.name not in _KINDS:
                return False
            seen.add(group.name)
            kind, most = _KINDS[group.name]
            components, nonces = group.components, group.nonces
            if not (type(components) is tuple and type(nonces) is tuple
                    and len(components) == len(nonces)
                    and (most is None or len(components) <= most)
                    and all(isinstance(c, kind) for c in components)
                    and all(map(_is_hash, nonces))):
                return False
            if group_hash(nonces, components) != hashes[GROUPS.index(group.name)]:
                return False
        return True

    @property
    def revealed_groups(self) -> frozenset[str]:
        """The names of the groups this view reveals."""
        return frozenset(group.name for group in self.revealed)

    @property
    def inputs(self) -> tuple[StateRef, ...]:
        """The revealed inputs; ``LookupError`` if the group is hidden."""
        return self._components("inputs", StateRef)

    @property
    def outputs(self) -> tuple[TransactionState[ContractState], ...]:
        """The revealed outputs; ``LookupError`` if the group is hidden."""
        return self._components("outputs", TransactionState)

    @property
    def commands(self) -> tuple[Command, ...]:
        """The revealed commands; ``LookupError`` if the group is hidden."""
        return self._components("commands", Command)

    @property
    def notary(self) -> Party | None:
        """The revealed notary (None if the transaction has none); ``LookupError`` if hidden."""
        found = self._components("notary", Party)
        return found[0] if found else None

    @property
    def time_window(self) -> TimeWindow | None:
        """The revealed time window (None if the transaction has none); ``LookupError`` if
        hidden."""
        found = self._components("time_window", TimeWindow)
        return found[0] if found else None

    def _components(self, name: str, kind: type[_T]) -> tuple[_T, ...]:
        for group in self.revealed:
            if group.name == name:
                if not all(isinstance(c, kind) for c in group.components):
                    raise TypeError(f"the {name} group holds values that are not {kind.__name__}: "
                                    "call verify() before reading a filtered transaction")
                return group.components
        shown = ", ".join(sorted(self.revealed_groups)) or "none"
        raise LookupError(f"the {name} group is not revealed in this filtered transaction of "
                          f"{self.id} (revealed: {shown})")


def _is_hash(value: object) -> bool:
    return (type(value) is SecureHash and type(value.bytes) is bytes
            and len(value.bytes) == HASH_SIZE)
