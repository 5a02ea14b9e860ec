"""Operator text to values: a flow's arguments, ``name: value, ...``, each converted to its
parameter's annotated type (``cli._convert_flows`` finds the flow and builds it).

Flows an operator may start are the ``FlowLogic`` subclasses marked ``@startable_by_rpc``
that have been imported. They are found by a short name (``CashIssueFlow``, or
``TwoPartyTradeFlow.Seller`` for a nested class) or a qualified one (``finance.CashIssueFlow``,
``finance._cash_flows.CashIssueFlow`` or ``finance._cash_flows:CashIssueFlow``).

Arguments are written ``name: value, name: value``; a comma separates arguments only where a
``name:`` follows it (so ``amount: 1,000.00 USD`` needs no quotes). A value may be quoted
(``"a, b: c"``), and a list is written in brackets (``[BankA, BankB]``). Conversion by
annotated type:

=================  ==========================================================================
``str``            the text (quotes removed); also for unannotated parameters and ``Any``
``int``/``float``  ``42``, ``1_000``, ``0x2a``; ``2.5``
``bool``           ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``
``bytes``          hex when the text is an even number of hex digits (``01``, ``0xcafe``),
                   otherwise its UTF-8 bytes; a quoted value is always UTF-8 (``"01"``)
``datetime``       ISO 8601 (UTC when no offset is given), ``now``, ``now+30d`` / ``now-2h``
                   (``s``, ``m``, ``h``, ``d``, ``w``) on the node's clock
``timedelta``      ``90s``, ``15m``, ``2h``, ``30d``
``Party``          a legal name on the node's network map
``Amount``         ``100 USD``, ``1,000.50 GBP`` (``Amount.parse``)
``StateAndRef``    ``<tx hash>(<index>)`` of an unconsumed state in the node's vault; the hash
                   may be abbreviated to a unique prefix
``StateRef``       ``<tx hash>(<index>)``
``type``           a state class by name (``Cash.State``, ``CommercialPaper.State``)
``list[X]`` ...    ``[x, y]`` (a single value without brackets is a one-element list)
``X | None``       ``none`` for None, otherwise X
enums              a member's name
=================  ==========================================================================

An unknown name (flow, party, state type, state) raises :class:`UnknownNameError`. A
missing, unknown or unconvertible argument raises :class:`FlowArgumentError` whose message
names the argument and the flow's signature, e.g. ``CashPaymentFlow(amount: Amount, recipient:
Party)``.
"""

from __future__ import annotations

import collections.abc
import difflib
import enum
import re
import types
import typing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from fibers import Party
from finance import Amount
from ledger import SecureHash, StateAndRef, StateRef

__all__ = [
    "ConversionContext",
    "FlowArgumentError",
    "UnknownNameError",
    "closest",
    "convert",
    "error_message",
    "parse_arguments",
    "parse_state_ref",
    "split_arguments",
    "type_name",
]


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (ignoring case), best first."""
    folded: dict[str, str] = {}
    for candidate in candidates:
        folded.setdefault(candidate.casefold(), candidate)
    matches = difflib.get_close_matches(name.casefold(), list(folded), n=n, cutoff=0.6)
    return [folded[m] for m in matches]


class UnknownNameError(LookupError):
    """No flow class, party or state (or more than one) answers to the name the operator
    gave; the message lists the closest or the candidates."""

    def __str__(self) -> str:  # LookupError would show the repr of a single argument
        return str(self.args[0]) if self.args else ""


class FlowArgumentError(ValueError):
    """A flow's arguments are missing, unknown or cannot be converted; the message names the
    argument and the expected signature."""


class ConversionContext(Protocol):
    """What converting arguments needs to know of the node the flow is started on."""

    def party(self, name: str) -> Party:
        """The party called ``name``; ``LookupError`` naming the known ones otherwise."""

    def state_and_ref(self, text: str) -> StateAndRef[Any]:
        """The unconsumed vault state at ``text`` (``hash(index)``, hash maybe abbreviated)."""

    def state_type(self, name: str) -> type:
        """The state class called ``name``."""

    def now(self) -> datetime:
        """The node's current time."""


# ----- types and arguments -----------------------------------------------------------------------

