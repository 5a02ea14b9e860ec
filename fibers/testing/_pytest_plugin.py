"""pytest plugin: the ``mock_network`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fibers.testing._mock_network import MockNetwork


@pytest.fixture
def mock_network(tmp_path: Path) -> Iterator[MockNetwork]:
    """A fresh ``MockNetwork`` with storage under the test's tmp_path, stopped afterwards."""
    network = MockNetwork(tmp_path / "mock-network")
    try:
        yield network
    finally:
        network.stop_nodes()
