"""The IO requests a flow hands to its state machine.

Every interaction of a flow with the world outside its own objects is performed in
``fibers._requests``, which journals each completed request and, after a restart, answers it
again from the journal (docs/checkpoint-format.md, "Journal records"). The requests below are
handed to the state machine's ``execute`` as plain values. Sending and receiving, a flow's
hot path, are not objects: ``FlowLogic.send``/``receive`` call the state machine's ``send``
and ``receive`` with their arguments, so a message costs no request object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fibers._identity import Party

if TYPE_CHECKING:
    from fibers._flow_logic import FlowLogic


@dataclass(frozen=True, slots=True)
class GetFlowInfo:
    """Wait until ``party`` confirmed the session and return its ``FlowInfo``."""

    flow: FlowLogic[Any]
    party: Party


@dataclass(frozen=True, slots=True)
class Now:
    """Read the node's clock."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Suspend for ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """Call a journaled node-service operation: ``perform()`` runs it live; replay checks
    ``operation`` and ``arguments`` (a digest of the call's arguments) against the journal and
    answers with the recorded result instead, so the effect happens once."""

    operation: str
    arguments: bytes
    perform: Callable[[], object]


@dataclass(frozen=True, slots=True)
class RandomBytes:
    """Draw ``count`` random bytes (recorded, so a replay draws the same)."""

    count: int


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    """Suspend until ``check()`` returns something other than None; the node re-runs the
    check whenever ``key`` is signalled (``Node.signal``)."""

    key: str
    check: Callable[[], object]


IORequest = GetFlowInfo | Now | Sleep | ServiceCall | RandomBytes | WaitForEvent
