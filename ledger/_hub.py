"""``LedgerServiceHub``: the ledger's services as typed attributes of a node's service hub, and
``install_ledger_services``, which fills them in (docs/architecture.md, "Node services")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fibers import Party
from fibers.services import ServiceHub
from ledger._keys import KeyManagementService
from ledger._services import LEDGER_SERVICE_NAMES, notary_identities, register_notary
from ledger._tx_storage import TransactionStorage
from ledger._uniqueness import UniquenessProvider
from ledger._vault import VaultService

if TYPE_CHECKING:
    from fibers import Node

__all__ = ["LedgerServiceHub", "install_ledger_services"]


class LedgerServiceHub(ServiceHub):
    """The service hub of a ledger node: build the node with ``hub=LedgerServiceHub`` and
    ``setup=install_ledger_services``; then ``node.services.vault`` and a
    ``FlowLogic[R, LedgerServiceHub]``'s ``self.service_hub.vault`` are a ``VaultService``.

    ``uniqueness`` exists on notary nodes only (``is_notary``); the other services exist once
    ``install_ledger_services`` ran (in the node's constructor, before any flow runs)."""

    key_management: KeyManagementService
    vault: VaultService
    validated_transactions: TransactionStorage
    uniqueness: UniquenessProvider
    is_notary: bool = False
    notary_validating: bool = False  # True on a validating notary only

    def notary_identities(self) -> list[Party]:
        """The notaries registered on the node's network map, in registration order (a notary
        node registers itself)."""
        return notary_identities(self.network_map)


def install_ledger_services(node: Node[LedgerServiceHub], *, notary: bool = False,
                            validating: bool = True) -> None:
    """Install the ledger's services on ``node``, built with ``hub=LedgerServiceHub``; call it
    before the node runs any flow. A node with storage runs its restored flows as soon as it
    is built, so pass it as the node's ``setup``, which the constructor runs before the
    restore::

        Node(identity, transport, storage=storage, hub=LedgerServiceHub,
             setup=functools.partial(install_ledger_services, notary=True))

    Installs ``key_management``, ``vault`` and ``validated_transactions`` (and ``uniqueness``
    on a notary, which registers itself as one), and sets ``is_notary`` and
    ``notary_validating``. TypeError for a node built without ``hub=LedgerServiceHub``;
    ValueError if a ledger service is already installed.
    """
    hub = node.services
    if not isinstance(hub, LedgerServiceHub):
        raise TypeError(f"node {node.party} was built with a {type(hub).__qualname__}; the "
                        "ledger's services need Node(..., hub=LedgerServiceHub)")
    taken = [name for name in LEDGER_SERVICE_NAMES if name in hub.installed]
    if taken:
        raise ValueError(f"node {node.party} already has ledger services ({', '.join(taken)})")
    # Order matters: the vault asks key management which keys are ours, and transaction
    # storage notifies the vault.
    hub.key_management = hub.install("key_management", KeyManagementService(node))
    hub.vault = hub.install("vault", VaultService(node))
    hub.validated_transactions = hub.install("validated_transactions", TransactionStorage(node))
    if notary:
        hub.uniqueness = hub.install("uniqueness", UniquenessProvider(node))
        register_notary(node.network_map, node.party)
    hub.is_notary = notary
    hub.notary_validating = notary and validating
