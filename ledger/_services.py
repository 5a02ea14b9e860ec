"""The node services of the ledger: the storage model they share (``ledger._hub`` installs them).

Every ledger service (transaction storage, vault, key management, notary uniqueness) follows
one storage model, so that what a flow does to the ledger commits atomically with its step:

* **Memory is the index, LMDB the truth.** A service keeps an in-memory index, loaded from the
  node's LMDB when the service is built, and answers every read from it.
* **Writes ride on the flow's step.** A change updates the index at once and hands a write
  function to ``node.step_write``: inside a flow it runs in that step's nested transaction and
  commits with the flow's journal; outside flows the service commits it before returning
  (``_flush``), so a test or RPC call that returns has stored its effect.
* **Effects happen once.** Mutating methods a flow calls are ``@journaled``: a flow replayed
  after a crash gets the recorded result and the method does not run again, because its
  effect committed with the step that recorded it.
* **Lost steps are forgotten.** When a step fails to commit the node calls
  ``reload_from_storage()`` on every service, which rebuilds the index from what committed.
* **Feeds and signals follow commits.** Track feeds are published and waiting flows signalled
  after the commit, and only after a storage read confirms the write landed: the node runs a
  round's after-commit actions before it reloads services whose steps failed.
* Nodes without storage keep memory only. Services are single-threaded: only the node's
  scheduler thread (which runs its flows) may call them.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from fibers import Party
from fibers.services import NodeService
from ledger._crypto import HASH_SIZE, SecureHash
from ledger._states import StateRef

if TYPE_CHECKING:
    from fibers import Node

__all__ = [
    "LEDGER_SERVICE_NAMES",
    "LedgerService",
    "notary_identities",
    "ref_from_key",
    "ref_key",
    "register_notary",
]

LEDGER_SERVICE_NAMES: Final = ("key_management", "vault", "validated_transactions", "uniqueness")
"""The ``service_hub`` names ``install_ledger_services`` installs services under
(``ledger._hub.LedgerServiceHub``)."""

_INDEX: Final = struct.Struct(">I")


def ref_key(ref: StateRef) -> bytes:
    """The storage key of ``ref``: its tx hash then its index, big-endian, so that keys sort
    like ``StateRef``s."""
    return ref.txhash.bytes + _INDEX.pack(ref.index)


def ref_from_key(key: bytes) -> StateRef:
    """The ``StateRef`` whose storage key is ``key`` (see ``ref_key``)."""
    return StateRef(SecureHash(key[:HASH_SIZE]), _INDEX.unpack(key[HASH_SIZE:])[0])


class LedgerService(NodeService):
    """Base of the ledger's node services: a ``NodeService`` (its node, its storage, and the
    write helpers of the storage model in the module docstring) whose databases are opened
    when it is built."""

    def __init__(self, node: Node, databases: Iterable[str]) -> None:
        super().__init__(node)
        if self._storage is not None:
            # Opening a database needs LMDB's write lock, which a running group commit holds:
            # it has to happen now, before any step writes to it. Every ledger database is
            # guarded: a record deleted or rolled back behind the node's back stops it from
            # starting (fibers._storage_guard, docs/security.md).
            for name in databases:
                self._storage.guard(name)


# ----- notaries on the network --------------------------------------------------------------------

# Notary parties by name per network map, in registration order. A side table rather than an
# attribute because the network map belongs to the engine, which knows nothing of notaries.
_NOTARIES: weakref.WeakKeyDictionary[object, dict[str, Party]] = weakref.WeakKeyDictionary()


def register_notary(network_map: object, party: Party) -> None:
    """Make ``party`` known as a notary to the nodes sharing ``network_map``."""
    _NOTARIES.setdefault(network_map, {})[party.name] = party


def notary_identities(network_map: object) -> list[Party]:
    """The notaries registered on ``network_map``, in the order they were registered."""
    return list(_NOTARIES.get(network_map, {}).values())
