"""The two-party trade: a seller swaps an asset for the buyer's cash in one transaction
(delivery versus payment), following the reference document step by step.

The seller initiates. Over the one session the two flows share:

=================================================  ===============================================
seller (``TwoPartyTradeFlow.Seller``)               buyer (``TwoPartyTradeFlow.Buyer``)
=================================================  ===============================================
``SellerTradeInfo(asset, price, owner key)``    ->  checks price, asset type, owner and notary
the asset's ``SignedTransaction``               ->  checks it holds the asset
serves what that transaction spends from        <-> resolves it (``ResolveTransactionsFlow``),
(``DataVendingFlow``; skipped by both sides         verifies and records the asset's transaction
when it spends nothing)
                                                <-  the proposal: asset + buyer's cash in, asset to
                                                    the buyer, price to the seller, change back;
                                                    signed by the buyer (``SendTransactionFlow``)
checks the signatures (all but its own and the
notary's), resolves the buyer's cash history    <-> serves it
verifies contracts, that it is paid the price
in cash of an acceptable issuer; signs;
``FinalityFlow``: notarises, records, then
sends the transaction                           ->  ``ReceiveFinalityFlow`` for exactly the
                                                    proposed transaction, until a deadline:
                                                    verifies and records it
=================================================  ===============================================

Sending the asset's transaction with the offer (as ``SendTransactionFlow`` does) instead of
letting the buyer ask for it saves a round trip; a freshly issued asset needs no other.
Finality runs over the trade's own session, as in Corda 4: the buyer records only the
transaction it proposed, and learns of a seller's failure (a contract rejected the buyer's
cash, the notary found a double spend) at that receive. A seller that never finalises is
given up on at the buyer's deadline (``finality_timeout``): the buyer's flow ends with a
``FlowException`` and its cash is released. Every refusal is a ``FlowException`` and reaches
the other side: ``UnacceptablePriceException``, ``AssetMismatchException``,
``InsufficientBalanceException``, ``UnacceptableIssuerException``, the ledger's verification
and notary exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    ProgressTracker,
    ReceiveTimeoutException,
    Step,
    initiating_flow,
    serializable,
    startable_by_rpc,
    suspendable,
)
from finance._amount import Amount, amount_problem
from finance._cash import Cash
from finance._cash_flows import (
    advance,
    new_builder,
    positive_amount,
    select_cash,
    sign_as_ours,
)
from finance._errors import (
    AssetMismatchException,
    UnacceptableIssuerException,
    UnacceptablePriceException,
)
from finance._selection import generate_cash_spend
from finance._tokens import Issued
from ledger import (
    PUBLIC_KEY_SIZE,
    DataVendingFlow,
    FinalityFlow,
    LedgerServiceHub,
    LedgerTransaction,
    OwnableState,
    ReceiveFinalityFlow,
    ResolveTransactionsFlow,
    SecureHash,
    SendTransactionFlow,
    SignedTransaction,
    StateAndRef,
    TransactionBuilder,
    TransactionState,
    checked_transaction,
    remember_own_signatures,
    state_resolver,
)

__all__ = [
    "DEFAULT_FINALITY_TIMEOUT", "AssetMismatchException", "SellerStarter", "SellerTradeInfo",
    "TwoPartyTradeFlow", "UnacceptableIssuerException", "UnacceptablePriceException",
]

DEFAULT_FINALITY_TIMEOUT: Final = timedelta(minutes=10)
"""How long a buyer waits, by default, from sending its proposal until the seller has sent the
finalised transaction."""


# ----- the message that opens the trade (errors: finance._errors) ---------------------------


@serializable
@dataclass(frozen=True)
class SellerTradeInfo:
    """The seller's opening message: the asset for sale, the price asked, and the key that owns
    the asset (which will sign for it, and is paid the price)."""

    asset_for_sale: StateAndRef[OwnableState]
    price: Amount[Any]
    seller_owner_key: bytes


# ----- checks on what the counterparty sent (pure functions) ---------------------------------


def _pays(state: Cash.State, key: bytes, price: Amount[Any]) -> bool:
    token = state.amount.token
    in_price = token == price.token if isinstance(price.token, Issued) else (
        token.product == price.token)
    return in_price and state.owner.owning_key == key


def _check_issuers(
    ltx: LedgerTransaction, my_key: bytes, acceptable: frozenset[Party] | None
) -> None:
    """Refuse (``UnacceptableIssuerException``) cash paid to ``my_key`` whose issuer is not in
    ``acceptable`` (None: any issuer is)."""
    if acceptable is None:
        return
    for state in ltx.outputs_of_type(Cash.State):
        issuer = state.amount.token.issuer
        if state.owner.owning_key == my_key and issuer not in acceptable:
            raise UnacceptableIssuerException(issuer, ltx.id)


def _check_parties(ltx: LedgerTransaction, buyer: Party, ours: set[bytes]) -> None:
    """Refuse (``FlowException``) a proposal whose states involve anyone but the buyer's node
    and this one: finality would send the transaction to them over the trade's session."""
    states = [sar.state.data for sar in ltx.inputs] + [state.data for state in ltx.outputs]
    for party in (party for state in states for party in state.participants):
        if party.name != buyer.name and party.owning_key not in ours:
            raise FlowException(f"the proposed transaction {ltx.id} involves {party}, who is "
                                f"neither the seller nor the buyer {buyer}")


