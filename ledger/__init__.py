"""The ledger: states, contracts and transactions, signed and verified (DESIGN.md section 7).

A transaction is put together in a :class:`TransactionBuilder`, becomes a
:class:`WireTransaction` whose id is a Merkle root over its components, collects Ed25519
signatures over that id as a :class:`SignedTransaction`, and is checked as a
:class:`LedgerTransaction` (inputs resolved) against the ``@contract`` classes its states name.
"""

from ledger._builder import TransactionBuilder
from ledger._contracts import Contract, contract, contract_class, contract_name, require
from ledger._crypto import DigitalSignature, SecureHash, public_key_bytes, sign, verify
from ledger._errors import (
    ContractRejection,
    InvalidNotary,
    MalformedTransactionException,
    RequirementFailed,
    SignatureInvalidException,
    SignaturesMissingException,
    TransactionResolutionException,
    TransactionVerificationException,
    UnknownContract,
)
from ledger._filtered import FilteredGroup, FilteredTransaction
from ledger._states import (
    Command,
    CommandData,
    ContractState,
    LinearState,
    OwnableState,
    StateAndRef,
    StateRef,
    TimeWindow,
    TransactionState,
    UniqueIdentifier,
)
from ledger._transactions import (
    LedgerTransaction,
    SignedTransaction,
    Signer,
    StateResolver,
    WireTransaction,
)

__all__ = [
    "Command",
    "CommandData",
    "Contract",
    "ContractRejection",
    "ContractState",
    "DigitalSignature",
    "FilteredGroup",
    "FilteredTransaction",
    "InvalidNotary",
    "LedgerTransaction",
    "LinearState",
    "MalformedTransactionException",
    "OwnableState",
    "RequirementFailed",
    "SecureHash",
    "SignatureInvalidException",
    "SignaturesMissingException",
    "SignedTransaction",
    "Signer",
    "StateAndRef",
    "StateRef",
    "StateResolver",
    "TimeWindow",
    "TransactionBuilder",
    "TransactionResolutionException",
    "TransactionState",
    "TransactionVerificationException",
    "UniqueIdentifier",
    "UnknownContract",
    "WireTransaction",
    "contract",
    "contract_class",
    "contract_name",
    "public_key_bytes",
    "require",
    "sign",
    "verify",
]
