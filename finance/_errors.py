"""Exceptions of the finance package.

Hierarchy::

    ValueError
    └── TokenMismatchError               amounts of different tokens were combined or compared
    FlowException (fibers), ValueError
    └── InsufficientBalanceException     not enough spendable cash (.needed, .available)
    FlowException (fibers)
    ├── UnacceptablePriceException       a trade's price is above the buyer's (.given_price)
    ├── AssetMismatchException           a trade offers another asset type than the buyer buys
    └── UnacceptableIssuerException      a trade pays in cash of an issuer the seller refuses

Every ``FlowException`` here crosses to the counterparties of the flow that raises it (the wire
whitelists every ``FlowException`` subclass), with its attributes intact.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from fibers import FlowException, Party

if TYPE_CHECKING:
    from finance._amount import Amount
    from ledger import SecureHash

__all__ = [
    "AssetMismatchException", "InsufficientBalanceException", "TokenMismatchError",
    "UnacceptableIssuerException", "UnacceptablePriceException",
]


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


class UnacceptablePriceException(FlowException):
    """The seller asked ``given_price``, more than the buyer accepts (or in another token)."""

    def __init__(self, given_price: Amount[Any]) -> None:
        super().__init__(f"Unacceptable price: {given_price}")
        self.given_price = given_price

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class UnacceptableIssuerException(FlowException):
    """The buyer proposed to pay the seller in cash issued by ``issuer``, whom the seller does
    not accept."""

    def __init__(self, issuer: Party, tx_id: SecureHash) -> None:
        super().__init__(f"the proposed transaction {tx_id} pays the seller in cash issued by "
                         f"{issuer}, an issuer the seller does not accept")
        self.issuer = issuer

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class AssetMismatchException(FlowException):
    """The seller offered a ``type_name`` where the buyer buys only ``expected_type_name``."""

    def __init__(self, expected_type_name: str, type_name: str) -> None:
        super().__init__(f"The submitted asset didn't match the expected type: "
                         f"{expected_type_name} vs {type_name}")
        self.expected_type_name, self.type_name = expected_type_name, type_name

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))
