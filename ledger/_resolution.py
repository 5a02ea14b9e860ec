"""Downloading a transaction's dependencies from the peer that sent it, and serving them.

The fetch protocol runs over a session the two flows already share (both flows here are inlined
sub-flows, never initiating):

=============================================  ================================================
resolving side (``ResolveTransactionsFlow``)    vending side (``DataVendingFlow``)
=============================================  ================================================
``FetchTransactions(ids)``                  ->
                                            <-  ``FetchedTransactions(txs)``: the first of those
                                                ids (as many as fit in ``MAX_REPLY_BYTES``, at
                                                least one), in order
(one round per breadth-first layer of the graph, per ``MAX_FETCH_BATCH`` ids, and per reply
that did not hold every id asked for)
``FetchDone()``                             ->  the vending flow returns
=============================================  ================================================

The vending side sends only transactions in the dependency closure it was given, discovered
as it sends them; anything else is refused with ``UnauthorisedTransactionRequest``, which ends
its flow and reaches the resolving side at its receive.

Exceptions (all ``FlowException``, so they reach the counterparty)::

    ResolutionException                  the fetch protocol failed (base)
    ├── ExcessivelyLargeTransactionGraph the graph is larger than the resolver's limit
    └── UnauthorisedTransactionRequest   a request for a transaction outside the closure
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from fibers import FlowException, FlowLogic, Party, serializable, suspendable, wire
from fibers.services import journaled
from ledger._crypto import HASH_SIZE, DigitalSignature, SecureHash
from ledger._errors import MalformedTransactionException, _rebuild
from ledger._hub import LedgerServiceHub
from ledger._states import ContractState, StateRef, TransactionState
from ledger._transactions import SignedTransaction, StateResolver, WireTransaction
from ledger._tx_storage import TransactionStorage

__all__ = [
    "DataVendingFlow", "ExcessivelyLargeTransactionGraph", "FetchDone", "FetchMessage",
    "FetchTransactions", "FetchedTransactions", "ResolutionException",
    "ResolveTransactionsFlow", "UnauthorisedTransactionRequest", "checked_transaction",
    "state_resolver",
]

DEFAULT_GRAPH_LIMIT: Final = 5_000
"""Most transactions one resolution downloads, by default."""
DEFAULT_GRAPH_BYTES: Final = 256 * 1024 * 1024
"""Most bytes (wire-encoded transactions) one resolution downloads, by default."""
MAX_FETCH_BATCH: Final = 100
"""Most ids in one ``FetchTransactions``. The vending side refuses larger requests."""
MAX_REPLY_BYTES: Final = 8 * 1024 * 1024
"""About the most bytes of transactions the vending side puts in one ``FetchedTransactions``
(it always sends at least one): keeps every reply, and the step that receives it, well under
the wire's size limit."""


# ----- errors -------------------------------------------------------------------------------


class ResolutionException(FlowException):
    """Fetching or checking a transaction's dependencies failed; the message says why."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than their args (see ledger._errors).
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ExcessivelyLargeTransactionGraph(ResolutionException):
    """Resolving would download more than ``limit`` transactions (``unit="transactions"``) or
    bytes (``unit="bytes"``), so the resolver refused."""

    def __init__(self, limit: int, *, unit: str = "transactions") -> None:
        option = "limit" if unit == "transactions" else "max_bytes"
        super().__init__(
            f"the dependency graph to resolve has more than {limit} {unit}: refusing to "
            f"download it (pass a larger {option} to ResolveTransactionsFlow if this is "
            "expected)")
        self.limit = limit
        self.unit = unit


class UnauthorisedTransactionRequest(ResolutionException):
    """The resolving peer asked for ``tx_id``, which it may not see: it is not a dependency of
    the transaction being sent."""

    def __init__(self, tx_id: SecureHash, sending: str) -> None:
        super().__init__(f"transaction {tx_id} is not a dependency of the transaction being "
                         f"sent ({sending}): refusing to send it")
        self.tx_id = tx_id


# ----- protocol messages --------------------------------------------------------------------


class FetchMessage:
    """Base of what the resolving side sends to the vending side."""

    __slots__ = ()


@serializable
@dataclass(frozen=True)
class FetchTransactions(FetchMessage):
    """Please send the transactions ``tx_ids`` (at most ``MAX_FETCH_BATCH``), in this order."""

    tx_ids: tuple[SecureHash, ...]


@serializable
@dataclass(frozen=True)
class FetchDone(FetchMessage):
    """The resolving side needs nothing more: the vending side's flow may return."""


@serializable
@dataclass(frozen=True)
class FetchedTransactions:
    """The answer to ``FetchTransactions``: the transactions of the first requested ids (at
    least one), in the order requested."""

    transactions: tuple[SignedTransaction, ...]