def type_name(hint: Any) -> str:  # noqa: PLR0911 (one return per kind of type reads best)
    """A type as the signature shows it: ``Amount`` for ``Amount[Any]``, ``list[Party]``,
    ``Party | None``."""
    if isinstance(hint, str):
        return hint
    if hint is Any:
        return "Any"
    if hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is type:
        return "type"
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence,
                  collections.abc.Iterable, collections.abc.Set):
        inner = [a for a in args if a is not Ellipsis]
        return f"{origin.__name__}[{type_name(inner[0])}]" if inner else origin.__name__
    if origin is not None:
        return type_name(origin)
    return getattr(hint, "__qualname__", repr(hint))


def error_message(exc: BaseException) -> str:
    """``exc``'s message (a ``KeyError``'s without the quotes its ``str`` adds)."""
    return str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)


def parse_arguments(text: str) -> dict[str, str]:
    """``"amount: 100 USD, recipient: BankB"`` as ``{"amount": "100 USD", "recipient":
    "BankB"}``. Values keep their quotes (conversion removes them). Raises
    :class:`FlowArgumentError` for an item without a name, or a name given twice."""
    arguments: dict[str, str] = {}
    for item in _split_top_level(text, ",", before_name=True):
        if not item:
            continue
        name, colon, value = item.partition(":")
        name = name.strip()
        if not colon or not name.isidentifier():
            raise FlowArgumentError(f"cannot read {item!r} as an argument: write name: value, "
                                    "separated by commas")
        if name in arguments:
            raise FlowArgumentError(f"argument {name!r} is given twice")
        arguments[name] = value.strip()
    return arguments


def split_arguments(text: str) -> list[str]:
    """The ``name: value`` items of ``text`` as :func:`parse_arguments` sees them, unparsed
    (at least one, maybe empty)."""
    return _split_top_level(text, ",", before_name=True)


_NEXT_NAME = re.compile(r"\s*[A-Za-z_]\w*\s*:")


def _split_top_level(text: str, separator: str, *, before_name: bool = False) -> list[str]:
    """``text`` split at ``separator`` outside quotes and brackets, items stripped; with
    ``before_name`` only where a ``name:`` follows, so that "1,000.00 USD" stays whole. A
    quote opens only at the start of a value (O'Brien is a name, not a quotation)."""
    items: list[str] = []
    current: list[str] = []
    depth, quote, previous = 0, "", ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'" and previous in ("", ":", ",", "[", "("):
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == separator and depth == 0 and (
                not before_name or _NEXT_NAME.match(text, index + 1)):
            items.append("".join(current).strip())
            current, previous = [], char
            continue
        current.append(char)
        if not char.isspace():
            previous = char
    if quote:
        raise FlowArgumentError(f"unclosed quote {quote} in {text!r}")
    items.append("".join(current).strip())
    return items


# ----- converting one value -----------------------------------------------------------------------

def _unquote(text: str) -> tuple[str, bool]:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1], True
    return text, False


