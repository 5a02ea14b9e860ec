"""``NodeService``: the typed base of node services that keep state in the node's storage
(public as ``fibers.services.NodeService``; docs/architecture.md, "Node services").

A service keeps an in-memory index and hands its storage changes to the node as write
functions (``_write``): inside a flow they commit with that flow's step, outside flows with
the next commit, which ``_flush`` runs at once. ``_after_commit`` runs an action once a write
is confirmed to have landed. Services run on the node's scheduler thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fibers._checkpoint import SerializeAsToken

if TYPE_CHECKING:
    from fibers._node import Node
    from fibers._storage_api import Storage, Txn

__all__ = ["NodeService"]


class NodeService(SerializeAsToken):
    """Base of a node service: its node, the node's storage (None without storage), and the
    helpers that make its writes part of the step pipeline. Checkpoints hold it as a token."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._storage: Storage | None = node.storage

    def _write(self, write: Callable[[Txn], object]) -> None:
        """Make ``write`` part of the current flow step (or of the next commit)."""
        self._node.step_write(write)

    def _after_commit(self, landed: Callable[[Txn], bool], action: Callable[[], object]) -> None:
        """Run ``action`` after the commit, if ``landed(txn)`` finds the write in storage.

        A step that failed alone has its writes rolled back while the other steps' after-commit
        actions still run, so an action must check that its own write is there.
        """
        storage = self._storage

        def run() -> None:
            if storage is not None:
                with storage.read() as txn:
                    if not landed(txn):
                        return
            action()

        self._node.after_commit(run)

    def _flush(self) -> None:
        """Outside flows, commit the pending writes now (inside a flow they commit with its
        step; a call from a callback of the running scheduler is committed by its loop)."""
        self._node.flush_writes()
