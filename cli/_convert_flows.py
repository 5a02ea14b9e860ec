"""Flow and state classes by name, flow signatures, and building a flow from operator text
(see ``cli._convert`` for how each value is converted)."""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cli._convert import (
    ConversionContext,
    FlowArgumentError,
    UnknownNameError,
    closest,
    convert,
    error_message,
    parse_state_ref,
    type_name,
)
from fibers import FlowLogic, Node, Party, is_startable_by_rpc
from ledger import ContractState, LedgerServiceHub, StateAndRef

__all__ = [
    "NodeContext",
    "ParamSpec",
    "build_flow",
    "find_flow",
    "find_state_type",
    "flow_parameters",
    "parameter_specs",
    "signature_text",
    "startable_flows",
    "state_type_names",
]


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter as operators see it."""

    name: str
    type_name: str
    required: bool
    default: str | None = None

    def __str__(self) -> str:
        text = f"{self.name}: {self.type_name}"
        return text if self.required else f"{text} = {self.default}"


# ----- finding flow classes -----------------------------------------------------------------------

def startable_flows() -> list[type[FlowLogic[Any]]]:
    """Every imported ``FlowLogic`` subclass marked ``@startable_by_rpc``, by qualified name."""
    found: dict[str, type[FlowLogic[Any]]] = {}
    pending: list[type[Any]] = [FlowLogic]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if is_startable_by_rpc(sub):
                found[_qualified(sub)] = sub
    return [found[name] for name in sorted(found)]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _public_module(cls: type) -> str:
    """``finance`` for ``finance._cash_flows``: the package the class is exported from."""
    parts = cls.__module__.split(".")
    while len(parts) > 1 and parts[-1].startswith("_"):
        parts.pop()
    return ".".join(parts)


def _names_of(cls: type) -> set[str]:
    return {
        cls.__qualname__,
        _qualified(cls),
        f"{cls.__module__}:{cls.__qualname__}",
        f"{_public_module(cls)}.{cls.__qualname__}",
    }


def find_flow(
    name: str, flows: list[type[FlowLogic[Any]]] | None = None
) -> type[FlowLogic[Any]]:
    """The startable flow class called ``name`` (short or qualified, case-insensitive as a
    fallback). Raises :class:`UnknownNameError` with the closest names when there is none, and
    naming the candidates when a short name is ambiguous."""
    flows = startable_flows() if flows is None else flows
    for fold in (False, True):
        wanted = name.strip().casefold() if fold else name.strip()
        matches = [
            cls for cls in flows
            if wanted in ({n.casefold() for n in _names_of(cls)} if fold else _names_of(cls))
        ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            options = ", ".join(_qualified(cls) for cls in matches)
            raise UnknownNameError(f"{name!r} is ambiguous: it names {options}; give the "
                                  "qualified name")
    short = sorted({cls.__qualname__ for cls in flows})
    close = closest(name, short)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    known = ", ".join(short) or "none"
    raise UnknownNameError(f"no startable flow called {name!r}{hint} (startable flows: {known})")


# ----- state classes -----------------------------------------------------------------------------

def _state_classes() -> list[type[ContractState]]:
    root: type[Any] = ContractState
    found: dict[str, type[ContractState]] = {_qualified(root): root}
    pending: list[type[Any]] = [root]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            found[_qualified(sub)] = sub
    return [found[name] for name in sorted(found)]


def state_type_names() -> list[str]:
    """The short names of every imported state class (``Cash.State``, ``DummyState``)."""
    return sorted({cls.__qualname__ for cls in _state_classes()})


def find_state_type(name: str) -> type[ContractState]:
    """The state class called ``name``: its qualified or short name, or the name of the
    contract it is nested in (``Cash`` for ``Cash.State``); case-insensitive as a fallback.
    ``LookupError`` with the closest names otherwise."""
    classes = _state_classes()

    def names(cls: type) -> set[str]:
        found = _names_of(cls)
        return found | {n.removesuffix(".State") for n in found if n.endswith(".State")}

    for fold in (False, True):
        wanted = name.strip().casefold() if fold else name.strip()
        matches = [c for c in classes
                   if wanted in ({n.casefold() for n in names(c)} if fold else names(c))]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            options = ", ".join(_qualified(c) for c in matches)
            raise UnknownNameError(f"state type {name!r} is ambiguous: it names {options}")
    short = state_type_names()
    close = closest(name, [n for cls in classes for n in names(cls) if "." not in n
                           or n in short])
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UnknownNameError(f"no state type called {name!r}{hint} (known: {', '.join(short)})")


class NodeContext:
    """The :class:`ConversionContext` of a node: parties from its network map, states from
    its vault, time from its clock."""

    def __init__(self, node: Node[LedgerServiceHub]) -> None:
        self._node = node

    def party(self, name: str) -> Party:
        network_map = self._node.network_map
        try:
            return network_map.party(name)
        except KeyError:
            folded = [p for p in network_map.all_parties() if p.name.casefold() == name.casefold()]
            if len(folded) == 1:
                return folded[0]
            known = ", ".join(p.name for p in network_map.all_parties())
            raise UnknownNameError(f"no party called {name!r} on the network (known: {known})"
                                  ) from None

    def state_and_ref(self, text: str) -> StateAndRef[Any]:
        tx_hash, index = parse_state_ref(text)
        vault = self._node.services.vault
        # mypy refuses an abstract class for type[T] (python/mypy#4717); every state is one.
        every: type[ContractState] = ContractState  # type: ignore[type-abstract]
        matches = [sar for sar in vault.query(every)
                   if sar.ref.index == index and str(sar.ref.txhash).startswith(tx_hash)]
        if len(matches) == 1:
            found: StateAndRef[Any] = matches[0]
            return found
        owner = self._node.party.name
        if not matches:
            raise UnknownNameError(f"no unconsumed state {text.strip()} in the vault of {owner}")
        listed = ", ".join(str(sar.ref) for sar in matches)
        raise UnknownNameError(f"state {text.strip()} is ambiguous in the vault of {owner}: "
                              f"{listed}")

    def state_type(self, name: str) -> type:
        return find_state_type(name)

    def now(self) -> datetime:
        return self._node.clock.now()


# ----- signatures ---------------------------------------------------------------------------------

def _constructor(cls: type) -> Any:
    """The ``__init__`` that constructing ``cls`` runs (the nearest in its MRO)."""
    return next(vars(k)["__init__"] for k in cls.__mro__ if "__init__" in vars(k))


def _hints(cls: type) -> dict[str, Any]:
    init = _constructor(cls)
    try:
        return typing.get_type_hints(init)
    except Exception:
        # An annotation naming something imported only under TYPE_CHECKING: resolve what can
        # be resolved one by one, and leave the rest as their text.
        hints: dict[str, Any] = {}
        namespace = getattr(inspect.getmodule(cls), "__dict__", {})
        for name, annotation in getattr(init, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) \
                    else annotation
            except Exception:
                hints[name] = annotation
        return hints


def flow_parameters(cls: type) -> list[tuple[inspect.Parameter, Any]]:
    """The constructor parameters an operator can give (not ``self``, ``*args``,
    ``**kwargs``), each with its resolved annotation (``Any`` when there is none)."""
    hints = _hints(cls)
    params = []
    for param in inspect.signature(_constructor(cls)).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        params.append((param, hints.get(param.name, Any)))
    return params


def parameter_specs(cls: type) -> list[ParamSpec]:
    """The parameters of :func:`flow_parameters` as values."""
    return [
        ParamSpec(
            param.name,
            type_name(hint),
            param.default is inspect.Parameter.empty,
            None if param.default is inspect.Parameter.empty else _show_default(param.default),
        )
        for param, hint in flow_parameters(cls)
    ]


def _show_default(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex() or '""'
    return str(value) if isinstance(value, (int, float, str)) else repr(value)


def signature_text(cls: type) -> str:
    """``CashPaymentFlow(amount: Amount, recipient: Party)``."""
    return f"{cls.__qualname__}({', '.join(str(p) for p in parameter_specs(cls))})"


# ----- building ----------------------------------------------------------------------------------

def build_flow(
    cls: type[FlowLogic[Any]], arguments: dict[str, str], context: ConversionContext
) -> FlowLogic[Any]:
    """``cls`` constructed from ``arguments`` (name -> operator text) converted to the
    annotated types. Raises :class:`FlowArgumentError` naming the problem and the signature,
    with the constructor's own exception as ``__cause__`` when it refused the values."""
    expected = f"expected {signature_text(cls)}"
    params = flow_parameters(cls)
    names = [param.name for param, _ in params]
    for given in arguments:
        if given not in names:
            close = closest(given, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FlowArgumentError(
                f"{cls.__qualname__} has no argument {given!r}{hint}: {expected}")
    missing = [p.name for p, _ in params if p.default is p.empty and p.name not in arguments]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise FlowArgumentError(f"missing argument{'s' if len(missing) > 1 else ''} {listed}: "
                                f"{expected}")
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for param, hint in params:
        if param.name not in arguments:
            continue
        try:
            value = convert(arguments[param.name], hint, context)
        except (ValueError, TypeError, LookupError) as exc:
            raise FlowArgumentError(
                f"argument {param.name!r}: {error_message(exc)}; {expected}") from exc
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[param.name] = value
    try:
        return cls(*positional, **keywords)
    except (ValueError, TypeError) as exc:
        raise FlowArgumentError(
            f"{cls.__qualname__} refused its arguments: {type(exc).__name__}: "
            f"{error_message(exc)}; {expected}") from exc
