"""Why a notary refused to sign: ``NotaryException`` and the ``NotaryError`` it carries.

Hierarchy::

    FlowException (fibers)          crosses to the counterparties a flow talks to
    └── NotaryException             .error: the NotaryError below
    NotaryError                     base (and namespace) of the reasons, frozen and @serializable
    ├── NotaryError.Conflict            inputs already consumed (.consumed: ref -> consuming tx)
    ├── NotaryError.TimeWindowInvalid   the notary's clock is outside the tx's time window
    └── NotaryError.TransactionInvalid  the (validating) notary found the tx invalid (.reason)

A ``NotaryException`` survives the wire codec with its error intact, so the notary's client
flow sees exactly what the notary saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from fibers import FlowException, serializable
from ledger._crypto import SecureHash
from ledger._errors import _rebuild
from ledger._states import StateRef, TimeWindow

__all__ = ["NotaryError", "NotaryException"]

_E = TypeVar("_E", bound=type["NotaryError"])


class NotaryError:
    """Base of the reasons a notary refuses a transaction; ``NotaryError.Conflict`` & co.

    ``tx_id`` is the transaction refused and ``str()`` is the human explanation.
    """

    __slots__ = ()
    tx_id: SecureHash
    Conflict: ClassVar[type[Conflict]]
    TimeWindowInvalid: ClassVar[type[TimeWindowInvalid]]
    TransactionInvalid: ClassVar[type[TransactionInvalid]]


def _member(cls: _E) -> _E:
    """Nest ``cls`` in ``NotaryError`` (also for pickle, which finds classes by qualname) and
    whitelist it for the wire under that name."""
    cls.__qualname__ = f"NotaryError.{cls.__name__}"
    setattr(NotaryError, cls.__name__, cls)
    return serializable(cls)


@_member
@dataclass(frozen=True)
class Conflict(NotaryError):
    """Inputs of ``tx_id`` were already consumed: ``consumed`` maps each to the transaction
    that consumed it."""

    tx_id: SecureHash
    consumed: dict[StateRef, SecureHash]

    def __str__(self) -> str:
        spent = "; ".join(f"input {ref} was consumed by transaction {by}"
                          for ref, by in sorted(self.consumed.items()))
        return f"transaction {self.tx_id} is a double spend: {spent}"


@_member
@dataclass(frozen=True)
class TimeWindowInvalid(NotaryError):
    """The notary's time ``now`` is outside ``time_window`` of ``tx_id``."""

    tx_id: SecureHash
    time_window: TimeWindow
    now: datetime

    def __str__(self) -> str:
        start = "any time" if self.time_window.from_time is None else self.time_window.from_time
        until = "no end" if self.time_window.until_time is None else self.time_window.until_time
        return (f"transaction {self.tx_id} may be notarised from {start} until {until}, but "
                f"the notary's time is {self.now.isoformat()}: build it again with a current "
                "time window")


@_member
@dataclass(frozen=True)
class TransactionInvalid(NotaryError):
    """The notary found ``tx_id`` invalid, for ``reason``."""

    tx_id: SecureHash
    reason: str

    def __str__(self) -> str:
        return f"transaction {self.tx_id} is invalid: {self.reason}"


class NotaryException(FlowException):
    """The notary refused to sign; ``error`` says why (a ``NotaryError``)."""

    def __init__(self, error: NotaryError) -> None:
        if not isinstance(error, NotaryError):
            raise TypeError(f"a NotaryException carries a NotaryError, not "
                            f"{type(error).__qualname__}")
        super().__init__(f"unable to notarise transaction {error.tx_id}: {error}")
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))
