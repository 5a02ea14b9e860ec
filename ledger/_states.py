"""States, the references that point at them, commands and time windows.

A *state* is an immutable fact on the ledger that its participants share. User states subclass
:class:`ContractState` (or :class:`OwnableState`, :class:`LinearState`) and are themselves
``@serializable @dataclass(frozen=True)`` classes, so they have canonical wire bytes that
transaction ids hash. Every value type here is frozen and ``@serializable``.

Constructors validate their arguments; the wire decoder builds instances without calling them,
so anything received from a peer is checked again when a transaction is verified.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

from fibers import Party, serializable
from ledger._crypto import PUBLIC_KEY_SIZE, SecureHash

__all__ = [
    "Command", "CommandData", "ContractState", "LinearState", "OwnableState", "StateAndRef",
    "StateRef", "TimeWindow", "TransactionState", "UniqueIdentifier",
]

S_co = TypeVar("S_co", bound="ContractState", covariant=True)

MAX_OUTPUT_INDEX: Final = 2**32 - 1
"""The largest output index a ``StateRef`` may name (storage keys hold it in 32 bits)."""


def _brief(value: object) -> str:
    """``repr(value)`` cut short; an int too long to print (Python refuses ints of more than
    4,300 digits) is described by its size instead."""
    if type(value) is int and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    return f"{value!r:.80}"


class ContractState(ABC):
    """Base of every ledger state.

    Subclasses implement :attr:`participants` as a property: the parties that must store (and
    usually sign for) the state.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def participants(self) -> list[Party]:
        """The parties for whom this state is relevant."""


class CommandData:
    """Marker base of command values (``Issue``, ``Move``, …): the intent of a transaction.

    Subclasses are ``@serializable @dataclass(frozen=True)`` classes.
    """

    __slots__ = ()


class OwnableState(ContractState):
    """A state with one owner that can be handed to another party.

    Subclasses declare the dataclass field ``owner: Party``.
    """

    __slots__ = ()
    owner: Party

    @abstractmethod
    def with_new_owner(self, new_owner: Party) -> tuple[CommandData, OwnableState]:
        """The command that moves this state and a copy of it owned by ``new_owner``."""


@serializable
@dataclass(frozen=True, slots=True)
class UniqueIdentifier:
    """Identifies a :class:`LinearState` across the transactions that evolve it.

    ``external_id`` is an optional business reference; ``id`` is random unless given (a flow that
    must replay deterministically passes one derived from recorded data).
    """

    external_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __str__(self) -> str:
        return f"{self.external_id}_{self.id}" if self.external_id is not None else str(self.id)


class LinearState(ContractState):
    """A state that evolves over a chain of transactions, all sharing its ``linear_id``.

    Subclasses declare the dataclass field ``linear_id: UniqueIdentifier``.
    """

    __slots__ = ()
    linear_id: UniqueIdentifier


@serializable
@dataclass(frozen=True)
class TransactionState(Generic[S_co]):
    """A state as a transaction output: its data, the contract that governs it (the
    ``module:qualname`` a class was registered under with ``@contract``) and its notary."""

    data: S_co
    contract: str
    notary: Party

    def __post_init__(self) -> None:
        if not isinstance(self.data, ContractState):
            raise TypeError(f"TransactionState data must be a ContractState, got "
                            f"{type(self.data).__qualname__}")
        if not isinstance(self.contract, str) or ":" not in self.contract:
            raise ValueError(f"contract must be the 'module:qualname' of a @contract class, got "
                             f"{self.contract!r}")
        if not isinstance(self.notary, Party):
            raise TypeError(f"notary must be a Party, got {type(self.notary).__qualname__}")


@serializable
@dataclass(frozen=True, order=True, slots=True)
class StateRef:
    """Points at output ``index`` of the transaction whose id is ``txhash``."""

    txhash: SecureHash
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.txhash, SecureHash):
            raise TypeError(f"txhash must be a SecureHash, got {type(self.txhash).__qualname__}")
        index: object = self.index
        if type(index) is not int or not 0 <= index <= MAX_OUTPUT_INDEX:
            raise ValueError(f"a StateRef index is an int in 0..{MAX_OUTPUT_INDEX}, got "
                             f"{_brief(index)}")

    def __str__(self) -> str:
        return f"{self.txhash}({self.index})"


@serializable
@dataclass(frozen=True)
class StateAndRef(Generic[S_co]):
    """A state together with the reference that locates it on the ledger."""

    state: TransactionState[S_co]
    ref: StateRef


@serializable
@dataclass(frozen=True, slots=True)
class Command:
    """A command ``value`` and the raw public keys that must sign the transaction for it.

    ``signers`` is kept sorted and without duplicates, so equal commands have equal bytes (and
    transactions equal ids) whatever order the keys were given in.
    """

    value: CommandData
    signers: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.value, CommandData):
            raise TypeError(f"a command value must be a CommandData, got "
                            f"{type(self.value).__qualname__}")
        object.__setattr__(self, "signers", _canonical_keys(self.signers))
        if not self.signers:
            raise ValueError(f"command {type(self.value).__qualname__} needs at least one signer")


def _canonical_keys(keys: object) -> tuple[bytes, ...]:
    if isinstance(keys, bytes | str) or not isinstance(keys, Iterable):
        raise TypeError("signers must be a collection of raw public keys, not "
                        f"{type(keys).__qualname__}")
    result: set[bytes] = set()
    for key in keys:
        if type(key) is not bytes or len(key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a signer is a {PUBLIC_KEY_SIZE}-byte raw public key "
                             f"(Party.owning_key), got {key!r:.80}")
        result.add(key)
    return tuple(sorted(result))


@serializable
@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The interval ``[from_time, until_time)`` in which a notary may sign a transaction.

    Either bound may be None (open). Bounds are timezone-aware and stored in UTC, so equal
    windows have equal bytes; naive datetimes are refused with ``ValueError``.
    """

    from_time: datetime | None
    until_time: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "from_time", _utc(self.from_time, "from_time"))
        object.__setattr__(self, "until_time", _utc(self.until_time, "until_time"))
        if self.from_time is None and self.until_time is None:
            raise ValueError("a time window needs at least one bound: use between, from_only "
                             "or until_only")
        if (self.from_time is not None and self.until_time is not None
                and self.from_time >= self.until_time):
            raise ValueError(f"a time window must end after it starts: from {self.from_time} "
                             f"until {self.until_time}")

    @classmethod
    def between(cls, from_time: datetime, until_time: datetime) -> TimeWindow:
        """The window from ``from_time`` (inclusive) until ``until_time`` (exclusive)."""
        return cls(from_time, until_time)

    @classmethod
    def from_only(cls, from_time: datetime) -> TimeWindow:
        """The window from ``from_time`` (inclusive) on, without end."""
        return cls(from_time, None)

    @classmethod
    def until_only(cls, until_time: datetime) -> TimeWindow:
        """The window up to ``until_time`` (exclusive)."""
        return cls(None, until_time)

    def contains(self, instant: datetime) -> bool:
        """Whether ``instant`` (timezone-aware) lies in the window."""
        at = _aware_utc(instant, "instant")
        return ((self.from_time is None or self.from_time <= at)
                and (self.until_time is None or at < self.until_time))


def _utc(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _aware_utc(value, what)


def _aware_utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__qualname__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} is naive: ledger times are timezone-aware, "
                         "e.g. datetime.now(datetime.UTC) or value.replace(tzinfo=datetime.UTC)")
    return value.astimezone(UTC)
