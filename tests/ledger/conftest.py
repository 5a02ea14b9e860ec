"""Fixtures shared by the ledger service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.testing import MockNetwork


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    """A ledger network with a validating notary, Alice and Bob; stopped afterwards."""
    network = MockNetwork(tmp_path / "network")
    network.create_notary_node()
    network.create_node("Alice")
    network.create_node("Bob")
    try:
        yield network
    finally:
        network.stop_nodes()
