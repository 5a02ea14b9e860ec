"""Getting a notary's signature: ``NotaryFlow.Client`` and the service flow notaries run.

The client does not need to know what kind of notary it talks to; the notary says what it needs:

====================================================  =========================================
client (``NotaryFlow.Client``)                         notary (``NotaryServiceFlow``)
====================================================  =========================================
``NotarisationRequest(filtered tx, signatures)``   ->
                                                   non-validating: checks the filtered view,
                                                   the signatures, the time window; commits
                                                   <- ``NotarisationResponse(signatures)``
                                                   validating instead:
                                                   <- ``SendFullTransaction()``
``SendTransactionFlow(stx)``: the stx, then its    <-> ``ReceiveTransactionFlow``-like: checks
dependencies on request (``ledger._resolution``)       signatures and time window, resolves,
                                                       verifies contracts; commits
                                                   <- ``NotarisationResponse(signatures)``
====================================================  =========================================

The filtered view reveals only the inputs, the notary and the time window. Any refusal ends the
notary's flow with a ``NotaryException``, which the client re-raises from its receive.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NoReturn

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    serializable,
    suspendable,
)
from ledger._crypto import DigitalSignature, SecureHash
from ledger._errors import TransactionVerificationException
from ledger._filtered import FilteredTransaction
from ledger._hub import LedgerServiceHub
from ledger._notary_errors import NotaryError, NotaryException
from ledger._resolution import (
    ResolutionException,
    ResolveTransactionsFlow,
    checked_transaction,
    state_resolver,
)
from ledger._states import StateRef, TimeWindow
from ledger._transactions import SignedTransaction
from ledger._tx_flows import SendTransactionFlow
from ledger._tx_storage import TransactionStorage
from ledger._uniqueness import UniquenessProvider

__all__ = [
    "NotarisationRequest", "NotarisationResponse", "NotaryFlow", "NotaryReply",
    "NotaryServiceFlow", "SendFullTransaction",
]

REVEALED_TO_NOTARY: Final = frozenset({"inputs", "notary", "time_window"})
"""The component groups a non-validating notary sees."""


# ----- protocol messages --------------------------------------------------------------------


@serializable
@dataclass(frozen=True)
class NotarisationRequest:
    """Please notarise the transaction ``transaction`` views, signed with ``signatures``."""

    transaction: FilteredTransaction
    signatures: tuple[DigitalSignature, ...]


class NotaryReply:
    """Base of what a notary answers a ``NotarisationRequest`` with."""

    __slots__ = ()


@serializable
@dataclass(frozen=True)
class SendFullTransaction(NotaryReply):
    """A validating notary needs the whole transaction: run ``SendTransactionFlow`` now."""


@serializable
@dataclass(frozen=True)
class NotarisationResponse(NotaryReply):
    """The notary's signatures over the transaction id."""

    signatures: tuple[DigitalSignature, ...]


# ----- the client ---------------------------------------------------------------------------


class NotaryFlow:
    """Namespace of the notarisation client (``NotaryFlow.Client``), as in the original."""

    @initiating_flow
    class Client(FlowLogic[list[DigitalSignature], LedgerServiceHub]):
        """Ask the notary of ``stx`` to sign it and return its signatures over ``stx.id``
        (checked: each is by the notary's key and valid).

        Sends a validating notary the whole transaction and the dependencies it asks for, a
        non-validating one only the inputs, notary and time window. Raises the notary's
        ``NotaryException`` (``Conflict``, ``TimeWindowInvalid``, ``TransactionInvalid``), or
        a ``FlowException`` if ``stx`` has no notary or the notary's answer is not valid.
        The signatures are not checked here beforehand: the notary names any that are missing.
        """

        REQUESTING = Step("Requesting signature by notary service")
        VALIDATING = Step("Validating response from notary service")

        def __init__(self, stx: SignedTransaction) -> None:
            self.stx = stx
            self.progress_tracker = ProgressTracker(self.REQUESTING, self.VALIDATING)

        @suspendable
        def call(self) -> list[DigitalSignature]:
            stx = self.stx
            notary = stx.tx.notary
            if notary is None:
                raise FlowException(f"transaction {stx.id} names no notary to notarise it")
            tracker = self._tracker
            tracker.current_step = self.REQUESTING
            request = NotarisationRequest(stx.tx.filtered(REVEALED_TO_NOTARY), stx.sigs)
            reply = self.send_and_receive(notary, request, NotaryReply).unwrap(_known_reply)
            if isinstance(reply, SendFullTransaction):
                self.sub_flow(SendTransactionFlow(notary, stx))
                reply = self.receive(notary, NotarisationResponse).unwrap(_known_reply)
            tracker.current_step = self.VALIDATING
            assert isinstance(reply, NotarisationResponse)
            return _notary_signatures(reply, notary, stx.id)

        @property
        def _tracker(self) -> ProgressTracker:
            tracker = self.progress_tracker
            assert tracker is not None
            return tracker


def _known_reply(reply: NotaryReply) -> NotaryReply:
    if not isinstance(reply, SendFullTransaction | NotarisationResponse):
        raise FlowException(f"unexpected notary reply {type(reply).__qualname__}")
    return reply