# ----- helpers shared with the other ledger flows --------------------------------------------


def checked_transaction(value: object) -> SignedTransaction:
    """``value`` as a structurally sound ``SignedTransaction``, for data received from a peer.

    Raises ``MalformedTransactionException`` (or ``ResolutionException`` when not even an id
    can be computed) so that the peer learns what was wrong.
    """
    if not isinstance(value, SignedTransaction) or not isinstance(value.tx, WireTransaction):
        raise ResolutionException(f"expected a SignedTransaction, got {type(value).__qualname__}")
    try:
        tx_id = value.id
        problem = value.tx.structure_problem()
    except Exception as exc:  # a decoded value can hold anything: nothing of it may leak out
        raise ResolutionException(f"received a transaction whose id cannot be computed: "
                                  f"{type(exc).__name__}: {exc}") from None
    if problem is not None:
        raise MalformedTransactionException(tx_id, problem)
    sigs: object = value.sigs
    if type(sigs) is not tuple or not all(isinstance(sig, DigitalSignature) for sig in sigs):
        raise MalformedTransactionException(tx_id, "its signatures are not a tuple of "
                                            "DigitalSignature")
    return value


def state_resolver(
    storage: TransactionStorage, pending: Mapping[SecureHash, SignedTransaction] | None = None
) -> StateResolver:
    """Resolves a ``StateRef`` against ``pending`` (transactions verified but perhaps not yet
    visible in storage) and then ``storage``."""
    extra = pending or {}

    def resolve(ref: StateRef) -> TransactionState[ContractState] | None:
        stx = extra.get(ref.txhash) or storage.get(ref.txhash)
        return None if stx is None else stx.tx.outputs[ref.index]  # IndexError: unresolved

    return resolve


@journaled
def _unrecorded(
    storage: TransactionStorage, tx_ids: Sequence[SecureHash]
) -> tuple[SecureHash, ...]:
    # Journaled: a flow restored after a restart must fetch what it fetched the first time,
    # even though it has since recorded those transactions.
    return tuple(tx_id for tx_id in tx_ids if tx_id not in storage)


def _dependencies(txs: Iterable[SignedTransaction]) -> set[SecureHash]:
    return {ref.txhash for stx in txs for ref in stx.tx.inputs}


# ----- the flows ----------------------------------------------------------------------------


