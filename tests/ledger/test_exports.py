"""The public surface of `ledger`'s data model and transaction pipeline."""

import ledger

PIPELINE_NAMES = [
    # crypto
    "SecureHash", "DigitalSignature", "sign", "verify", "public_key_bytes",
    # states
    "ContractState", "OwnableState", "LinearState", "UniqueIdentifier", "TransactionState",
    "StateRef", "StateAndRef", "CommandData", "Command", "TimeWindow",
    # contracts
    "Contract", "contract", "contract_class", "contract_name", "require",
    # transactions
    "TransactionBuilder", "WireTransaction", "FilteredTransaction", "FilteredGroup",
    "SignedTransaction", "LedgerTransaction", "Signer", "StateResolver",
    # errors
    "TransactionVerificationException", "ContractRejection", "UnknownContract", "InvalidNotary",
    "TransactionResolutionException", "SignaturesMissingException", "SignatureInvalidException",
    "MalformedTransactionException", "RequirementFailed",
    # what finance builds its own flows from
    "SALT_SIZE", "PUBLIC_KEY_SIZE", "checked_transaction", "state_resolver",
    "remember_own_signatures",
]


def test_ledger_exports_the_pipeline_names() -> None:
    assert set(PIPELINE_NAMES) <= set(ledger.__all__)
    assert len(set(ledger.__all__)) == len(ledger.__all__)
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None
