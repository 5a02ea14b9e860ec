"""``FinalityFlow``: notarise a fully signed transaction, record it, and send it to the other
participants, whose ``ReceiveFinalityFlow`` verifies and records it too."""

from __future__ import annotations

from collections.abc import Iterable

from fibers import (
    FlowLogic,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    suspendable,
)
from ledger._crypto import DigitalSignature
from ledger._notary_flows import NotaryFlow
from ledger._resolution import state_resolver
from ledger._transactions import LedgerTransaction, SignedTransaction
from ledger._tx_flows import ReceiveTransactionFlow, SendTransactionFlow
from ledger._tx_storage import TransactionStorage

__all__ = ["FinalityFlow", "ReceiveFinalityFlow"]


@initiating_flow
class FinalityFlow(FlowLogic[SignedTransaction]):
    """Finalise ``stx``, which must carry every signature but the notary's, and return it with
    the notary's signature.

    ``verified_signatures`` are signatures of ``stx`` the caller verified itself earlier in
    its flow, or produced with this node's own keys: their Ed25519 check is not repeated here
    (they still count towards the required signers). Pass only such signatures, never one
    received from a peer and not yet verified.

    Verifies ``stx`` (signatures but the notary's, contracts) against this node's storage,
    notarises it if it has inputs or a time window and lacks the notary's signature, records it
    (which updates the vault), then sends it, with whatever history they lack, to every
    participant of its inputs and outputs that is not this node, and to ``extra_recipients``,
    one after the other in name order. Each of them records it in ``ReceiveFinalityFlow``.

    Raises the ``TransactionVerificationException`` that rejects ``stx`` and the notary's
    ``NotaryException``; in both cases nothing is recorded or sent.
    """

    VERIFYING = Step("Verifying the transaction")
    NOTARISING = Step("Notarising the transaction")
    RECORDING = Step("Recording the transaction locally")
    BROADCASTING = Step("Broadcasting the transaction to participants")

    def __init__(self, stx: SignedTransaction, extra_recipients: Iterable[Party] = frozenset(),
                 *, verified_signatures: Iterable[DigitalSignature] = ()) -> None:
        self.stx = stx
        self.verified_signatures = frozenset(verified_signatures)
        self.extra_recipients = frozenset(extra_recipients)
        self.progress_tracker = ProgressTracker(
            self.VERIFYING, self.NOTARISING, self.RECORDING, self.BROADCASTING)

    @suspendable
    def call(self) -> SignedTransaction:
        tracker = self.progress_tracker
        assert tracker is not None
        storage: TransactionStorage = self.service_hub.validated_transactions
        stx = self.stx
        tracker.current_step = self.VERIFYING
        notary = stx.tx.notary
        notary_keys = frozenset() if notary is None else {notary.owning_key}
        ltx = stx.verify(state_resolver(storage), notary_keys,
                         already_checked=self.verified_signatures)
        if notary is not None and notary.owning_key in stx.missing_signers:
            tracker.current_step = self.NOTARISING
            # NotaryFlow.Client returns only signatures it checked: the notary's, valid.
            notary_sigs = self.sub_flow(NotaryFlow.Client(stx))
            stx = stx.with_additional_signatures(notary_sigs)
        tracker.current_step = self.RECORDING
        # Every signature now on stx was verified above or by NotaryFlow.Client: what is left
        # to check is that no required signer is missing (the notary's signature included).
        stx.verify_signatures(already_checked=stx.sigs)
        storage.record(stx)
        tracker.current_step = self.BROADCASTING
        for party in self._recipients(ltx):
            self.sub_flow(SendTransactionFlow(party, stx))
        return stx

    def _recipients(self, ltx: LedgerTransaction) -> list[Party]:
        states = [sar.state.data for sar in ltx.inputs] + [state.data for state in ltx.outputs]
        parties = {party for state in states for party in state.participants}
        parties |= self.extra_recipients
        ours: set[bytes] = set(self.service_hub.key_management.keys())
        ours.add(self.our_identity.owning_key)
        others = {party for party in parties if party.owning_key not in ours}
        return sorted(others, key=lambda party: (party.name, party.owning_key))


@initiated_by(FinalityFlow)
class ReceiveFinalityFlow(FlowLogic[SignedTransaction]):
    """The participants' side of ``FinalityFlow``: receive the transaction from
    ``other_side``, resolve its history, verify it fully signed and record it; return it."""

    def __init__(self, other_side: Party) -> None:
        self.other_side = other_side

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveTransactionFlow(self.other_side, record=True))
