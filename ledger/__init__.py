"""The ledger: states, contracts and transactions, signed and verified (DESIGN.md section 7).

A transaction is put together in a :class:`TransactionBuilder`, becomes a
:class:`WireTransaction` whose id is a Merkle root over its components, collects Ed25519
signatures over that id as a :class:`SignedTransaction`, and is checked as a
:class:`LedgerTransaction` (inputs resolved) against the ``@contract`` classes its states name.
"""

from ledger._builder import TransactionBuilder
from ledger._contracts import Contract, contract, contract_class, contract_name, require
from ledger._crypto import (
    PUBLIC_KEY_SIZE,
    DigitalSignature,
    SecureHash,
    public_key_bytes,
    sign,
    verify,
)
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
from ledger._finality import FinalityFlow, ReceiveFinalityFlow
from ledger._hub import LedgerServiceHub, install_ledger_services
from ledger._keys import KeyManagementService
from ledger._notary_errors import NotaryError, NotaryException
from ledger._notary_flows import NotaryFlow, NotaryServiceFlow
from ledger._resolution import (
    DataVendingFlow,
    ExcessivelyLargeTransactionGraph,
    ResolutionException,
    ResolveTransactionsFlow,
    UnauthorisedTransactionRequest,
    checked_transaction,
    state_resolver,
)
from ledger._services import register_notary
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
    SALT_SIZE,
    LedgerTransaction,
    SignedTransaction,
    Signer,
    StateResolver,
    WireTransaction,
)
from ledger._tx_flows import (
    ReceiveTransactionFlow,
    SendTransactionFlow,
    remember_own_signatures,
)
from ledger._tx_storage import TransactionStorage
from ledger._uniqueness import UniquenessProvider
from ledger._vault import (
    InsufficientStatesException,
    StatesNotAvailableException,
    VaultService,
    VaultUpdate,
)

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SALT_SIZE",
    "Command",
    "CommandData",
    "Contract",
    "ContractRejection",
    "ContractState",
    "DataVendingFlow",
    "DigitalSignature",
    "ExcessivelyLargeTransactionGraph",
    "FilteredGroup",
    "FilteredTransaction",
    "FinalityFlow",
    "InsufficientStatesException",
    "InvalidNotary",
    "KeyManagementService",
    "LedgerServiceHub",
    "LedgerTransaction",
    "LinearState",
    "MalformedTransactionException",
    "NotaryError",
    "NotaryException",
    "NotaryFlow",
    "NotaryServiceFlow",
    "OwnableState",
    "ReceiveFinalityFlow",
    "ReceiveTransactionFlow",
    "RequirementFailed",
    "ResolutionException",
    "ResolveTransactionsFlow",
    "SecureHash",
    "SendTransactionFlow",
    "SignatureInvalidException",
    "SignaturesMissingException",
    "SignedTransaction",
    "Signer",
    "StateAndRef",
    "StateRef",
    "StateResolver",
    "StatesNotAvailableException",
    "TimeWindow",
    "TransactionBuilder",
    "TransactionResolutionException",
    "TransactionState",
    "TransactionStorage",
    "TransactionVerificationException",
    "UnauthorisedTransactionRequest",
    "UniqueIdentifier",
    "UniquenessProvider",
    "UnknownContract",
    "VaultService",
    "VaultUpdate",
    "WireTransaction",
    "checked_transaction",
    "contract",
    "contract_class",
    "contract_name",
    "install_ledger_services",
    "public_key_bytes",
    "register_notary",
    "remember_own_signatures",
    "require",
    "sign",
    "state_resolver",
    "verify",
]
