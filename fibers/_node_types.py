"""Values and registries a node exposes: its info, the network map, the service hub, and the
summaries operators see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fibers._checkpoint import SerializeAsToken
from fibers._flow_logic import StateMachineRunId
from fibers._identity import Party

if TYPE_CHECKING:
    from fibers._node import Node


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the network knows about a node."""

    legal_identity: Party


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One unfinished flow as operators see it."""

    run_id: StateMachineRunId
    flow_class: str
    status: str
    progress_step: str | None
    waiting_for: str | None


class NetworkMap:
    """The parties this node knows, by name."""

    def __init__(self) -> None:
        self._parties: dict[str, Party] = {}
        self._listeners: list[Callable[[Party], object]] = []

    def add(self, party: Party) -> None:
        """Learn (or replace) ``party``, then tell every listener (``on_add``)."""
        self._parties[party.name] = party
        for listener in list(self._listeners):
            listener(party)

    def on_add(self, listener: Callable[[Party], object]) -> Callable[[], None]:
        """Call ``listener(party)`` after each ``add`` (e.g. to send what waited for that
        party). Returns the function that removes the listener again."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def party(self, name: str) -> Party:
        """The party called ``name``; KeyError naming the known parties when there is none."""
        try:
            return self._parties[name]
        except KeyError:
            known = ", ".join(sorted(self._parties)) or "none"
            raise KeyError(f"no party called {name!r} on the network (known: {known})") from None

    def all_parties(self) -> list[Party]:
        """Every known party, sorted by name."""
        return [self._parties[name] for name in sorted(self._parties)]


@dataclass(frozen=True, slots=True)
class HospitalEntry:
    """A flow parked for an operator, and why."""

    run_id: StateMachineRunId
    flow_class: str
    diagnosis: str


class ServiceHub(SerializeAsToken):
    """The node services a flow may use (``FlowLogic.service_hub``). The ledger layer extends
    it with storage, the vault and key management. Checkpoints hold it as a token."""

    def __init__(self, node: Node) -> None:
        self.my_info = node.info
        self.clock = node.clock
        self.network_map = node.network_map
        self.installed: dict[str, SerializeAsToken] = {}
        self._node = node

    def install(self, name: str, service: SerializeAsToken) -> None:
        """Make ``service`` reachable as ``service_hub.<name>``; checkpoints hold it as a token
        and rewire it to the live instance on restore."""
        if hasattr(self, name):
            raise ValueError(f"the service hub already has a {name!r}")
        setattr(self, name, service)
        self.installed[name] = service
        self._node.tokens.register(service)
