"""Values and registries a node exposes: its info, the network map, and the summaries operators
see (the service hub is ``fibers._service_hub``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fibers._flow_logic import StateMachineRunId
from fibers._identity import Party


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the network knows about a node: its legal identity, and where a transport that
    needs one reaches it (``address``, e.g. ``"host:port"``; None for in-memory networks)."""

    legal_identity: Party
    address: str | None = None


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One unfinished flow as operators see it."""

    run_id: StateMachineRunId
    flow_class: str
    status: str
    progress_step: str | None
    waiting_for: str | None


class NetworkMap:
    """The parties this node knows, by name, with their peer addresses."""

    def __init__(self) -> None:
        self._parties: dict[str, Party] = {}
        # Invariant: every name in _addresses is in _parties.
        self._addresses: dict[str, str] = {}
        self._listeners: list[Callable[[Party], object]] = []

    def add(self, party: Party | NodeInfo) -> None:
        """Learn (or replace) a party, given as its ``Party`` or as a ``NodeInfo`` carrying its
        address, then tell every listener (``on_add``) with the party. Adding a bare ``Party``
        keeps the address known for that same party."""
        info = party if isinstance(party, NodeInfo) else NodeInfo(party)
        known = self._parties.get(info.legal_identity.name)
        self._parties[info.legal_identity.name] = info.legal_identity
        if info.address is not None:
            self._addresses[info.legal_identity.name] = info.address
        elif known != info.legal_identity:
            self._addresses.pop(info.legal_identity.name, None)
        for listener in list(self._listeners):
            listener(info.legal_identity)

    def on_add(self, listener: Callable[[Party], object]) -> Callable[[], None]:
        """Call ``listener(party)`` after each ``add`` (e.g. to send what waited for that
        party). Returns the function that removes the listener again."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def node_info(self, name: str) -> NodeInfo:
        """The party called ``name`` with its address; KeyError as ``party``."""
        return NodeInfo(self.party(name), self._addresses.get(name))

    def address(self, party: Party) -> str | None:
        """Where ``party`` is reached, if the map says so (and knows this very party)."""
        if self._parties.get(party.name) != party:
            return None
        return self._addresses.get(party.name)

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
