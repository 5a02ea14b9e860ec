"""``Amount``: a non-negative whole number of minor units of one token.

Amounts of different tokens never mix: adding, subtracting, comparing or summing them raises
:class:`~finance.TokenMismatchError` naming both tokens. Equality is the exception: amounts of
different tokens are simply unequal.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from fibers import Party, serializable
from finance._errors import TokenMismatchError
from finance._tokens import CURRENCY_DECIMALS, Issued, currency_decimals

__all__ = ["Amount", "amount_problem", "dollars", "euros", "pounds", "sum_of"]

T = TypeVar("T", bound=Hashable)

# "1000", "1000.50", "1,000.50": thousands separators only in whole groups of three.
_NUMBER = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


@serializable
@dataclass(frozen=True, slots=True)
class Amount(Generic[T]):
    """``quantity`` minor units (cents for ``"USD"``, yen for ``"JPY"``) of ``token``.

    ``token`` is a currency code from ``CURRENCY_DECIMALS``, an :class:`~finance.Issued` token,
    or any other hashable value (counted in whole units). ``quantity`` is an ``int`` >= 0 (not a
    ``bool``); the constructor raises ``TypeError``/``ValueError`` otherwise.
    """

    quantity: int
    token: T

    def __post_init__(self) -> None:
        error = _amount_error(self)
        if error is not None:
            raise error

    @classmethod
    def zero(cls, token: T) -> Amount[T]:
        """No units of ``token``."""
        return cls(0, token)

    @classmethod
    def of(cls, value: str | int | Decimal, currency: str) -> Amount[str]:
        """``value`` major units of ``currency``: ``Amount.of("10.50", "USD")`` is 1050 cents.

        ``value`` is a decimal string, an int or a Decimal (never a float, which cannot hold
        most cent values exactly). Raises ``ValueError`` for an unknown currency, a negative
        value, or one with more decimal places than the currency has.
        """
        places = currency_decimals(currency)
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise TypeError(f"Amount.of takes a decimal string, int or Decimal, got "
                            f"{type(value).__qualname__} {value!r}: write floats as strings, "
                            "e.g. '10.50'")
        try:
            number = Decimal(value.strip() if isinstance(value, str) else value)
        except ArithmeticError:
            raise ValueError(f"{value!r} is not a decimal number") from None
        return Amount(_minor_units(number, places, currency), currency)

    @classmethod
    def parse(cls, text: str) -> Amount[str]:
        """The amount written as ``"<number> <currency code>"``: ``"1000.00 USD"``,
        ``"1,000.00 USD"`` (as :meth:`__str__` writes it) or ``"100 JPY"``.

        Raises ``ValueError`` naming the problem: malformed text, an unknown currency code, or
        more decimal places than the currency has.
        """
        parts = text.split() if isinstance(text, str) else []
        if len(parts) != 2 or not _NUMBER.fullmatch(parts[0]):
            raise ValueError(f"cannot parse {text!r} as an amount: write a non-negative number "
                             "and a currency code, e.g. '1000.00 USD'")
        number, code = parts
        places = currency_decimals(code)
        return Amount(_minor_units(Decimal(number.replace(",", "")), places, code), code)

    @property
    def decimal_places(self) -> int:
        """How many of the token's minor units make up a major one, as a power of ten: 2 for a
        USD token (issued or not), 0 for JPY and for tokens that are not currencies."""
        token: object = self.token
        product = token.product if isinstance(token, Issued) else token
        return CURRENCY_DECIMALS.get(product, 0) if isinstance(product, str) else 0

    def to_decimal(self) -> Decimal:
        """The quantity in major units, exactly: ``Decimal("10.50")`` for 1050 cents."""
        return Decimal(f"{self.quantity}e-{self.decimal_places}")  # exact, unlike scaleb

    def issued_by(self: Amount[str], issuer: Party, reference: bytes) -> Amount[Issued]:
        """This currency amount as a claim on ``issuer`` under ``reference``."""
        return Amount(self.quantity, Issued(issuer, reference, self.token))

    def without_issuer(self: Amount[Issued]) -> Amount[str]:
        """This issued amount as a plain currency amount, forgetting who owes it."""
        return Amount(self.quantity, self.token.product)

    def split(self, parts: int) -> list[Amount[T]]:
        """``parts`` amounts of this token that sum to this one, as equal as possible: the
        first ``quantity % parts`` of them hold one unit more than the rest."""
        if type(parts) is not int or parts < 1:
            raise ValueError(f"cannot split {self} into {parts!r} parts: give an int >= 1")
        each, extra = divmod(self.quantity, parts)
        return [Amount(each + (i < extra), self.token) for i in range(parts)]

    def _other_quantity(self, other: Amount[T], operation: str) -> int:
        if other.token != self.token:
            raise TokenMismatchError(operation, self.token, other.token)
        return other.quantity

    def __add__(self, other: Amount[T]) -> Amount[T]:
        if not isinstance(other, Amount):
            return NotImplemented
        return Amount(self.quantity + self._other_quantity(other, "add"), self.token)

    def __sub__(self, other: Amount[T]) -> Amount[T]:
        """The difference; ``ValueError`` naming both amounts if it would be negative."""
        if not isinstance(other, Amount):
            return NotImplemented
        quantity = self.quantity - self._other_quantity(other, "subtract")
        if quantity < 0:
            raise ValueError(f"cannot subtract {other} from {self}: an amount cannot be negative")
        return Amount(quantity, self.token)

    def __lt__(self, other: Amount[T]) -> bool:
        if not isinstance(other, Amount):
            return NotImplemented
        return self.quantity < self._other_quantity(other, "compare")

    def __le__(self, other: Amount[T]) -> bool:
        if not isinstance(other, Amount):
            return NotImplemented
        return self.quantity <= self._other_quantity(other, "compare")

    def __gt__(self, other: Amount[T]) -> bool:
        if not isinstance(other, Amount):
            return NotImplemented
        return self.quantity > self._other_quantity(other, "compare")

    def __ge__(self, other: Amount[T]) -> bool:
        if not isinstance(other, Amount):
            return NotImplemented
        return self.quantity >= self._other_quantity(other, "compare")

    def __str__(self) -> str:
        """``"1,000.00 USD"``; ``"5.00 USD issued by Bank (ref 01)"`` for an issued token."""
        return f"{format_quantity(self.quantity, self.decimal_places)} {self.token}"


def format_quantity(quantity: int, places: int) -> str:
    """``quantity`` minor units written in major units with thousands separators."""
    if places == 0:
        return f"{quantity:,}"
    whole, fraction = divmod(abs(quantity), 10**places)
    return f"{'-' if quantity < 0 else ''}{whole:,}.{fraction:0{places}d}"


def _minor_units(number: Decimal, places: int, currency: str) -> int:
    # Exact integer arithmetic: Decimal operations would round beyond 28 significant digits.
    sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"{number} is not a finite amount of {currency}")
    shift = exponent + places
    units = int("".join(map(str, digits)) or "0")
    scale = int(10 ** abs(shift))
    if shift >= 0:
        units *= scale
    elif units % scale:
        raise ValueError(f"{number} {currency} has too many decimal places: {currency} has "
                         f"{places}, so round it to a whole number of minor units first")
    else:
        units //= scale
    if sign and units:
        raise ValueError(f"an amount cannot be negative, got {number} {currency}")
    return units


def sum_of(amounts: Iterable[Amount[T]], token: T | None = None) -> Amount[T]:
    """The total of ``amounts``, all of one token (``token``, if given).

    An empty iterable sums to ``Amount.zero(token)``, or raises ``ValueError`` when no token is
    given. Raises ``TokenMismatchError`` naming both tokens at the first that differs.
    """
    total: Amount[T] | None = None if token is None else Amount(0, token)
    for amount in amounts:
        total = amount if total is None else total + amount
    if total is None:
        raise ValueError("sum_of needs token=... to sum an empty collection of amounts")
    return total


def amount_problem(amount: object) -> str | None:
    """What makes ``amount`` not a well-formed :class:`Amount`, or None.

    For values decoded from the wire, which are built without their constructors.
    """
    if type(amount) is not Amount:
        return f"expected an Amount, got {type(amount).__qualname__}"
    error = _amount_error(amount)
    return None if error is None else str(error)


def _amount_error(amount: Amount[Any]) -> Exception | None:
    quantity: object = amount.quantity
    if type(quantity) is not int:
        return TypeError(f"an amount's quantity must be an int number of minor units, got "
                         f"{quantity!r:.40}")
    if quantity < 0:
        return ValueError(f"an amount's quantity cannot be negative, got {quantity}")
    token: object = amount.token
    try:
        hash(token)
    except TypeError:
        return TypeError(f"an amount's token must be hashable, got {type(token).__qualname__}")
    if isinstance(token, str) and token not in CURRENCY_DECIMALS:
        try:
            currency_decimals(token)
        except ValueError as exc:
            return ValueError(f"{exc}; for other tokens use Issued(...) or a hashable type of "
                              "your own")
    return None


def dollars(value: str | int | Decimal) -> Amount[str]:
    """``value`` US dollars: ``dollars(10)`` is ``Amount(1000, "USD")``."""
    return Amount.of(value, "USD")


def euros(value: str | int | Decimal) -> Amount[str]:
    """``value`` euros: ``euros("2.50")`` is ``Amount(250, "EUR")``."""
    return Amount.of(value, "EUR")


def pounds(value: str | int | Decimal) -> Amount[str]:
    """``value`` pounds sterling: ``pounds(3)`` is ``Amount(300, "GBP")``."""
    return Amount.of(value, "GBP")