class ResolveTransactionsFlow(FlowLogic[list[SecureHash], LedgerServiceHub]):
    """Download, verify and record the dependencies this node lacks, from ``other_side`` only.

    ``tx_ids`` is either a set of transaction ids, which are resolved themselves along with
    their dependencies, or a ``SignedTransaction``, whose dependencies (the transactions its
    inputs point at) are resolved but which itself is neither verified nor recorded.

    The graph is walked breadth-first, skipping transactions already in validated storage.
    Each received transaction must have the id asked for; it is verified (signatures and
    contracts) and recorded as soon as everything it spends from is recorded, so dependencies
    first. One that cannot be recorded in the step that received it is staged in transaction
    storage's scratch area (written with the flow's step) before the flow waits again: no
    downloaded transaction is held in a suspended flow. A graph of more than ``limit``
    transactions, or whose transactions add up to more than ``max_bytes``, raises
    ``ExcessivelyLargeTransactionGraph`` as soon as the bound is crossed, before anything more
    is fetched; what was staged is discarded.
    ``deadline``: stop waiting for the peer's answers then (``UnexpectedFlowEndException``).
    Returns the ids of the downloaded transactions in the order they were recorded (each
    after those it spends from).

    Runs over the caller's session with ``other_side``, which must run ``DataVendingFlow`` (or
    ``SendTransactionFlow``). Not initiating.
    """

    def __init__(
        self, tx_ids: set[SecureHash] | frozenset[SecureHash] | SignedTransaction,
        other_side: Party, *, limit: int = DEFAULT_GRAPH_LIMIT,
        max_bytes: int = DEFAULT_GRAPH_BYTES, deadline: datetime | None = None,
    ) -> None:
        for name, value in (("limit", limit), ("max_bytes", max_bytes)):
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.other_side = other_side
        self.limit = limit
        self.max_bytes = max_bytes
        self.deadline = deadline
        if isinstance(tx_ids, SignedTransaction):
            self.start = sorted(_dependencies([tx_ids]))
        else:
            self.start = sorted(tx_ids)

    @suspendable
    def call(self) -> list[SecureHash]:
        storage: TransactionStorage = self.service_hub.validated_transactions
        try:
            return self._resolve(storage)
        except FlowException:
            storage.discard_staged(self.run_id)
            raise

    @suspendable
    def _resolve(self, storage: TransactionStorage) -> list[SecureHash]:
        graph = _Graph()
        # Invariant: empty whenever the flow suspends (see _stage_held).
        held: dict[SecureHash, SignedTransaction] = {}
        layer = list(_unrecorded(storage, self.start))
        while layer:
            if graph.count + len(layer) > self.limit:
                raise ExcessivelyLargeTransactionGraph(self.limit)
            fetched: list[tuple[SecureHash, frozenset[SecureHash]]] = []
            for first in range(0, len(layer), MAX_FETCH_BATCH):
                fetched += self._fetch_and_hold(storage, layer[first:first + MAX_FETCH_BATCH],
                                                graph, held)
            layer = list(_unrecorded(storage, graph.add_layer(fetched)))
            graph.link(fetched, set(layer))
            self._record_ready(storage, graph, held)
            self._stage_held(storage, held)
        self.send(self.other_side, FetchDone())
        # Invariant: every staged transaction was recorded, since the last layer's spend from
        # recorded transactions only.
        assert not graph.waiting, "resolution ended with unverified transactions"
        return graph.order

    @suspendable
    def _fetch_and_hold(
        self, storage: TransactionStorage, tx_ids: list[SecureHash], graph: _Graph,
        held: dict[SecureHash, SignedTransaction],
    ) -> list[tuple[SecureHash, frozenset[SecureHash]]]:
        """Fetch ``tx_ids`` (several rounds if the peer answers with a prefix) into ``held``
        and return each id with what it spends from."""
        fetched: list[tuple[SecureHash, frozenset[SecureHash]]] = []
        while tx_ids:
            self._stage_held(storage, held)  # before _fetch suspends
            # Not a local: a parked flow would hold the reply (megabytes) while it waits for
            # the next one (test_resolution_bounds).
            received = self._hold(self._fetch(tx_ids), graph, held)
            fetched += received
            tx_ids = tx_ids[len(received):]  # the answer is a prefix of what was asked
        return fetched

    def _hold(self, received: list[SignedTransaction], graph: _Graph,
              held: dict[SecureHash, SignedTransaction]) -> list[tuple[SecureHash,
                                                                  frozenset[SecureHash]]]:
        out = []
        for stx in received:
            graph.add_bytes(len(wire.encode(stx)), self.max_bytes)
            held[stx.id] = stx
            out.append((stx.id, frozenset(_dependencies([stx]))))
        return out

    def _stage_held(self, storage: TransactionStorage,
                    held: dict[SecureHash, SignedTransaction]) -> None:
        """Stage in scratch storage what was received and could not be recorded in the step
        that received it: a transaction verified and recorded at once is never staged."""
        for stx in held.values():
            storage.stage(self.run_id, stx)
        held.clear()

    def _record_ready(self, storage: TransactionStorage, graph: _Graph,
                      held: dict[SecureHash, SignedTransaction]) -> None:
        """Verify and record, dependencies first, every fetched transaction whose inputs are
        all recorded by now."""
        for tx_id in graph.ready():
            stx = (held.pop(tx_id, None) or storage.staged(self.run_id, tx_id)
                   or storage.get(tx_id))
            assert stx is not None, f"staged transaction {tx_id} vanished"
            stx.verify(state_resolver(storage))
            storage.record(stx)
            graph.recorded(tx_id)

    @suspendable
    def _fetch(self, tx_ids: list[SecureHash]) -> list[SignedTransaction]:
        self.send(self.other_side, FetchTransactions(tuple(tx_ids)))
        reply = self.receive(self.other_side, FetchedTransactions, deadline=self.deadline)
        return reply.unwrap(lambda answer: _check_fetched(answer, tx_ids))


