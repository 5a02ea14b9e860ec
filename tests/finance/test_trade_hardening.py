"""The trade against a hostile counterparty: a seller restricts the issuers of the cash it takes;
a buyer gives up on a seller that never finalises, at a deadline, and frees its cash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fibers import FlowException, Party, serializable, suspendable
from finance import (
    Amount,
    Cash,
    CashIssueFlow,
    CashPaymentFlow,
    SellerStarter,
    SellerTradeInfo,
    TwoPartyTradeFlow,
    UnacceptableIssuerException,
    generate_cash_spend,
)
from finance._cash_flows import new_builder, select_cash
from finance._trade import DEFAULT_FINALITY_TIMEOUT
from ledger import SecureHash, SignedTransaction, TransactionBuilder
from tests.finance.test_trade import (
    PRICE,
    assert_clean,
    assert_nothing_traded,
    buyer_outcome,
    cash_of,
    run,
    seller_failure,
    trade_network,
)

# ----- acceptable issuers -----------------------------------------------------------------------


def test_cash_the_buyer_issued_to_itself_is_refused_where_issuers_are_restricted(
        tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")  # the buyer's cash is issued by the buyer itself
    bank = trade.network.create_node("Bank")
    [paper] = trade.papers()
    handle = trade.seller.start_flow(SellerStarter(trade.buyer.party, paper, PRICE,
                                                   acceptable_issuers=[bank.party]))
    error = seller_failure(trade, handle)
    assert isinstance(error, UnacceptableIssuerException)
    assert error.issuer == trade.buyer.party
    assert "pays the seller in cash issued by Buyer" in str(error)
    assert "an issuer the seller does not accept" in str(error)
    outcome = buyer_outcome(trade)
    assert isinstance(outcome, UnacceptableIssuerException)  # it reached the buyer
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_cash_of_an_accepted_issuer_pays_for_the_paper(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", cash=())
    bank = trade.network.create_node("Bank")
    run(trade.network, bank, CashIssueFlow(Amount.parse("1,000.00 USD"), b"\x01",
                                           trade.network.notary))
    run(trade.network, bank, CashPaymentFlow(Amount.parse("1,000.00 USD"), trade.buyer.party))
    [paper] = trade.papers()
    handle = trade.seller.start_flow(SellerStarter(trade.buyer.party, paper, PRICE,
                                                   acceptable_issuers=[bank.party]))
    trade.network.run_network()
    final = handle.result.result(timeout=0)
    assert trade.buyer.services.validated_transactions.get(final.id) == final
    assert cash_of(trade.seller) == [(PRICE.quantity, "Seller")]
    [received] = trade.seller.services.vault.query(Cash.State)
    assert received.state.data.amount.token.issuer == bank.party
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


class MeddlingBuyer(TwoPartyTradeFlow.Buyer):
    """Sends its change to a third party, whom the seller's finality would then have to send
    the transaction to over the trade's session."""

    GHOST = Party("Ghost", bytes(range(32)))

    def _build_proposal(self, offer: SellerTradeInfo) -> TransactionBuilder:
        asset, price, seller_key = offer.asset_for_sale, offer.price, offer.seller_owner_key
        builder = new_builder(self, self.notary)
        builder.add_input_state(asset)
        cash = select_cash(self, price, notary=self.notary)
        generate_cash_spend(builder, cash, price, Party(self.other_party.name, seller_key),
                            self.GHOST)
        command, bought = asset.state.data.with_new_owner(self.our_identity)
        builder.add_output_state(bought, asset.state.contract)
        builder.add_command(command, seller_key)
        return builder


