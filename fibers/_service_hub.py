"""``ServiceHub``: the node services a flow may use (public as ``fibers.services.ServiceHub``;
docs/architecture.md, "Node services").

A layer that adds services declares them as typed attributes of a ``ServiceHub`` subclass (the
ledger's ``LedgerServiceHub`` has ``vault: VaultService``, ...), and a node is built with that
class (``Node(..., hub=LedgerServiceHub)``), so ``node.services.vault`` and a flow's
``self.service_hub.vault`` have their real types. Services a test or an application adds
without a subclass are installed by name and found by type (``hub.get(Flags)``).

A subclass's attributes are filled by the layer's setup (``Node(setup=...)``), not by
``install``: a setup that may find its service installed already (``MockNetwork.restart_node``
carries installed services over) binds that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from typing_extensions import TypeVar as DefaultTypeVar

from fibers._checkpoint import SerializeAsToken, TokenContext

if TYPE_CHECKING:
    from fibers._clock import Clock
    from fibers._node_types import NetworkMap, NodeInfo

__all__ = ["HubT", "HubT_co", "ServiceHub"]

S = TypeVar("S", bound=SerializeAsToken)


class ServiceHub(SerializeAsToken):
    """The node's info, clock and network map, and the services installed on the node.
    Checkpoints hold the hub and every installed service as tokens."""

    def __init__(self, info: NodeInfo, clock: Clock, network_map: NetworkMap,
                 tokens: TokenContext) -> None:
        """Internal: the node builds its hub (``Node(..., hub=cls)``)."""
        self.my_info = info
        self.clock = clock
        self.network_map = network_map
        # Invariant: every value is registered with _tokens, under its own name.
        self.installed: dict[str, SerializeAsToken] = {}
        self._tokens = tokens

    def serialization_token(self) -> str:
        """One token for a node's hub whatever its class, the one checkpoints have named it by
        since it lived in ``fibers._node_types``: a flow holding the hub restores on a node
        built with another hub class."""
        return "fibers._node_types:ServiceHub"

    def install(self, name: str, service: S) -> S:
        """Install ``service`` under ``name`` and return it: checkpoints hold it as a token and
        rewire it to the live instance on restore. A subclass keeps what it returns in a typed
        attribute (``self.vault = self.install("vault", VaultService(node))``); others find it
        with ``get``. ValueError if ``name`` is taken."""
        if name in self.installed:
            raise ValueError(f"the service hub already has a {name!r}")
        self.installed[name] = service
        self._tokens.register(service)
        return service

    def get(self, kind: type[S], name: str | None = None) -> S:
        """The installed service of type ``kind`` (the one called ``name``, if given).
        LookupError naming what is installed when there is none, or more than one and no
        ``name`` tells them apart."""
        found = [(n, s) for n, s in self.installed.items()
                 if isinstance(s, kind) and (name is None or n == name)]
        if len(found) == 1:
            return found[0][1]
        installed = ", ".join(f"{n} ({type(s).__qualname__})" for n, s in self.installed.items())
        problem = "no" if not found else "more than one"
        raise LookupError(f"{problem} {kind.__qualname__} service"
                          f"{'' if name is None else f' called {name!r}'} is installed "
                          f"(installed: {installed or 'none'}); pass its name to get()")

    def reload_from_storage(self) -> None:
        """After steps were lost, services whose memory ran ahead of storage start again from
        what was committed (services opt in with a ``reload_from_storage()`` method)."""
        for service in self.installed.values():
            reload = getattr(service, "reload_from_storage", None)
            if callable(reload):
                reload()


HubT = DefaultTypeVar("HubT", bound=ServiceHub, default=ServiceHub)
"""The hub class a node is built with (``Node[LedgerServiceHub]``); ``ServiceHub`` if unsaid."""
HubT_co = DefaultTypeVar("HubT_co", bound=ServiceHub, default=ServiceHub, covariant=True)
"""The hub class a flow needs (``FlowLogic[SignedTransaction, LedgerServiceHub]``)."""
