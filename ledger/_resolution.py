"""Downloading a transaction's dependencies from the peer that sent it, and serving them.

The fetch protocol runs over a session the two flows already share (both flows here are inlined
sub-flows, never initiating):

=============================================  ================================================
resolving side (``ResolveTransactionsFlow``)    vending side (``DataVendingFlow``)
=============================================  ================================================
``FetchTransactions(ids)``                  ->
                                            <-  ``FetchedTransactions(txs)``: same ids, same order
(one round per breadth-first layer of the graph, and per ``MAX_FETCH_BATCH`` ids)
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

from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from fibers import FlowException, FlowLogic, Party, serializable, suspendable
from fibers.services import journaled
from ledger._crypto import HASH_SIZE, DigitalSignature, SecureHash
from ledger._errors import MalformedTransactionException, _rebuild
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
MAX_FETCH_BATCH: Final = 100
"""Most ids in one ``FetchTransactions``: keeps every response well under the wire's size
limit. The vending side refuses larger requests."""


# ----- errors -------------------------------------------------------------------------------


class ResolutionException(FlowException):
    """Fetching or checking a transaction's dependencies failed; the message says why."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than their args (see ledger._errors).
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ExcessivelyLargeTransactionGraph(ResolutionException):
    """Resolving would download more than ``limit`` transactions, so the resolver refused."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the dependency graph to resolve has more than {limit} transactions: refusing to "
            "download it (pass a larger limit to ResolveTransactionsFlow if this is expected)")
        self.limit = limit


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
    """The answer to ``FetchTransactions``: one transaction per requested id, in order."""

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


def topological_order(txs: Mapping[SecureHash, SignedTransaction]) -> list[SignedTransaction]:
    """``txs`` with every transaction after those of ``txs`` it spends from (deterministic)."""
    ordered: list[SignedTransaction] = []
    done: set[SecureHash] = set()
    for root in sorted(txs):
        stack: list[tuple[SecureHash, bool]] = [(root, False)]
        while stack:
            tx_id, expanded = stack.pop()
            if tx_id in done:
                continue
            if expanded:
                done.add(tx_id)
                ordered.append(txs[tx_id])
                continue
            stack.append((tx_id, True))
            # No cycle can make this loop: an id hashes the content that names its inputs.
            deps = sorted({r.txhash for r in txs[tx_id].tx.inputs} & (txs.keys() - done))
            stack.extend((dep, False) for dep in reversed(deps))  # popped in sorted order
    return ordered


# ----- the flows ----------------------------------------------------------------------------


class ResolveTransactionsFlow(FlowLogic[list[SignedTransaction]]):
    """Download, verify and record the dependencies this node lacks, from ``other_side`` only.

    ``tx_ids`` is either a set of transaction ids, which are resolved themselves along with
    their dependencies, or a ``SignedTransaction``, whose dependencies (the transactions its
    inputs point at) are resolved but which itself is neither verified nor recorded.

    The graph is walked breadth-first, skipping transactions already in validated storage; more
    than ``limit`` transactions to download raises ``ExcessivelyLargeTransactionGraph`` before
    they are fetched. Each received transaction must have the id asked for. Then they are
    verified (signatures and contracts) dependencies first and recorded. Returns the downloaded
    transactions in that order (``SignedTransaction`` s: what storage holds).

    Runs over the caller's session with ``other_side``, which must run ``DataVendingFlow`` (or
    ``SendTransactionFlow``). Not initiating.
    """

    def __init__(
        self, tx_ids: set[SecureHash] | frozenset[SecureHash] | SignedTransaction,
        other_side: Party, *, limit: int = DEFAULT_GRAPH_LIMIT,
    ) -> None:
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        self.other_side = other_side
        self.limit = limit
        if isinstance(tx_ids, SignedTransaction):
            self.start = sorted(_dependencies([tx_ids]))
        else:
            self.start = sorted(tx_ids)

    @suspendable
    def call(self) -> list[SignedTransaction]:
        storage: TransactionStorage = self.service_hub.validated_transactions
        downloaded: dict[SecureHash, SignedTransaction] = {}
        layer = list(_unrecorded(storage, self.start))
        while layer:
            if len(downloaded) + len(layer) > self.limit:
                raise ExcessivelyLargeTransactionGraph(self.limit)
            fetched: list[SignedTransaction] = []
            for first in range(0, len(layer), MAX_FETCH_BATCH):
                fetched += self._fetch(layer[first:first + MAX_FETCH_BATCH])
            downloaded.update((stx.id, stx) for stx in fetched)
            layer = list(_unrecorded(storage, sorted(_dependencies(fetched) - downloaded.keys())))
        self.send(self.other_side, FetchDone())
        ordered = topological_order(downloaded)
        resolve = state_resolver(storage, downloaded)
        for stx in ordered:
            stx.verify(resolve)
            storage.record(stx)
        return ordered

    @suspendable
    def _fetch(self, tx_ids: list[SecureHash]) -> list[SignedTransaction]:
        reply = self.send_and_receive(
            self.other_side, FetchTransactions(tuple(tx_ids)), FetchedTransactions)
        return reply.unwrap(lambda answer: _check_fetched(answer, tx_ids))


def _check_fetched(answer: FetchedTransactions, asked: list[SecureHash]) -> list[SignedTransaction]:
    txs = answer.transactions
    if type(txs) is not tuple or len(txs) != len(asked):
        raise ResolutionException(f"asked for {len(asked)} transactions, received "
                                  f"{len(txs) if type(txs) is tuple else 'something else'}")
    checked = [checked_transaction(stx) for stx in txs]
    for stx, tx_id in zip(checked, asked, strict=True):
        if stx.id != tx_id:
            raise ResolutionException(f"asked for transaction {tx_id}, received {stx.id}")
    return checked


class DataVendingFlow(FlowLogic[None]):
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
            for tx_id in request.tx_ids:
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