def test_a_proposal_involving_a_third_party_is_refused(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", buyer_class=MeddlingBuyer)
    error = seller_failure(trade, trade.start())
    assert type(error) is FlowException
    assert "involves Ghost" in str(error) and "neither the seller nor the buyer" in str(error)
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_acceptable_issuers_must_be_parties(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    [paper] = trade.papers()
    with pytest.raises(TypeError, match="acceptable_issuers takes parties"):
        SellerStarter(trade.buyer.party, paper, PRICE, acceptable_issuers=["Bank"])  # type: ignore[list-item]
    trade.network.stop_nodes()


# ----- the buyer's deadline ---------------------------------------------------------------------


@serializable
@dataclass(frozen=True)
class TradeCommitted:
    """What an older seller sent after finality: 'committed, wait for it on your ledger'."""

    tx_id: SecureHash


class SignsButNeverFinalises(TwoPartyTradeFlow.Seller):
    """A seller that signs the buyer's proposal and then never finalises it: it says it has
    committed (when ``announce``) and waits for ever."""

    announce = False

    @suspendable
    def call(self) -> SignedTransaction:
        signed = self._signed_proposal()
        if self.announce:
            self.send(self.other_party, TradeCommitted(signed.id))
        self.receive(self.other_party, str)  # never comes
        raise AssertionError("unreachable")


class Announces(SignsButNeverFinalises):
    announce = True


class StallingSellerStarter(SellerStarter):
    """SellerStarter (same responder on the buyer's node) running ``seller_class``."""

    seller_class: type[TwoPartyTradeFlow.Seller] = SignsButNeverFinalises

    def _seller(self) -> TwoPartyTradeFlow.Seller:
        honest = super()._seller()
        return self.seller_class(honest.other_party, honest.notary, honest.asset_to_sell,
                                 honest.price, honest.my_key)


class AnnouncingSellerStarter(StallingSellerStarter):
    seller_class = Announces


def _buyer_holds_cash(trade: Any) -> bool:
    return any(trade.buyer.services.vault.soft_locked(f.run_id) for f in trade.buyer.flows())


def test_a_buyer_gives_up_on_a_seller_that_never_finalises_and_frees_its_cash(
        tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    [paper] = trade.papers()
    seller = trade.seller.start_flow(StallingSellerStarter(trade.buyer.party, paper, PRICE))
    trade.network.run_network()
    trade.network.advance_time(DEFAULT_FINALITY_TIMEOUT - timedelta(seconds=1))
    trade.network.run_network()
    assert _buyer_holds_cash(trade), "the buyer waits, its cash soft-locked"
    trade.network.advance_time(timedelta(seconds=1))
    trade.network.run_network()
    outcome = buyer_outcome(trade)
    assert isinstance(outcome, FlowException)
    message = str(outcome)
    assert "Seller did not finalise the trade's transaction" in message
    assert "the buyer stopped waiting and released its cash" in message
    assert not _buyer_holds_cash(trade)
    assert cash_of(trade.buyer) == [(100_000, "Buyer")]
    assert_clean(trade.buyer)
    error = seller.result.exception(timeout=0)  # the seller learns why
    assert isinstance(error, FlowException) and "did not finalise" in str(error)
    assert_nothing_traded(trade)
    trade.network.stop_nodes()


def test_the_buyers_deadline_is_its_own_choice(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    notary = trade.network.notary

    def factory(party: Party) -> TwoPartyTradeFlow.Buyer:
        flow = TwoPartyTradeFlow.Buyer(party, notary, PRICE, trade.type_to_buy,
                                       finality_timeout=timedelta(seconds=30))
        trade.buyers.append(flow)
        return flow

    trade.buyer.register_initiated_flow(SellerStarter, factory)
    [paper] = trade.papers()
    trade.seller.start_flow(StallingSellerStarter(trade.buyer.party, paper, PRICE))
    trade.network.run_network()
    trade.network.advance_time(30)
    trade.network.run_network()
    assert "did not finalise" in str(buyer_outcome(trade))
    assert_clean(trade.buyer)
    trade.network.stop_nodes()


def test_a_seller_that_says_committed_but_never_finalises_is_refused_at_once(
        tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    [paper] = trade.papers()
    trade.seller.start_flow(AnnouncingSellerStarter(trade.buyer.party, paper, PRICE))
    trade.network.run_network()
    outcome = buyer_outcome(trade)
    assert isinstance(outcome, FlowException)
    assert "Expected to receive SignedTransaction from Seller but got TradeCommitted" in str(
        outcome)
    assert_clean(trade.buyer)
    assert_nothing_traded(trade)
    trade.network.stop_nodes()


def test_the_finality_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finality_timeout"):
        TwoPartyTradeFlow.Buyer(Party("Seller", bytes(32)), Party("Notary", bytes(32)), PRICE,
                                Cash.State, finality_timeout=timedelta(0))
