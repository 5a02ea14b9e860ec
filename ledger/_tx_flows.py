"""Sending a transaction to a peer along with whatever of its history the peer lacks.

``SendTransactionFlow`` and ``ReceiveTransactionFlow`` are the two halves of one exchange over
a session their callers already share: the sender sends the ``SignedTransaction``, then serves
the receiver's ``ResolveTransactionsFlow`` (see ``ledger._resolution`` for the fetch protocol)
until the receiver says it is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fibers import FlowException, FlowLogic, Party, suspendable
from ledger._crypto import DigitalSignature, SecureHash
from ledger._hub import LedgerServiceHub
from ledger._resolution import (
    DataVendingFlow,
    ResolveTransactionsFlow,
    checked_transaction,
    state_resolver,
)
from ledger._transactions import SignedTransaction
from ledger._tx_storage import TransactionStorage

__all__ = ["ReceiveTransactionFlow", "SendTransactionFlow", "remember_own_signatures"]

def remember_own_signatures(
    flow: FlowLogic[Any, LedgerServiceHub], tx_id: SecureHash, sigs: Iterable[DigitalSignature]
) -> None:
    """Note that ``flow``'s node has just made ``sigs`` over ``tx_id`` with its own keys (call
    it with signatures it produced, never with received ones). When this node later receives
    the transaction back in ``ReceiveTransactionFlow``, a signature equal to one of these (same
    key, same bytes) is not verified again: it is the one this node made. Remembered by the
    node's key management, per node and across restarts
    (``KeyManagementService.remember_signatures``)."""
    flow.service_hub.key_management.remember_signatures(tx_id, sigs)


def _own_signatures_over(flow: FlowLogic[Any, LedgerServiceHub], tx_id: SecureHash, *, forget: bool
                         ) -> frozenset[DigitalSignature]:
    found: frozenset[DigitalSignature] = flow.service_hub.key_management.own_signatures_over(
        tx_id, forget=forget)
    return found


class SendTransactionFlow(FlowLogic[None, LedgerServiceHub]):
    """Send ``stx`` to ``other_side``, then serve its requests for ``stx``'s dependencies (and
    only those) until it has resolved them.

    The counterpart on ``other_side`` is ``ReceiveTransactionFlow``. Raises
    ``UnauthorisedTransactionRequest`` if the peer asks for a transaction outside ``stx``'s
    dependency closure. Inlined: uses the caller's session with ``other_side``.
    """

    def __init__(self, other_side: Party, stx: SignedTransaction) -> None:
        self.other_side = other_side
        self.stx = stx

    @suspendable
    def call(self) -> None:
        self.send(self.other_side, self.stx)
        dependencies = {ref.txhash for ref in self.stx.tx.inputs}
        self.sub_flow(DataVendingFlow(self.other_side, dependencies, sending=str(self.stx.id)))


class ReceiveTransactionFlow(FlowLogic[SignedTransaction, LedgerServiceHub]):
    """Receive a transaction from ``other_side`` (sent by ``SendTransactionFlow``), resolve its
    dependencies from that peer, verify it and return it.

    With ``check_sufficient_signatures`` every required signature must be present and valid;
    without it (a proposal still being signed) the signatures present must be valid. Contracts
    are always run. ``record`` stores the verified transaction in validated storage (and so the
    vault); it defaults to ``check_sufficient_signatures``, and recording a transaction whose
    signatures were not all checked is refused with ``ValueError``. A signature this node made
    itself over the transaction (see ``remember_own_signatures``) is recognised by value and
    not verified again; every other signature is.

    ``expected_tx_id``: refuse (``FlowException``) any other transaction, before resolving it.
    ``deadline``: stop waiting for the peer then (``UnexpectedFlowEndException``).

    Raises the ``TransactionVerificationException`` or ``ResolutionException`` that rejects the
    transaction; it reaches the sender. Inlined: uses the caller's session with ``other_side``.
    """

    def __init__(
        self, other_side: Party, check_sufficient_signatures: bool = True, *,
        record: bool | None = None, expected_tx_id: SecureHash | None = None,
        deadline: datetime | None = None,
    ) -> None:
        if record is None:
            record = check_sufficient_signatures
        if record and not check_sufficient_signatures:
            raise ValueError("a transaction received with check_sufficient_signatures=False may "
                             "be missing signatures and cannot be recorded: pass record=False")
        self.other_side = other_side
        self.check_sufficient_signatures = check_sufficient_signatures
        self.record = record
        self.expected_tx_id = expected_tx_id
        self.deadline = deadline

    @suspendable
    def call(self) -> SignedTransaction:
        storage: TransactionStorage = self.service_hub.validated_transactions
        stx = self.receive(self.other_side, SignedTransaction, deadline=self.deadline).unwrap(
            self._check_received)
        self.sub_flow(ResolveTransactionsFlow(stx, self.other_side, deadline=self.deadline))
        unchecked = frozenset() if self.check_sufficient_signatures else stx.missing_signers
        # Signatures equal to ones this node made over this id itself need no verification.
        ours = _own_signatures_over(self, stx.id, forget=self.record)
        stx.verify(state_resolver(storage), unchecked,
                   already_checked=ours)
        if self.record:
            storage.record(stx)
        return stx

    def _check_received(self, received: SignedTransaction) -> SignedTransaction:
        stx = checked_transaction(received)
        expected = self.expected_tx_id
        if expected is not None and stx.id != expected:
            raise FlowException(f"{self.other_side} sent transaction {stx.id}, but "
                                f"{self.our_identity} expects transaction {expected}: refusing "
                                "to resolve or record it")
        return stx
