"""Exceptions raised when a transaction is checked.

Hierarchy::

    FlowException (fibers)                   crosses to the counterparties a flow talks to
    └── TransactionVerificationException     .tx_id: the transaction that failed
        ├── ContractRejection                a contract's verify refused it (.contract, .reason)
        ├── UnknownContract                  a state names a contract not registered here
        ├── InvalidNotary                    a state's notary is not the transaction's
        ├── TransactionResolutionException   an input's transaction is not known (.missing)
        ├── SignaturesMissingException       required signatures are absent (.missing_keys)
        ├── SignatureInvalidException        a signature does not verify (.key)
        └── MalformedTransactionException    a received transaction is structurally invalid
    ValueError
    └── RequirementFailed                    raised by require() inside Contract.verify

Verification failures are ``FlowException`` subclasses, as in the original system: a flow that
refuses a counterparty's transaction tells it why. Every attribute is wire-serialisable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fibers import FlowException

if TYPE_CHECKING:
    from ledger._crypto import SecureHash
    from ledger._states import StateRef

__all__ = [
    "ContractRejection", "InvalidNotary", "MalformedTransactionException", "RequirementFailed",
    "SignatureInvalidException", "SignaturesMissingException", "TransactionResolutionException",
    "TransactionVerificationException", "UnknownContract",
]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class TransactionVerificationException(FlowException):
    """Transaction ``tx_id`` is not valid; the message says why and what to do."""

    def __init__(self, tx_id: SecureHash, message: str) -> None:
        super().__init__(message)
        self.tx_id = tx_id

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call __init__ with args only, which subclasses do not accept.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ContractRejection(TransactionVerificationException):
    """``contract``'s ``verify`` refused the transaction for ``reason`` (the rule it broke)."""

    def __init__(self, tx_id: SecureHash, contract: str, reason: str) -> None:
        super().__init__(tx_id, f"contract {contract} rejected transaction {tx_id}: {reason}")
        self.contract, self.reason = contract, reason


class UnknownContract(TransactionVerificationException):
    """A state names ``contract``, which no ``@contract`` class on this node is registered as."""

    def __init__(self, tx_id: SecureHash, contract: str) -> None:
        super().__init__(
            tx_id, f"transaction {tx_id} uses contract {contract!r}, which is not registered on "
            "this node: decorate the class with @contract and import its module before verifying")
        self.contract = contract


class InvalidNotary(TransactionVerificationException):
    """A state's notary differs from the transaction's (``reason`` names both)."""

    def __init__(self, tx_id: SecureHash, reason: str) -> None:
        super().__init__(tx_id, f"transaction {tx_id} has an invalid notary: {reason}")
        self.reason = reason


class TransactionResolutionException(TransactionVerificationException):
    """Input ``missing`` of transaction ``tx_id`` points at a transaction this node lacks."""

    def __init__(self, tx_id: SecureHash, missing: StateRef) -> None:
        super().__init__(
            tx_id, f"transaction {tx_id} spends {missing}, which could not be resolved: record "
            f"its transaction {missing.txhash} first (ResolveTransactionsFlow fetches it)")
        self.missing = missing


class SignaturesMissingException(TransactionVerificationException):
    """Transaction ``tx_id`` lacks signatures by ``missing_keys`` (``descriptions`` names each:
    the party name when known, and a key prefix)."""

    def __init__(
        self, missing_keys: Iterable[bytes], descriptions: Iterable[str], tx_id: SecureHash
    ) -> None:
        self.missing_keys = frozenset(missing_keys)
        self.descriptions = tuple(descriptions)
        super().__init__(tx_id, f"transaction {tx_id} is missing signatures by "
                                f"{', '.join(self.descriptions)}")


class SignatureInvalidException(TransactionVerificationException):
    """The signature by ``key`` on transaction ``tx_id`` does not verify over its id."""

    def __init__(self, tx_id: SecureHash, key: bytes, description: str) -> None:
        super().__init__(
            tx_id, f"the signature by {description} on transaction {tx_id} does not verify: the "
            "transaction changed after it was signed, or the signature is not over its id")
        self.key = key


class MalformedTransactionException(TransactionVerificationException):
    """A transaction (typically received from a peer) breaks a structural rule: ``reason``."""

    def __init__(self, tx_id: SecureHash, reason: str) -> None:
        super().__init__(tx_id, f"transaction {tx_id} is malformed: {reason}")
        self.reason = reason


class RequirementFailed(ValueError):
    """A contract rule does not hold; raised by :func:`ledger.require` inside ``verify``.

    The pipeline turns it into a :class:`ContractRejection` naming the contract and the tx.
    """

    def __init__(self, rule: str) -> None:
        super().__init__(f"Failed requirement: {rule}")
        self.rule = rule