def _notary_signatures(
    reply: NotarisationResponse, notary: Party, tx_id: SecureHash
) -> list[DigitalSignature]:
    sigs: object = reply.signatures
    if (type(sigs) is not tuple or not sigs
            or not all(_valid_by(sig, notary.owning_key, tx_id) for sig in sigs)):
        raise FlowException(f"the notary {notary} did not answer with valid signatures of its "
                            f"own over transaction {tx_id}")
    return list(sigs)


def _valid_by(sig: object, key: bytes | None, tx_id: SecureHash) -> bool:
    """Whether ``sig`` is a valid signature over ``tx_id`` (by ``key``, unless None)."""
    with suppress(ValueError, TypeError, AttributeError):
        return (isinstance(sig, DigitalSignature) and (key is None or sig.by == key)
                and sig.is_valid(tx_id.bytes))
    return False


# ----- the service --------------------------------------------------------------------------


@initiated_by(NotaryFlow.Client)
class NotaryServiceFlow(FlowLogic[None, LedgerServiceHub]):
    """A notary's answer to ``NotaryFlow.Client`` from ``other_side``.

    Checks, in order, that this node is the transaction's notary, the requester's signatures
    (all required ones except the notary's for a validating notary; for a non-validating one,
    which cannot see the commands that name the signers, that each is valid and there is at
    least one), the time window against ``now()``, and for a validating notary the transaction's
    dependencies and contracts. Then commits the inputs (``Conflict`` if any was consumed by
    another transaction; notarising the same transaction again is accepted) and sends back its
    signature over the id. Every refusal is a ``NotaryException`` the client receives.
    """

    def __init__(self, other_side: Party) -> None:
        self.other_side = other_side

    @suspendable
    def call(self) -> None:
        request = self.receive(self.other_side, NotarisationRequest).unwrap(_checked_request)
        filtered = request.transaction
        tx_id = filtered.id
        hub = self.service_hub
        notary = self.our_identity
        if not getattr(hub, "is_notary", False):
            _invalid(tx_id, f"{notary} is not a notary")
        if filtered.notary != notary:
            _invalid(tx_id, f"its notary is {filtered.notary}, not {notary}")
        if hub.notary_validating:
            inputs = self._validate(tx_id, notary)
        else:
            signers = [sig for sig in request.signatures if _valid_by(sig, None, tx_id)]
            if len(signers) != len(request.signatures):
                _invalid(tx_id, "a signature on it does not verify over its id")
            if all(sig.by == notary.owning_key for sig in signers):
                _invalid(tx_id, "it carries no signature of the parties to it")
            self._check_time_window(tx_id, filtered.time_window)
            inputs = filtered.inputs
        uniqueness: UniquenessProvider = hub.uniqueness
        uniqueness.commit(list(inputs), tx_id, self.other_side)
        signature = hub.key_management.sign(tx_id.bytes, notary.owning_key)
        self.send(self.other_side, NotarisationResponse((signature,)))

    @suspendable
    def _validate(self, tx_id: SecureHash, notary: Party) -> tuple[StateRef, ...]:
        """Receive the whole transaction and check it as a validating notary; its inputs."""
        self.send(self.other_side, SendFullTransaction())
        stx = self.receive(self.other_side, SignedTransaction).unwrap(checked_transaction)
        if stx.id != tx_id:
            _invalid(tx_id, f"the client sent transaction {stx.id} instead")
        own = {notary.owning_key}
        try:
            stx.verify_signatures(except_keys=own)
        except TransactionVerificationException as exc:
            _invalid(tx_id, str(exc), exc)
        self._check_time_window(tx_id, stx.tx.time_window)
        storage: TransactionStorage = self.service_hub.validated_transactions
        try:
            self.sub_flow(ResolveTransactionsFlow(stx, self.other_side))
            # The signatures were all verified above: only resolution and contracts are left.
            stx.verify(state_resolver(storage), own,
                       already_checked=stx.sigs)
        except (TransactionVerificationException, ResolutionException) as exc:
            _invalid(tx_id, str(exc), exc)
        return stx.tx.inputs

    def _check_time_window(self, tx_id: SecureHash, window: TimeWindow | None) -> None:
        if window is None:
            return
        now: datetime = self.now()
        if not window.contains(now):
            raise NotaryException(NotaryError.TimeWindowInvalid(tx_id, window, now))


def _checked_request(request: NotarisationRequest) -> NotarisationRequest:
    filtered: object = request.transaction
    sigs: object = request.signatures
    if not (isinstance(filtered, FilteredTransaction) and filtered.verify()
            and filtered.revealed_groups >= REVEALED_TO_NOTARY):
        raise FlowException("malformed notarisation request: it must carry a filtered "
                            "transaction revealing its inputs, notary and time window")
    if type(sigs) is not tuple or not all(isinstance(s, DigitalSignature) for s in sigs):
        raise FlowException("malformed notarisation request: its signatures are not a tuple "
                            "of DigitalSignature")
    return request


def _invalid(tx_id: SecureHash, reason: str, cause: BaseException | None = None) -> NoReturn:
    raise NotaryException(NotaryError.TransactionInvalid(tx_id, reason)) from cause
