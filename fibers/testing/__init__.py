"""Test support: ``MockNetwork`` (in-memory, hand-pumped nodes), a pytest ``mock_network``
fixture (registered as a pytest plugin by the package), and the simulation explorer
(``explore``, ``replay``: every crash point, delivery order and duplicate of a scenario)."""

from fibers.testing._explore import ExplorationFailure, Failure, Report, explore, replay
from fibers.testing._mock_network import MockNetwork, TranscriptEntry

__all__ = ["ExplorationFailure", "Failure", "MockNetwork", "Report", "TranscriptEntry",
           "explore", "replay"]
