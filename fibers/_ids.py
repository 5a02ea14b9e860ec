"""Where a node draws its new flow run ids and session ids (``Node.ids``).

The default draws them from the operating system's randomness (``uuid4``, ``secrets``). The
simulation explorer (``fibers.testing.explore``, docs in README "Test a flow against every
crash") gives every node a ``SeededIds`` instead, so that a run of the same schedule draws the
same ids: a node's ids then depend only on the seed, its name, how often it was started and the
events it handled, never on what the other nodes did in between.
"""

from __future__ import annotations

import random
import secrets
import uuid

from fibers._flow_logic import StateMachineRunId

__all__ = ["IdSource", "SeededIds"]


class IdSource:
    """Fresh random ids (the production source)."""

    def run_id(self) -> uuid.UUID:
        """A new flow run id (``StateMachineRunId._new``'s, the one place they are drawn)."""
        return StateMachineRunId._new().uuid

    def session_id(self) -> int:
        """A new session id in ``0 .. 2**63 - 1``."""
        return secrets.randbits(63)


class SeededIds(IdSource):
    """Ids drawn from a pseudo-random generator seeded with ``seed`` (any string): the same seed
    gives the same sequence. Not for production: ids must not be guessable there."""

    def __init__(self, seed: str) -> None:
        self._random = random.Random(seed)

    def run_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    def session_id(self) -> int:
        return self._random.getrandbits(63)
