"""``FinalityFlow``: notarise a fully signed transaction, record it, and send it to the other
participants, whose ``ReceiveFinalityFlow`` verifies and records it too.

As in Corda 4, neither flow opens sessions or answers them on its own: ``FinalityFlow`` runs
inside an application's initiating flow and sends over that flow's sessions, and the
application's responder on each recipient's node calls ``ReceiveFinalityFlow`` when it expects
a transaction (naming it when it can). No responder is registered for every initiator, so a
peer cannot push a transaction into a node's storage or vault: a node records only what one of
its own flows asked for, and its vault keeps only the states relevant to it (see
``ledger._vault``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fibers import FlowLogic, Party, ProgressTracker, Step, suspendable
from ledger._crypto import DigitalSignature, SecureHash
from ledger._hub import LedgerServiceHub
from ledger._notary_flows import NotaryFlow
from ledger._resolution import state_resolver
from ledger._transactions import LedgerTransaction, SignedTransaction
from ledger._tx_flows import ReceiveTransactionFlow, SendTransactionFlow
from ledger._tx_storage import TransactionStorage

__all__ = ["FinalityFlow", "ReceiveFinalityFlow"]


class FinalityFlow(FlowLogic[SignedTransaction, LedgerServiceHub]):
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

    Not initiating: it sends over the sessions of the flow that runs it, which must be an
    ``@initiating_flow`` (or run inside one) when there is anyone to send to, and whose
    responder on every recipient's node calls ``ReceiveFinalityFlow``. Started on its own it
    can finalise only a transaction that concerns this node alone.

    Raises the ``TransactionVerificationException`` that rejects ``stx`` and the notary's
    ``NotaryException``; in both cases nothing is recorded or sent. Every recipient's node
    must confirm its session before the transaction is notarised: one that runs no responder
    for the calling flow fails this flow (``UnexpectedFlowEndException``) with nothing
    notarised or recorded.
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
        recipients = self._recipients(ltx)
        for party in recipients:
            # Before the notary consumes anything: a recipient whose node runs no responder
            # for the calling flow refuses the session here, not after notarisation.
            self.get_flow_info(party)
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
        for party in recipients:
            self.sub_flow(SendTransactionFlow(party, stx))
        return stx

    def _recipients(self, ltx: LedgerTransaction) -> list[Party]:
        states = [sar.state.data for sar in ltx.inputs] + [state.data for state in ltx.outputs]
        parties = {party for state in states for party in state.participants}
        parties |= self.extra_recipients
        ours: set[bytes] = set(self.service_hub.key_management.keys())
        ours.add(self.our_identity.owning_key)
        others = sorted((party for party in parties if party.owning_key not in ours),
                        key=lambda party: (party.name, party.owning_key))
        # One per node: a session is with a node (by name), whichever of its keys a state names.
        return list({party.name: party for party in reversed(others)}.values())[::-1]


class ReceiveFinalityFlow(FlowLogic[SignedTransaction, LedgerServiceHub]):
    """The recipients' side of ``FinalityFlow``, for an application's responder to call when it
    expects a finalised transaction from ``other_side``: receive it, resolve its history from
    that peer, verify it fully signed and record it (the vault keeps the states relevant to
    this node); return it.

    ``expected_tx_id``: the transaction the responder expects, when it knows it; any other is
    refused with a ``FlowException`` before anything is downloaded or recorded. ``deadline``:
    stop waiting for the transaction then (``UnexpectedFlowEndException``). Not initiating,
    and registered for no initiator: it runs over the caller's session with ``other_side``.
    """

    def __init__(self, other_side: Party, expected_tx_id: SecureHash | None = None, *,
                 deadline: datetime | None = None) -> None:
        self.other_side = other_side
        self.expected_tx_id = expected_tx_id
        self.deadline = deadline

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveTransactionFlow(
            self.other_side, record=True, expected_tx_id=self.expected_tx_id,
            deadline=self.deadline))