class _Graph:
    """What a resolution knows of the graph it downloads: ids only, never transactions."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.fetched: set[SecureHash] = set()
        # Invariant: waiting[t] are the fetched, unrecorded transactions t spends from; t is
        # in dependents[d] for each d in waiting[t].
        self.waiting: dict[SecureHash, set[SecureHash]] = {}
        self.dependents: dict[SecureHash, set[SecureHash]] = {}
        self._ready: list[SecureHash] = []
        # Invariant: done holds the ids of order.
        self.order: list[SecureHash] = []
        self.done: set[SecureHash] = set()

    def add_bytes(self, size: int, max_bytes: int) -> None:
        self.bytes += size
        if self.bytes > max_bytes:
            raise ExcessivelyLargeTransactionGraph(max_bytes, unit="bytes")

    def add_layer(
        self, fetched: list[tuple[SecureHash, frozenset[SecureHash]]]
    ) -> list[SecureHash]:
        """Note a fetched layer; return its dependencies not fetched yet, in order."""
        self.count += len(fetched)
        self.fetched.update(tx_id for tx_id, _ in fetched)
        return sorted({dep for _, deps in fetched for dep in deps} - self.fetched)

    def link(self, fetched: list[tuple[SecureHash, frozenset[SecureHash]]],
             unrecorded: set[SecureHash]) -> None:
        """Track what each transaction of the layer ``fetched`` waits for; ``unrecorded``: the
        dependencies storage lacks (the next layer). Any dependency neither fetched by this
        resolution nor in ``unrecorded`` is recorded already."""
        for tx_id, deps in fetched:
            missing = {dep for dep in deps if (dep in self.fetched or dep in unrecorded)
                       and dep not in self.done}
            self.waiting[tx_id] = missing
            for dep in missing:
                self.dependents.setdefault(dep, set()).add(tx_id)
            if not missing:
                heapq.heappush(self._ready, tx_id)

    def ready(self) -> Iterator[SecureHash]:
        """The transactions whose dependencies are all recorded, smallest id first; more
        become ready as ``recorded`` is called."""
        while self._ready:
            yield heapq.heappop(self._ready)

    def recorded(self, tx_id: SecureHash) -> None:
        del self.waiting[tx_id]
        self.order.append(tx_id)
        self.done.add(tx_id)
        for dependent in sorted(self.dependents.pop(tx_id, ())):
            missing = self.waiting[dependent]
            missing.discard(tx_id)
            if not missing:
                heapq.heappush(self._ready, dependent)


def _check_fetched(answer: FetchedTransactions, asked: list[SecureHash]) -> list[SignedTransaction]:
    """The transactions of ``answer``: at least the first of ``asked``, each with the id asked
    for, in order (a vending peer may answer a prefix to keep its reply small)."""
    txs = answer.transactions
    if type(txs) is not tuple or not 0 < len(txs) <= len(asked):
        raise ResolutionException(f"asked for {len(asked)} transactions, received "
                                  f"{len(txs) if type(txs) is tuple else 'something else'}")
    checked = [checked_transaction(stx) for stx in txs]
    for stx, tx_id in zip(checked, asked, strict=False):
        if stx.id != tx_id:
            raise ResolutionException(f"asked for transaction {tx_id}, received {stx.id}")
    return checked


class DataVendingFlow(FlowLogic[None, LedgerServiceHub]):
    """Serve ``ResolveTransactionsFlow`` on ``other_side``: answer its fetch requests for the
    transactions ``tx_ids`` and their dependencies (and nothing else) from validated storage,
    until it sends ``FetchDone``.

    Raises ``UnauthorisedTransactionRequest`` for a request outside that closure. Runs over the
    caller's session with ``other_side``; sends nothing first. Not initiating.
    """

    def __init__(self, other_side: Party, tx_ids: Iterable[SecureHash], *,
                 sending: str | None = None) -> None:
        self.other_side = other_side
        self.tx_ids = sorted(tx_ids)
        # How refusals describe what is being sent, e.g. the id of the transaction.
        self.sending = sending or "the requested transactions"

    @suspendable
    def call(self) -> None:
        storage: TransactionStorage = self.service_hub.validated_transactions
        authorised = set(self.tx_ids)
        while True:
            request = self.receive(self.other_side, FetchMessage).unwrap(_check_request)
            if isinstance(request, FetchDone):
                return
            assert isinstance(request, FetchTransactions)
            sent: list[SignedTransaction] = []
            size = 0
            for tx_id in request.tx_ids:
                size += storage.size_of(tx_id)
                if sent and size > MAX_REPLY_BYTES:
                    break  # the rest in the next request: the resolver asks again
                if tx_id not in authorised:
                    raise UnauthorisedTransactionRequest(tx_id, self.sending)
                stx = storage.get(tx_id)
                if stx is None:
                    raise ResolutionException(f"{self.our_identity} cannot send transaction "
                                              f"{tx_id}: it is not in its validated storage")
                # The closure is discovered as it is sent: a peer walks it breadth-first.
                authorised.update(ref.txhash for ref in stx.tx.inputs)
                sent.append(stx)
            self.send(self.other_side, FetchedTransactions(tuple(sent)))


def _check_request(request: FetchMessage) -> FetchMessage:
    if isinstance(request, FetchDone):
        return request
    ids: object = getattr(request, "tx_ids", None)
    if not (isinstance(request, FetchTransactions) and type(ids) is tuple
            and 0 < len(ids) <= MAX_FETCH_BATCH and all(map(_is_hash, ids))):
        raise ResolutionException(
            f"malformed fetch request: expected 1 to {MAX_FETCH_BATCH} transaction ids")
    return request


def _is_hash(value: object) -> bool:
    with suppress(AttributeError):
        return (type(value) is SecureHash and type(value.bytes) is bytes
                and len(value.bytes) == HASH_SIZE)
    return False
