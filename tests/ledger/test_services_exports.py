"""The public surface of the ledger's node services."""

import ledger
import ledger.testing

SERVICE_NAMES = [
    "TransactionStorage", "VaultService", "VaultUpdate", "StatesNotAvailableException",
    "InsufficientStatesException", "KeyManagementService", "UniquenessProvider", "NotaryError",
    "NotaryException", "install_ledger_services",
]
TESTING_NAMES = [
    "MockNetwork", "DummyState", "DummyContract", "issue_for_test", "spend_for_test",
    "sign_for_test", "record_for_test",
]


def test_ledger_exports_the_service_names() -> None:
    assert set(SERVICE_NAMES) <= set(ledger.__all__)
    for name in SERVICE_NAMES:
        assert getattr(ledger, name) is not None


def test_ledger_testing_exports_exactly_its_helpers() -> None:
    assert sorted(ledger.testing.__all__) == sorted(TESTING_NAMES)
    for name in TESTING_NAMES:
        assert getattr(ledger.testing, name) is not None
