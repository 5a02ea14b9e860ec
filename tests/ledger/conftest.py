"""Fixtures shared by the ledger service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.testing import MockNetwork
from tests.ledger._helpers import ledger_network


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    """A ledger network with a validating notary, Alice and Bob; stopped afterwards."""
    network = ledger_network(tmp_path, "Alice", "Bob")
    try:
        yield network
    finally:
        network.stop_nodes()
