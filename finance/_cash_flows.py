
"""The cash flows: issue cash to ourselves, pay it to another party, and exit it as its issuer.

Each flow builds its transaction with the pure functions of ``finance._selection`` and
finalises it with ``FinalityFlow`` (which notarises it when it spends inputs, records it and
sends it to the other participants). Only the payment has another participant: it is the
initiating flow, and the recipient's ``CashPaymentReceiverFlow`` records the payment with
``ReceiveFinalityFlow`` (see ``ledger._finality``). Spendable cash is chosen by the vault's
``select_states`` and soft-locked to the flow's run id, so that two flows of one node never
spend the same states; the node releases the locks when the flow ends.

The helpers below (coin selection, signing, builders with recorded salt, argument checks) are
shared with the commercial paper and trade flows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from fibers import (
    FlowLogic,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    startable_by_rpc,
    suspendable,
)
from finance._amount import Amount, amount_problem
from finance._cash import Cash
from finance._errors import InsufficientBalanceException
from finance._selection import generate_cash_exit, generate_cash_issue, generate_cash_spend
from finance._tokens import MAX_REFERENCE_SIZE, Issued, currency_decimals
from ledger import (
    SALT_SIZE,
    FinalityFlow,
    InsufficientStatesException,
    LedgerServiceHub,
    ReceiveFinalityFlow,
    SignedTransaction,
    StateAndRef,
    TransactionBuilder,
)

__all__ = [
    "CashExitFlow", "CashIssueFlow", "CashPaymentFlow", "CashPaymentReceiverFlow", "advance",
    "checked_reference",
    "new_builder", "positive_amount", "select_cash", "sign_as_ours",
]

CashRef = StateAndRef[Cash.State]


# ----- helpers shared with the trade flows ---------------------------------------------------


def positive_amount(amount: object, verb: str) -> Amount[Any]:
    """``amount`` if it is a well-formed ``Amount`` of more than zero units; otherwise
    ``TypeError``/``ValueError`` saying what is wrong (``verb``: what was to be done with it)."""
    problem = amount_problem(amount)
    if problem is not None:
        raise TypeError(f"cannot {verb} {amount!r:.80}: {problem}")
    assert isinstance(amount, Amount)
    if amount.quantity == 0:
        raise ValueError(f"cannot {verb} {amount}: the amount must be positive")
    return amount


def _currency_amount(amount: object, verb: str) -> Amount[str]:
    checked = positive_amount(amount, verb)
    if not isinstance(checked.token, str):
        raise TypeError(f"cannot {verb} {checked}: give a currency amount such as "
                        "Amount.parse('100.00 USD'); this node is the issuer")
    currency_decimals(checked.token)  # ValueError naming an unknown currency
    return checked


def checked_reference(reference: object) -> bytes:
    """``reference`` if it can be an issuer's reference; ``ValueError`` naming it otherwise."""
    if type(reference) is not bytes or len(reference) > MAX_REFERENCE_SIZE:
        raise ValueError(f"an issuer reference is at most {MAX_REFERENCE_SIZE} bytes, got "
                         f"{reference!r:.80}")
    return reference


def advance(flow: FlowLogic[Any, LedgerServiceHub], step: Step) -> None:
    """Move ``flow``'s progress tracker to ``step`` (the flow must have a tracker)."""
    tracker = flow.progress_tracker
    assert tracker is not None
    tracker.current_step = step


def _quantity(state: Cash.State) -> int:
    return state.amount.quantity


def _token(state: Cash.State) -> Issued:
    """The vault's selection index groups cash by issued token (``select_states``)."""
    return state.amount.token


def select_cash(
    flow: FlowLogic[Any, LedgerServiceHub], amount: Amount[Any], *, notary: Party | None = None
) -> list[CashRef]:
    """Cash of ``flow``'s node worth at least ``amount``, soft-locked to ``flow.run_id``.

    ``amount`` in a currency code accepts that currency from any issuer; in an ``Issued`` token
    only that exact token. Only states owned by one of the node's keys, and of ``notary`` when
    given, are candidates. Raises ``InsufficientBalanceException`` naming ``amount`` and what
    the candidates not soft-locked by other flows add up to. The selection is journaled by the
    vault, so a flow replayed after a restart gets the same states (and their locks) back.
    """
    hub = flow.service_hub
    ours: set[bytes] = hub.key_management.keys()
    token = amount.token

    def pays(held: Issued) -> bool:
        return held == token if isinstance(token, Issued) else held.product == token

    def spendable(sar: CashRef) -> bool:
        state = sar.state.data
        return (pays(state.amount.token) and state.owner.owning_key in ours
                and (notary is None or sar.state.notary == notary))

    try:
        chosen: list[CashRef] = hub.vault.select_states(
            Cash.State, _quantity, amount.quantity, flow.run_id, criteria=spendable,
            group_of=_token, in_group=pays)
    except InsufficientStatesException as exc:
        raise InsufficientBalanceException(amount, Amount(exc.available, token)) from None
    return chosen


def sign_as_ours(
    flow: FlowLogic[Any, LedgerServiceHub], stx: SignedTransaction
) -> SignedTransaction:
    """``stx`` signed by every key of ``flow``'s node that it still needs, except the
    notary's (which signs only when it notarises)."""
    keys = flow.service_hub.key_management
    notary = stx.tx.notary
    wanted = stx.missing_signers - ({notary.owning_key} if notary is not None else set())
    for key in sorted(keys.our_keys_in(wanted)):
        stx = keys.sign_transaction(stx, key)
    return stx


