"""Group commit on LMDB: ``WriteGroup``, one outer write transaction shared by many steps.

The steps of a group run in nested (child) transactions; a step that raises aborts alone, the
others are committed (and fsynced when the storage was opened with ``sync=True``) together
when the group ends. Work that must only happen once the data is durable (sending messages,
acknowledging inbound ones) is registered with ``WriteGroup.after_commit``. ``NodeStorage``
(``fibers._storage``) hands groups out with ``group()``; ``WriterSlot`` is how it and its
groups agree which thread holds LMDB's one write transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import lmdb

from fibers._storage_api import Txn

__all__ = ["DbHandle", "LmdbTxn", "WriteGroup", "WriterSlot"]

if TYPE_CHECKING:
    LmdbTxn: TypeAlias = lmdb.Transaction[bytes]
    DbHandle: TypeAlias = lmdb._Database
else:
    LmdbTxn = lmdb.Transaction
    DbHandle = object
# LmdbTxn: what ``NodeStorage.read`` and ``WriteGroup.step`` hand out as the opaque ``Txn``.


class WriterSlot:
    """Which thread holds the storage's write transaction (a ``WriteGroup`` or ``write_each``).

    Opening a database needs its own write transaction, which would deadlock LMDB's writer
    lock on the thread that holds it; the storage asks ``held_here`` before doing so.
    """

    def __init__(self) -> None:
        self._thread: int | None = None

    def held_here(self) -> bool:
        """Whether the calling thread holds the write transaction."""
        return self._thread == threading.get_ident()

    def take(self) -> None:
        """Record that the calling thread now holds the write transaction."""
        self._thread = threading.get_ident()

    def release(self) -> None:
        """Record that no thread holds the write transaction."""
        self._thread = None


class WriteGroup:
    """One outer LMDB write transaction shared by many steps (group commit).

    ::

        with storage.group() as group:
            error = group.step(lambda txn: storage.put(txn, "flows", key, value))
            group.after_commit(send_outbox)

    On a normal exit the outer transaction commits (synced to disk when the storage was opened
    with ``sync=True``) and then the ``after_commit`` callbacks run in registration order. If
    the block raises, or the commit fails, everything is rolled back, no callback runs and the
    error propagates. Only the thread that entered the group may use it.
    """

    def __init__(self, env: lmdb.Environment, writer: WriterSlot,
                 before_commit: Callable[[], None]) -> None:
        """Internal: use ``NodeStorage.group``. ``before_commit`` runs just before the commit
        (the storage's injected faults) and may raise to make it fail."""
        self._env = env
        self._writer = writer
        self._before_commit = before_commit
        self._txn: LmdbTxn | None = None
        self._entered = False
        self._in_step = False
        self._callbacks: list[Callable[[], object]] = []

    def __enter__(self) -> WriteGroup:
        if self._writer.held_here():
            raise RuntimeError(
                "a write group is already active on this thread; groups do not nest "
                "(use group.step for nested work)"
            )
        if self._entered:
            raise RuntimeError("a WriteGroup can be entered only once; call storage.group()")
        self._entered = True
        self._txn = self._env.begin(write=True)
        self._writer.take()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        txn = self._require_txn()
        try:
            if exc is not None:
                txn.abort()
                return
            self._before_commit()
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        finally:
            self._writer.release()
            self._txn = None
        self._run_callbacks()

    def step(self, fn: Callable[[Txn], object]) -> Exception | None:
        """Run ``fn(txn)`` in a nested transaction of the group.

        Returns None if ``fn`` returned (its writes become part of the group), or the exception
        it raised, in which case only its own writes and the ``after_commit`` callbacks it
        registered are discarded. A ``BaseException`` that is not an ``Exception`` (for example
        ``KeyboardInterrupt``) aborts the step and propagates.
        """
        outer = self._require_txn()
        if self._in_step:
            raise RuntimeError("group.step was called from inside a step; steps do not nest")
        child = self._env.begin(write=True, parent=outer)
        callbacks_before = len(self._callbacks)
        self._in_step = True
        try:
            fn(child)
        except BaseException as error:
            child.abort()
            del self._callbacks[callbacks_before:]
            if not isinstance(error, Exception):
                raise
            return error
        finally:
            self._in_step = False
        child.commit()
        return None

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback()`` once the group has committed (durably, with ``sync=True``).

        Callbacks registered inside a step that fails are dropped with that step.
        """
        self._require_txn()
        self._callbacks.append(callback)

    def _require_txn(self) -> LmdbTxn:
        if self._txn is None:
            raise RuntimeError("the write group is not active; use it as `with storage.group()`")
        return self._txn

    def _run_callbacks(self) -> None:
        # The data is committed, so every callback must get its chance (an outbox flush that
        # is skipped would strand messages until restart); failures are re-raised afterwards.
        callbacks, self._callbacks = self._callbacks, []
        errors: list[Exception] = []
        for callback in callbacks:
            try:
                callback()
            except Exception as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("after_commit callbacks failed", errors)
