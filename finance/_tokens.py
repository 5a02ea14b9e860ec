"""What an amount counts: currency codes, and the issued tokens that say who owes the value.

A currency code (``"USD"``) is a token that names a currency in the abstract. An :class:`Issued`
token is a claim on a particular issuer: ``Issued(bank, b"\\x01", "USD")`` is dollars that
``bank`` owes the holder, and is not interchangeable with dollars owed by anyone else, or by the
same bank under another reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from fibers import Party, serializable

__all__ = ["CURRENCY_DECIMALS", "Issued", "PartyAndReference", "currency_decimals"]

CURRENCY_DECIMALS: Final = MappingProxyType({
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "JPY": 0,
})
"""Decimal places of each known currency code: an amount of 1 is one cent, or one yen."""

MAX_REFERENCE_SIZE: Final = 64


def currency_decimals(code: str) -> int:
    """The decimal places of currency ``code``; ``ValueError`` naming it if it is unknown."""
    places = CURRENCY_DECIMALS.get(code) if isinstance(code, str) else None
    if places is None:
        known = ", ".join(sorted(CURRENCY_DECIMALS))
        hint = f" (did you mean {code.upper()!r}?)" if (
            isinstance(code, str) and code.upper() in CURRENCY_DECIMALS) else ""
        raise ValueError(f"unknown currency code {code!r}{hint}: known codes are {known}")
    return places


def _describe(party: Party, reference: bytes) -> str:
    return f"{party.name} (ref {reference.hex()})" if reference else party.name


@serializable
@dataclass(frozen=True, slots=True)
class PartyAndReference:
    """A party and an opaque reference of its choosing (a deal or account number, say):
    which of the party's obligations a state refers to."""

    party: Party
    reference: bytes

    def __post_init__(self) -> None:
        problem = party_problem(self.party) or _reference_problem(self.reference)
        if problem is not None:
            raise ValueError(problem)

    def __str__(self) -> str:
        return _describe(self.party, self.reference)


@serializable
@dataclass(frozen=True, slots=True)
class Issued:
    """Currency ``product`` owed by ``issuer`` under ``reference``: the token of cash.

    Equal only when issuer, reference and product are all equal.
    """

    issuer: Party
    reference: bytes
    product: str

    def __post_init__(self) -> None:
        problem = issued_problem(self)
        if problem is not None:
            raise ValueError(problem)

    @property
    def issuance(self) -> PartyAndReference:
        """The issuer together with its reference."""
        return PartyAndReference(self.issuer, self.reference)

    def __str__(self) -> str:
        return f"{self.product} issued by {_describe(self.issuer, self.reference)}"


def party_problem(party: object) -> str | None:
    """What makes ``party`` not a well-formed :class:`~fibers.Party`, or None."""
    if (type(party) is not Party or type(party.name) is not str
            or type(party.owning_key) is not bytes):
        return f"expected a Party, got {party!r:.80}"
    return None


def _reference_problem(reference: object) -> str | None:
    if type(reference) is not bytes or len(reference) > MAX_REFERENCE_SIZE:
        return f"a reference is at most {MAX_REFERENCE_SIZE} bytes, got {reference!r:.80}"
    return None


def issued_problem(token: object) -> str | None:
    """What makes ``token`` not a well-formed :class:`Issued`, or None.

    For values decoded from the wire, which are built without their constructors.
    """
    if type(token) is not Issued:
        return f"expected an Issued token, got {type(token).__qualname__}"
    problem = party_problem(token.issuer) or _reference_problem(token.reference)
    if problem is None and (type(token.product) is not str
                            or token.product not in CURRENCY_DECIMALS):
        problem = f"unknown currency code {token.product!r}"
    return problem


def party_and_reference_problem(value: object) -> str | None:
    """What makes ``value`` not a well-formed :class:`PartyAndReference`, or None."""
    if type(value) is not PartyAndReference:
        return f"expected a PartyAndReference, got {type(value).__qualname__}"
    return party_problem(value.party) or _reference_problem(value.reference)