def _check_proposal(
    ltx: LedgerTransaction, asset: StateAndRef[OwnableState], price: Amount[Any], my_key: bytes
) -> None:
    """Refuse (``FlowException``) a verified proposal that does not sell exactly ``asset`` for
    at least ``price`` paid to ``my_key``. Signing authorises every command that names
    ``my_key``, so it may name it only for moving the asset, and spend nothing else of ours."""
    if all(sar.ref != asset.ref for sar in ltx.inputs):
        raise FlowException(f"the proposed transaction {ltx.id} does not spend the asset for "
                            f"sale ({asset.ref})")
    for sar in ltx.inputs:
        owners = {party.owning_key for party in sar.state.data.participants}
        if sar.ref != asset.ref and my_key in owners:
            raise FlowException(f"the proposed transaction {ltx.id} spends {sar.ref}, a state "
                                "of the seller's that is not for sale")
    move_type = type(asset.state.data.with_new_owner(asset.state.data.owner)[0])
    for command in ltx.commands:
        if my_key in command.signers and not isinstance(command.value, move_type):
            raise FlowException(f"the proposed transaction {ltx.id} asks the seller to sign a "
                                f"{type(command.value).__qualname__} command; it signs only "
                                f"the {move_type.__qualname__} of the asset")
    received = sum(s.amount.quantity for s in ltx.outputs_of_type(Cash.State)
                   if _pays(s, my_key, price))
    if received < price.quantity:
        raise FlowException(f"the proposed transaction {ltx.id} pays the seller "
                            f"{Amount(received, price.token)}, not the price of {price}")


def _check_source(received: object, asset: StateAndRef[OwnableState]) -> SignedTransaction:
    """``received`` as the transaction that created ``asset``, or a ``FlowException``."""
    stx = checked_transaction(received)
    ref = asset.ref
    outputs = stx.tx.outputs
    if stx.id != ref.txhash or not ref.index < len(outputs) or outputs[ref.index] != asset.state:
        raise FlowException(f"the asset for sale is not output {ref.index} of transaction "
                            f"{ref.txhash}, which the seller sent as its source")
    return stx


# ----- the flows ------------------------------------------------------------------------------