_HEX = re.compile(r"(?:0x)?((?:[0-9a-fA-F]{2})+)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def convert(text: str, hint: Any, context: ConversionContext) -> Any:
    """``text`` as a value of type ``hint`` (see the module docstring); ``ValueError``,
    ``TypeError`` or ``LookupError`` saying what was expected otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(text, args, context)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence,
                  collections.abc.Iterable, collections.abc.Set):
        return _convert_collection(text, origin, args, context)
    if origin is type or hint is type:
        return context.state_type(_unquote(text)[0])
    target = origin if origin is not None else hint
    raw, quoted = _unquote(text)
    if target is Any or target is object or target is str or isinstance(target, str):
        return raw
    if not isinstance(target, type):
        raise TypeError(f"cannot convert text to {type_name(hint)}")
    for kind, converter in _CONVERTERS:
        if issubclass(target, kind):
            return converter(raw, quoted, target, context)
    raise TypeError(f"the shell cannot convert text to {type_name(hint)}")


def _convert_union(text: str, members: tuple[Any, ...], context: ConversionContext) -> Any:
    if type(None) in members and _unquote(text)[0].lower() in ("none", "null"):
        return None
    errors = []
    for member in (m for m in members if m is not type(None)):
        try:
            return convert(text, member, context)
        except (ValueError, TypeError, LookupError) as exc:
            errors.append(error_message(exc))
    raise ValueError("; ".join(errors))


def _convert_collection(
    text: str, origin: Any, args: tuple[Any, ...], context: ConversionContext
) -> Any:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        items = [i for i in _split_top_level(body[1:-1], ",") if i]
    else:
        items = [body] if body else []
    item_type = next((a for a in args if a is not Ellipsis), Any)
    values = [convert(item, item_type, context) for item in items]
    if origin in (tuple, set, frozenset):
        return origin(values)
    return values


def _to_bool(raw: str, _q: bool, _t: type, _c: ConversionContext) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _to_int(raw: str, _q: bool, _t: type, _c: ConversionContext) -> int:
    text = raw.replace(",", "")
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        return int(text, 0)  # 0x2a, 0o52, 0b101010
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None


def _to_float(raw: str, _q: bool, _t: type, _c: ConversionContext) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None


def _to_decimal(raw: str, _q: bool, _t: type, _c: ConversionContext) -> Decimal:
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not a decimal number") from None


def _to_bytes(raw: str, quoted: bool, _t: type, _c: ConversionContext) -> bytes:
    match = None if quoted else _HEX.fullmatch(raw)
    return bytes.fromhex(match.group(1)) if match else raw.encode("utf-8")


def _to_timedelta(raw: str, _q: bool, _t: type, _c: ConversionContext) -> timedelta:
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"{raw!r} is not a duration such as 90s, 15m, 2h or 30d")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _to_datetime(raw: str, _q: bool, _t: type, context: ConversionContext) -> datetime:
    text = raw.strip()
    if text.lower().startswith("now"):
        rest = text[3:].strip()
        if not rest:
            return context.now()
        if rest[0] in "+-":
            delta = _to_timedelta(rest[1:], False, timedelta, context)
            return context.now() + (delta if rest[0] == "+" else -delta)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{raw!r} is not a time: write ISO 8601 (2026-03-01T12:00:00Z), "
                         "now, or now+30d") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_date(raw: str, _q: bool, _t: type, _c: ConversionContext) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a date such as 2026-03-01") from None


def _to_party(raw: str, _q: bool, _t: type, context: ConversionContext) -> Party:
    return context.party(raw)


def _to_amount(raw: str, _q: bool, _t: type, _c: ConversionContext) -> Amount[str]:
    return Amount.parse(raw)


def _to_state_and_ref(raw: str, _q: bool, _t: type, context: ConversionContext) -> Any:
    return context.state_and_ref(raw)


_REF = re.compile(r"([0-9a-fA-F]+)\s*\(\s*(\d+)\s*\)")


def parse_state_ref(text: str) -> tuple[str, int]:
    """``"3f2a...(0)"`` as (hash text, index); ``ValueError`` naming the form otherwise."""
    match = _REF.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a state reference: write <tx hash>(<index>), "
                         "e.g. 3f2a9c(0)")
    return match.group(1).lower(), int(match.group(2))


def _to_state_ref(raw: str, _q: bool, _t: type, _c: ConversionContext) -> StateRef:
    tx_hash, index = parse_state_ref(raw)
    return StateRef(SecureHash.parse(tx_hash), index)


def _to_hash(raw: str, _q: bool, _t: type, _c: ConversionContext) -> SecureHash:
    return SecureHash.parse(raw.strip())


def _to_enum(raw: str, _q: bool, target: type, _c: ConversionContext) -> Any:
    kind = typing.cast(type[enum.Enum], target)
    members = {m.name.lower(): m for m in kind}
    try:
        return members[raw.strip().lower()]
    except KeyError:
        names = ", ".join(m.name for m in kind)
        raise ValueError(f"{raw!r} is not one of {names}") from None


# Order matters: bool before int (bool is an int), datetime before date.
_CONVERTERS: list[tuple[type, Any]] = [
    (bool, _to_bool),
    (enum.Enum, _to_enum),
    (int, _to_int),
    (float, _to_float),
    (Decimal, _to_decimal),
    (bytes, _to_bytes),
    (datetime, _to_datetime),
    (date, _to_date),
    (timedelta, _to_timedelta),
    (Party, _to_party),
    (Amount, _to_amount),
    (StateAndRef, _to_state_and_ref),
    (StateRef, _to_state_ref),
    (SecureHash, _to_hash),
]
