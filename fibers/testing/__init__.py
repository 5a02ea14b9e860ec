"""Test support: ``MockNetwork`` (in-memory, hand-pumped nodes) and a pytest ``mock_network``
fixture (registered as a pytest plugin by the package)."""

from fibers.testing._mock_network import MockNetwork, TranscriptEntry

__all__ = ["MockNetwork", "TranscriptEntry"]