class TwoPartyTradeFlow:
    """Namespace of the trade's two sides (``Seller``, ``Buyer``), its messages and errors, as
    in the original system. Neither side is initiating: a flow such as ``SellerStarter`` runs
    one of them as a sub-flow over its session, and the counterparty registers the other."""

    SellerTradeInfo = SellerTradeInfo
    UnacceptablePriceException = UnacceptablePriceException
    AssetMismatchException = AssetMismatchException

    class Seller(FlowLogic[SignedTransaction, LedgerServiceHub]):
        """Sell ``asset_to_sell`` (owned by ``my_key``, one of this node's keys) to
        ``other_party`` for ``price``; return the finalised transaction.

        ``acceptable_issuers``: the parties whose cash the seller takes as payment (None: any
        issuer's). Raises the buyer's ``FlowException`` (e.g. ``UnacceptablePriceException``),
        the verification error of a proposal or of its history, a ``FlowException`` for a
        proposal that does not pay the price or asks for more than the asset,
        ``UnacceptableIssuerException`` for one that pays in cash of another issuer, and the
        notary's ``NotaryException``. The constructor refuses a zero or malformed price.
        """

        RECEIVING = Step("Offering the asset and awaiting the buyer's proposal")
        VERIFYING = Step("Verifying the proposal: signatures, history and payment")
        SIGNING = Step("Signing the transaction")
        COMMITTING = Step("Committing the transaction to the ledger")

        def __init__(
            self, other_party: Party, notary: Party, asset_to_sell: StateAndRef[OwnableState],
            price: Amount[Any], my_key: bytes, *,
            acceptable_issuers: Iterable[Party] | None = None,
        ) -> None:
            self.other_party = other_party
            self.notary = notary
            self.asset_to_sell = asset_to_sell
            self.price = positive_amount(price, "sell for")
            self.my_key = my_key
            self.acceptable_issuers = _issuers(acceptable_issuers)
            self.progress_tracker = ProgressTracker(
                self.RECEIVING, self.VERIFYING, self.SIGNING, self.COMMITTING)

        @suspendable
        def call(self) -> SignedTransaction:
            signed = self._signed_proposal()
            # Every signature on it was verified on receipt (the buyer's, in _check_signatures)
            # or made here: finality need not verify them again. It notarises, records and
            # sends the transaction to the buyer over this flow's session.
            return self.sub_flow(FinalityFlow(signed, verified_signatures=signed.sigs))

        @suspendable
        def _signed_proposal(self) -> SignedTransaction:
            """Offer the asset, then receive, verify and sign the buyer's proposal; leaves the
            tracker at COMMITTING."""
            advance(self, self.RECEIVING)
            dependencies = self._offer()
            if dependencies:  # the buyer resolves the asset's history from us
                self.sub_flow(DataVendingFlow(self.other_party, dependencies,
                                              sending=f"the asset {self.asset_to_sell.ref}"))
            proposal = self.receive(self.other_party, SignedTransaction).unwrap(
                self._check_signatures)
            advance(self, self.VERIFYING)
            self._verify_proposal(proposal)
            advance(self, self.SIGNING)
            signed = self.service_hub.key_management.sign_transaction(proposal, self.my_key)
            advance(self, self.COMMITTING)
            return signed

        def _offer(self) -> set[SecureHash]:
            """Send the trade info and the asset's transaction; return what that transaction
            spends from, which the buyer resolves next (nothing to resolve: no round trip)."""
            asset = self.asset_to_sell
            source = self.service_hub.validated_transactions.get(asset.ref.txhash)
            if source is None:
                raise FlowException(f"cannot sell {asset.ref}: its transaction is not in "
                                    f"{self.our_identity}'s validated storage")
            self.send(self.other_party, SellerTradeInfo(asset, self.price, self.my_key))
            self.send(self.other_party, source)
            return {ref.txhash for ref in source.tx.inputs}

        def _check_signatures(self, received: SignedTransaction) -> SignedTransaction:
            stx = checked_transaction(received)
            # Ours is missing because we have not signed yet; the notary's always comes last.
            stx.verify_signatures(except_keys={self.my_key, self.notary.owning_key})
            return stx

        @suspendable
        def _verify_proposal(self, stx: SignedTransaction) -> None:
            if stx.tx.notary != self.notary:
                raise FlowException(f"the proposed transaction {stx.id} names notary "
                                    f"{stx.tx.notary}, not {self.notary}")
            self.sub_flow(ResolveTransactionsFlow(stx, self.other_party))
            storage = self.service_hub.validated_transactions
            # Signatures were checked on receipt: only the contracts are left to run.
            ltx = stx.tx.verified(state_resolver(storage))
            _check_proposal(ltx, self.asset_to_sell, self.price, self.my_key)
            _check_issuers(ltx, self.my_key, self.acceptable_issuers)
            _check_parties(ltx, self.other_party, self.service_hub.key_management.keys())

    class Buyer(FlowLogic[SignedTransaction, LedgerServiceHub]):
        """Buy from ``other_party`` an asset of ``type_to_buy`` for at most
        ``acceptable_price``, paying with this node's cash under ``notary``; return the
        finalised transaction once it is recorded here.

        Raises ``UnacceptablePriceException`` / ``AssetMismatchException`` for an offer it
        does not accept, a ``FlowException`` for an asset that does not match its history or
        is not under ``notary``, ``InsufficientBalanceException`` when its spendable cash (not
        soft-locked by other flows) does not cover the price, the seller's ``FlowException`` if
        the seller refuses or fails to finalise, and a ``FlowException`` if the seller has not
        sent the finalised transaction ``finality_timeout`` after the proposal. Ending frees
        the cash it soft-locked. A seller may still finalise the proposal after the buyer gave
        up on it (it holds the buyer's signature): the error says so, and which transaction to
        look out for.
        """

        RECEIVING = Step("Waiting for the seller's offer")
        VERIFYING = Step("Verifying the offer and the asset's history")
        SIGNING = Step("Building and signing the transaction proposal")
        SENDING = Step("Sending the signed proposal to the seller")
        COMMITTING = Step("Committing: the seller finalises the transaction")
        AWAITING_FINALITY = Step("Waiting for the seller to notarise and broadcast it")
        RECORDING = Step("Recording the finalised transaction")

        def __init__(
            self, other_party: Party, notary: Party, acceptable_price: Amount[Any],
            type_to_buy: type, *, finality_timeout: timedelta = DEFAULT_FINALITY_TIMEOUT,
        ) -> None:
            if not isinstance(finality_timeout, timedelta) or finality_timeout <= timedelta(0):
                raise ValueError(f"finality_timeout must be a positive timedelta, got "
                                 f"{finality_timeout!r:.60}")
            self.other_party = other_party
            self.notary = notary
            self.acceptable_price = positive_amount(acceptable_price, "buy for")
            self.type_to_buy = type_to_buy
            self.finality_timeout = finality_timeout
            tracker = ProgressTracker(
                self.RECEIVING, self.VERIFYING, self.SIGNING, self.SENDING, self.COMMITTING)
            # Declared up front so that observers see the whole plan from the start.
            tracker.set_child_tracker(
                self.COMMITTING, ProgressTracker(self.AWAITING_FINALITY, self.RECORDING))
            self.progress_tracker = tracker

        def _finality_step(self, step: Step) -> None:
            tracker = self.progress_tracker
            child = tracker.get_child_tracker(self.COMMITTING) if tracker is not None else None
            assert child is not None
            child.current_step = step

        @suspendable
        def call(self) -> SignedTransaction:
            advance(self, self.RECEIVING)
            offer = self.receive(self.other_party, SellerTradeInfo).unwrap(self._check_offer)
            advance(self, self.VERIFYING)
            self._verify_asset(offer.asset_for_sale)
            advance(self, self.SIGNING)
            proposal = self._propose(offer)
            advance(self, self.SENDING)
            self.sub_flow(SendTransactionFlow(self.other_party, proposal))
            advance(self, self.COMMITTING)
            self._finality_step(self.AWAITING_FINALITY)
            deadline = self.now() + self.finality_timeout
            try:
                final = self.sub_flow(
                    ReceiveFinalityFlow(self.other_party, proposal.id, deadline=deadline))
            except ReceiveTimeoutException:
                raise FlowException(
                    f"{self.other_party} did not finalise the trade's transaction "
                    f"{proposal.id} by {deadline.isoformat()}: the buyer stopped waiting and "
                    "released its cash. The seller holds the buyer's signature and may still "
                    f"notarise it: if {proposal.id} turns up on the ledger, that cash is "
                    "spent") from None
            self._finality_step(self.RECORDING)
            return final

        def _check_offer(self, offer: SellerTradeInfo) -> SellerTradeInfo:
            asset = offer.asset_for_sale
            problem = amount_problem(offer.price)
            key: object = offer.seller_owner_key
            if (problem is not None or not isinstance(asset, StateAndRef)
                    or not isinstance(asset.state, TransactionState)
                    or type(key) is not bytes or len(key) != PUBLIC_KEY_SIZE):
                what = problem or "expected the asset as a StateAndRef and a 32-byte key"
                raise FlowException(f"malformed trade offer: {what}")
            price = offer.price
            if (price.token != self.acceptable_price.token or price > self.acceptable_price
                    or price.quantity == 0):
                raise UnacceptablePriceException(price)
            data = asset.state.data
            if not isinstance(data, self.type_to_buy):
                raise AssetMismatchException(self.type_to_buy.__qualname__,
                                             type(data).__qualname__)
            if not isinstance(data, OwnableState) or data.owner.owning_key != key:
                raise FlowException(f"the asset for sale ({asset.ref}) is not owned by the "
                                    "seller's key")
            if asset.state.notary != self.notary:
                raise FlowException(f"the asset for sale is notarised by "
                                    f"{asset.state.notary}; this buyer trades under "
                                    f"{self.notary}")
            return offer

        @suspendable
        def _verify_asset(self, asset: StateAndRef[OwnableState]) -> None:
            """Receive the asset's transaction, check the asset is the output it claims to be,
            resolve what the transaction spends from the seller, verify and record it."""
            stx = self.receive(self.other_party, SignedTransaction).unwrap(
                lambda received: _check_source(received, asset))
            storage = self.service_hub.validated_transactions
            # The seller serves the history only when there is some: both sides know.
            if stx.tx.inputs:
                self.sub_flow(ResolveTransactionsFlow(stx, self.other_party))
            stx.verify(state_resolver(storage))
            storage.record(stx)  # a no-op if we had it already

        def _propose(self, offer: SellerTradeInfo) -> SignedTransaction:
            builder = self._build_proposal(offer)
            signed = sign_as_ours(self, builder.to_signed_transaction([]))
            # Made here, so this node need not verify them when the seller's finality sends
            # the transaction back (ReceiveFinalityFlow recognises them by value).
            remember_own_signatures(self, signed.id, signed.sigs)
            return signed

        def _build_proposal(self, offer: SellerTradeInfo) -> TransactionBuilder:
            """The asset and our cash (soft-locked) in; the asset to us, the price to the
            seller's key and the change to us out."""
            asset, price = offer.asset_for_sale, offer.price
            me, seller_key = self.our_identity, offer.seller_owner_key
            seller = (self.other_party if seller_key == self.other_party.owning_key
                      else Party(self.other_party.name, seller_key))
            builder = new_builder(self, self.notary)
            builder.add_input_state(asset)
            cash = select_cash(self, price, notary=self.notary)
            generate_cash_spend(builder, cash, price, seller, me)
            command, bought = asset.state.data.with_new_owner(me)
            builder.add_output_state(bought, asset.state.contract)
            builder.add_command(command, seller_key)
            return builder



