"""Exceptions of the finance package.

Hierarchy::

    ValueError
    └── TokenMismatchError               amounts of different tokens were combined or compared
    FlowException (fibers), ValueError
    └── InsufficientBalanceException     not enough spendable cash (.needed, .available)

``InsufficientBalanceException`` is a ``FlowException``, so it crosses to the counterparties of
the flow that raises it (the wire whitelists every ``FlowException`` subclass), with its
``needed`` and ``available`` amounts intact.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from fibers import FlowException

if TYPE_CHECKING:
    from finance._amount import Amount

__all__ = ["InsufficientBalanceException", "TokenMismatchError"]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class TokenMismatchError(ValueError):
    """``operation`` was asked of amounts whose tokens ``left`` and ``right`` differ."""

    def __init__(self, operation: str, left: Hashable, right: Hashable) -> None:
        message = f"cannot {operation} amounts of different tokens: {left} and {right}"
        if _product(left) == _product(right):
            message += (" (the same currency from different issuers or references: compare "
                        "amount.without_issuer() values to ignore who issued them)")
        super().__init__(message)
        self.left, self.right = left, right

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call __init__ with the message alone.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _product(token: object) -> object:
    return getattr(token, "product", token)


class InsufficientBalanceException(FlowException, ValueError):
    """A payment of ``needed`` was asked for but only ``available`` can be spent.

    ``available`` counts the cash the spender may use for this payment: of the right currency
    (and issuer, if one was demanded), unconsumed and not soft-locked by another flow.
    """

    def __init__(self, needed: Amount[Any], available: Amount[Any]) -> None:
        super().__init__(f"insufficient balance: {needed} needed but only {available} available "
                         "to spend; issue or receive more cash, or pay less")
        self.needed, self.available = needed, available

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))