def new_builder(
    flow: FlowLogic[Any, LedgerServiceHub], notary: Party | None = None
) -> TransactionBuilder:
    """A builder whose privacy salt is drawn through ``flow`` (recorded, so a replayed flow
    builds the very same transaction)."""
    return TransactionBuilder(notary, privacy_salt=flow.random_bytes(SALT_SIZE))


# ----- the flows -------------------------------------------------------------------------------


class _FinalisingFlow(FlowLogic[SignedTransaction, LedgerServiceHub], ABC):
    """What the issue, payment and exit flows share: generate a transaction (``_generate``),
    sign it with this node's keys and finalise it (also to ``_recipients()``)."""

    GENERATING = Step("Generating the transaction")
    SIGNING = Step("Signing the transaction")
    FINALISING = Step("Finalising the transaction")

    def __init__(self) -> None:
        self.progress_tracker = ProgressTracker(self.GENERATING, self.SIGNING, self.FINALISING)

    @suspendable
    def call(self) -> SignedTransaction:
        advance(self, self.GENERATING)
        builder = self._generate()
        advance(self, self.SIGNING)
        stx = sign_as_ours(self, builder.to_signed_transaction([]))
        advance(self, self.FINALISING)
        return self.sub_flow(FinalityFlow(stx, self._recipients()))

    @abstractmethod
    def _generate(self) -> TransactionBuilder:
        """The unsigned transaction this flow finalises."""

    def _recipients(self) -> Sequence[Party]:
        return ()


@startable_by_rpc
class CashIssueFlow(_FinalisingFlow):
    """Issue ``amount`` (a currency amount, e.g. ``Amount.parse("100.00 USD")``) as cash owed by
    this node under ``issuer_ref``, owned by this node, under ``notary``; return the finalised
    transaction. It spends nothing, so it is recorded without notarisation.

    The constructor raises ``ValueError``/``TypeError`` for a zero or malformed amount, an
    amount that is not a plain currency amount, or a malformed reference.
    """

    def __init__(self, amount: Amount[str], issuer_ref: bytes, notary: Party) -> None:
        super().__init__()
        self.amount = _currency_amount(amount, "issue")
        self.issuer_ref = checked_reference(issuer_ref)
        self.notary = notary

    def _generate(self) -> TransactionBuilder:
        me = self.our_identity
        builder = new_builder(self, self.notary)
        generate_cash_issue(builder, self.amount.issued_by(me, self.issuer_ref), me)
        return builder


@initiating_flow
@startable_by_rpc
class CashPaymentFlow(_FinalisingFlow):
    """Pay ``amount`` of this node's cash to ``recipient``; return the finalised transaction.

    ``amount`` in a currency code (``Amount.parse("10.00 USD")``) is paid with that currency
    from any issuer, largest states first; an ``Issued`` amount only with that token. Change
    goes back to this node. The cash is soft-locked to this flow until it ends. The constructor
    refuses a zero amount with ``ValueError``; ``call`` raises ``InsufficientBalanceException``
    (needed and available) when the spendable cash falls short, and ``ValueError`` when the
    chosen cash is notarised by several notaries.
    """

    def __init__(self, amount: Amount[Any], recipient: Party) -> None:
        super().__init__()
        self.amount = positive_amount(amount, "pay")
        self.recipient = recipient

    def _generate(self) -> TransactionBuilder:
        builder = new_builder(self)
        cash = select_cash(self, self.amount)
        generate_cash_spend(builder, cash, self.amount, self.recipient, self.our_identity)
        return builder

    def _recipients(self) -> Sequence[Party]:
        return [self.recipient]


@initiated_by(CashPaymentFlow)
class CashPaymentReceiverFlow(FlowLogic[SignedTransaction, LedgerServiceHub]):
    """The recipient's side of ``CashPaymentFlow``: record the payment (``ReceiveFinalityFlow``:
    resolved, verified, fully signed; the vault keeps the cash it owns) and return it."""

    def __init__(self, other_side: Party) -> None:
        self.other_side = other_side

    @suspendable
    def call(self) -> SignedTransaction:
        return self.sub_flow(ReceiveFinalityFlow(self.other_side))


@startable_by_rpc
class CashExitFlow(_FinalisingFlow):
    """Take ``amount`` (a currency amount) of cash this node issued under ``issuer_ref`` and
    owns off the ledger, with change back to this node; return the finalised transaction.

    The constructor refuses a zero amount with ``ValueError``; ``call`` raises
    ``InsufficientBalanceException`` when this node holds less of its own cash of that
    reference than ``amount``.
    """

    def __init__(self, amount: Amount[str], issuer_ref: bytes) -> None:
        super().__init__()
        self.amount = _currency_amount(amount, "exit")
        self.issuer_ref = checked_reference(issuer_ref)

    def _generate(self) -> TransactionBuilder:
        me = self.our_identity
        exited = self.amount.issued_by(me, self.issuer_ref)
        builder = new_builder(self)
        generate_cash_exit(builder, select_cash(self, exited), exited, me)
        return builder
