"""Contracts: the rules that decide whether a transaction may consume and create states.

A contract is a class with a ``verify(ltx)`` method, registered with ``@contract`` under its
``module:qualname``; a :class:`~ledger.TransactionState` names its contract by that string, and
verification looks the class up on the verifying node. ``verify`` accepts a transaction by
returning and refuses it by raising (usually through :func:`require`); the pipeline reports any
exception as a ``ContractRejection`` naming the contract, the transaction and the reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, TypeVar

from ledger._errors import RequirementFailed

if TYPE_CHECKING:
    from ledger._transactions import LedgerTransaction

__all__ = ["Contract", "contract", "contract_class", "contract_name", "require"]

_C = TypeVar("_C", bound=type["Contract"])

_REGISTRY: dict[str, type[Contract]] = {}


class Contract(ABC):
    """Base of contracts. Instances are made with no arguments, once per verification."""

    @abstractmethod
    def verify(self, ltx: LedgerTransaction) -> None:
        """Return if ``ltx`` obeys this contract's rules; raise (see :func:`require`) if not.

        Called once per transaction for each contract named by its inputs or outputs; it must
        be deterministic and use nothing but ``ltx``.
        """


def contract(cls: _C) -> _C:
    """Register the :class:`Contract` subclass ``cls`` under ``module:qualname``; return it.

    Registering a class under a name already taken replaces the earlier class (a reloaded
    module). Raises ``TypeError`` for a class that is not a ``Contract``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Contract)):
        raise TypeError(f"@contract applies to subclasses of ledger.Contract, not {cls!r}")
    _REGISTRY[contract_name(cls)] = cls
    return cls


def contract_name(cls: type[Contract]) -> str:
    """The name transaction states use for contract class ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def contract_class(name: str) -> type[Contract] | None:
    """The contract class registered as ``name`` on this node, or None."""
    return _REGISTRY.get(name)


def owning_contract(state_cls: type) -> str | None:
    """The contract a state class belongs to, or None when it does not say.

    A state class belongs to a contract when it declares ``belongs_to_contract`` (the contract
    class or its name), or when it is defined inside a registered contract class (like
    ``Cash.State`` inside ``Cash``). A transaction may only put such a state under that
    contract; otherwise any contract could mint states another contract governs.
    """
    declared = getattr(state_cls, "belongs_to_contract", None)
    if isinstance(declared, str):
        return declared
    if isinstance(declared, type) and issubclass(declared, Contract):
        return contract_name(declared)
    outer, dot, _ = state_cls.__qualname__.rpartition(".")
    if dot and "<" not in outer:
        name = f"{state_cls.__module__}:{outer}"
        if name in _REGISTRY:
            return name
    return None


def require(condition: bool, rule: str) -> None:
    """Raise ``RequirementFailed(rule)`` unless ``condition`` holds. For use in ``verify``:
    state ``rule`` as what must be true, e.g. ``require(total_in == total_out, "value is
    conserved")``."""
    if not condition:
        raise RequirementFailed(rule)