@initiating_flow
@startable_by_rpc
class SellerStarter(FlowLogic[SignedTransaction, LedgerServiceHub]):
    """Sell ``asset_to_sell`` (a state in this node's vault) to ``other_party`` for ``price``:
    runs ``TwoPartyTradeFlow.Seller`` over this flow's session, under the asset's notary and
    signing with the key that owns the asset (this node's identity key unless the asset is
    owned by another of its keys). ``acceptable_issuers``: the parties whose cash it takes as
    payment (None: any issuer's). Returns the finalised transaction. The buyer's node
    registers ``TwoPartyTradeFlow.Buyer`` as this flow's responder.
    """

    SELLING = Step("Selling the asset")

    def __init__(
        self, other_party: Party, asset_to_sell: StateAndRef[OwnableState], price: Amount[Any],
        *, acceptable_issuers: Iterable[Party] | None = None,
    ) -> None:
        self.other_party = other_party
        self.asset_to_sell = asset_to_sell
        self.price = positive_amount(price, "sell for")
        self.acceptable_issuers = _issuers(acceptable_issuers)
        self.progress_tracker = ProgressTracker(self.SELLING)

    @suspendable
    def call(self) -> SignedTransaction:
        advance(self, self.SELLING)
        return self.sub_flow(self._seller())

    def _seller(self) -> TwoPartyTradeFlow.Seller:
        asset = self.asset_to_sell
        owner = asset.state.data.owner.owning_key
        ours: set[bytes] = self.service_hub.key_management.keys()
        my_key = owner if owner in ours else self.our_identity.owning_key
        return TwoPartyTradeFlow.Seller(
            self.other_party, asset.state.notary, asset, self.price, my_key,
            acceptable_issuers=self.acceptable_issuers)


def _issuers(parties: Iterable[Party] | None) -> frozenset[Party] | None:
    """``parties`` as a set of issuers (None stays None: any issuer)."""
    if parties is None:
        return None
    issuers = frozenset(parties)
    wrong = [party for party in issuers if not isinstance(party, Party)]
    if wrong:
        raise TypeError(f"acceptable_issuers takes parties, got {wrong[0]!r:.60}")
    return issuers
