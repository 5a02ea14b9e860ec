"""The two-party trade (TwoPartyTradeFlow with SellerStarter) end to end, and how it fails;
also the network setup the other trade tests share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from fibers import FlowException, FlowHandle, FlowLogic, Party, suspendable
from fibers._annotations import is_startable_by_rpc
from fibers._flow_logic import binding_of
from fibers._node import Node
from finance import (
    Amount,
    AssetMismatchException,
    Cash,
    CashIssueFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    InsufficientBalanceException,
    PartyAndReference,
    SellerStarter,
    SellerTradeInfo,
    TwoPartyTradeFlow,
    UnacceptablePriceException,
)
from ledger import (
    ContractRejection,
    OwnableState,
    SignedTransaction,
    StateAndRef,
    TransactionBuilder,
)
from ledger.testing import MockNetwork, record_for_test, sign_for_test

FACE_VALUE = Amount.parse("1000.00 USD")
PRICE = Amount.parse("900.00 USD")
CHECKPOINT_DATABASES = ("flows", "flow_status", "steps", "outbox", "inbox")

PaperRef = StateAndRef[CommercialPaper.State]


@dataclass
class Trade:
    """A notary, a seller holding commercial paper and a buyer holding cash, with the buyer's
    responder registered; ``buyers`` collects the Buyer flows the buyer node started."""

    network: MockNetwork
    seller: Node
    buyer: Node
    notary: Node
    buyers: list[TwoPartyTradeFlow.Buyer] = field(default_factory=list)
    acceptable_price: Amount[Any] = PRICE
    type_to_buy: type = CommercialPaper.State
    buyer_class: type[TwoPartyTradeFlow.Buyer] = TwoPartyTradeFlow.Buyer
    buyer_args: tuple[Any, ...] = ()

    def register_buyer(self) -> None:
        """Register the buyer's responder on the (possibly restarted) buyer node."""
        notary = self.network.notary

        def factory(party: Party) -> TwoPartyTradeFlow.Buyer:
            flow = self.buyer_class(party, notary, self.acceptable_price, self.type_to_buy,
                                    *self.buyer_args)
            self.buyers.append(flow)
            return flow

        self.buyer.register_initiated_flow(SellerStarter, factory)

    def restart_buyer(self) -> None:
        self.buyer = self.network.restart_node(self.buyer)
        self.register_buyer()

    def papers(self, node: Node | None = None) -> list[PaperRef]:
        papers: list[PaperRef] = (node or self.seller).services.vault.query(CommercialPaper.State)
        return papers

    def start(self, price: Amount[Any] = PRICE) -> FlowHandle[SignedTransaction]:
        [paper] = self.papers()[:1]
        return self.seller.start_flow(SellerStarter(self.buyer.party, paper, price))


def run(network: MockNetwork, node: Node, flow: FlowLogic[Any]) -> Any:
    handle = node.start_flow(flow)
    network.run_network()
    return handle.result.result(timeout=0)


def trade_network(base: Path, *, cash: tuple[str, ...] = ("1,000.00 USD",), papers: int = 1,
                  **options: Any) -> Trade:
    network = MockNetwork(base)
    notary = network.create_notary_node("Notary")
    trade = Trade(network, network.create_node("Seller"), network.create_node("Buyer"), notary,
                  **options)
    for i, text in enumerate(cash):
        run(network, trade.buyer, CashIssueFlow(Amount.parse(text), bytes([i + 1]),
                                                network.notary))
    maturity = network.clock.now() + timedelta(days=30)
    for _ in range(papers):
        run(network, trade.seller, CommercialPaperIssueFlow(FACE_VALUE, maturity, network.notary))
    trade.register_buyer()
    return trade


def cash_of(node: Node) -> list[tuple[int, str]]:
    """(quantity, owner) of each cash state in the vault, sorted."""
    return sorted((s.state.data.amount.quantity, s.state.data.owner.name)
                  for s in node.services.vault.query(Cash.State))


def checkpoints(node: Node) -> dict[str, int]:
    """How many records each checkpoint database of ``node`` holds."""
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return {db: len(list(storage.prefix_items(txn, db, b""))) for db in CHECKPOINT_DATABASES}


def assert_clean(*nodes: Node) -> None:
    """No flow left running, in the hospital, checkpointed or holding soft locks."""
    for node in nodes:
        assert node.flows() == [] and node.hospital() == [], node.party
        assert set(checkpoints(node).values()) == {0}, (node.party, checkpoints(node))
        assert not node.services.vault._locks, node.party


def seller_failure(trade: Trade, handle: FlowHandle[Any]) -> BaseException:
    trade.network.run_network()
    error = handle.result.exception(timeout=0)
    assert error is not None, "the seller was expected to fail"
    return error


def buyer_outcome(trade: Trade) -> object:
    """What the one Buyer flow of ``trade`` returned or failed with (its engine keeps a
    responder's outcome though nobody asked for its result future)."""
    [flow] = trade.buyers
    binding = binding_of(flow)
    assert binding is not None and binding.machine.finished
    machine = binding.machine
    return machine.failure if machine.failure is not None else machine.result_value


def assert_nothing_traded(trade: Trade) -> None:
    assert [p.state.data.owner.name for p in trade.papers()] == ["Seller"]
    assert trade.papers(trade.buyer) == [] and cash_of(trade.seller) == []


# ----- the trade --------------------------------------------------------------------------------


def test_trade_swaps_the_paper_for_the_price_in_one_transaction(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", cash=("600.00 USD", "500.00 USD"))
    [paper] = trade.papers()
    handle = trade.start()
    trade.network.run_network()
    final = handle.result.result(timeout=0)
    seller, buyer = trade.seller, trade.buyer
    assert buyer.services.validated_transactions.get(final.id) == final
    final.verify_signatures()  # buyer, seller and notary all signed
    assert set(final.tx.inputs) >= {paper.ref} and len(final.tx.inputs) == 3
    [bought] = trade.papers(buyer)
    assert bought.ref.txhash == final.id
    assert bought.state.data == dataclasses.replace(paper.state.data, owner=buyer.party)
    assert trade.papers() == []
    # Paid per issued token: 600 of the first, 300 of the second; 200 of change.
    assert cash_of(seller) == [(30000, "Seller"), (60000, "Seller")]
    assert cash_of(buyer) == [(20000, "Buyer")]
    consumed = trade.notary.services.uniqueness.consumed_by(paper.ref)
    assert consumed == final.id
    assert_clean(seller, buyer, trade.notary)
    trade.network.stop_nodes()


def test_both_sides_end_with_the_same_transaction(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    handle = trade.start()
    trade.network.run_network()
    final = handle.result.result(timeout=0)
    assert buyer_outcome(trade) == final
    trade.network.stop_nodes()


def test_seller_starter_is_startable_by_rpc_and_exports_the_trade_names() -> None:
    assert is_startable_by_rpc(SellerStarter)
    assert TwoPartyTradeFlow.SellerTradeInfo is SellerTradeInfo
    assert issubclass(UnacceptablePriceException, FlowException)
    assert issubclass(AssetMismatchException, FlowException)


# ----- refusals ---------------------------------------------------------------------------------


def test_a_price_above_the_buyers_limit_is_refused(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    asked = Amount.parse("950.00 USD")
    error = seller_failure(trade, trade.start(asked))
    assert isinstance(error, UnacceptablePriceException)
    assert error.given_price == asked and "Unacceptable price: 950.00 USD" in str(error)
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_a_price_in_another_currency_is_refused(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    error = seller_failure(trade, trade.start(Amount.parse("1.00 EUR")))
    assert isinstance(error, UnacceptablePriceException)
    assert error.given_price == Amount.parse("1.00 EUR")
    trade.network.stop_nodes()


def test_an_asset_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", type_to_buy=Cash.State)
    error = seller_failure(trade, trade.start())
    assert isinstance(error, AssetMismatchException)
    assert (error.expected_type_name, error.type_name) == ("Cash.State", "CommercialPaper.State")
    assert "didn't match the expected type" in str(error)
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


class HoldCash(FlowLogic[None]):
    """Soft-lock every cash state of this node, then wait for an hour."""

    @suspendable
    def call(self) -> None:
        vault = self.service_hub.vault
        vault.soft_lock(self.run_id, [sar.ref for sar in vault.query(Cash.State)])
        self.sleep(3600)


def test_cash_soft_locked_by_another_flow_fails_both_sides_cleanly(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    holder = trade.buyer.start_flow(HoldCash())
    error = seller_failure(trade, trade.start())
    assert isinstance(error, InsufficientBalanceException)
    assert (error.needed, error.available) == (PRICE, Amount(0, "USD"))
    assert isinstance(buyer_outcome(trade), InsufficientBalanceException)
    assert [f.run_id for f in trade.buyer.flows()] == [holder.id]
    assert trade.buyer.services.vault.soft_locked(holder.id)  # the holder's locks are intact
    assert_nothing_traded(trade)
    trade.buyer.kill_flow(holder.id)
    trade.network.run_network()
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_an_invalid_history_of_the_asset_is_refused_by_the_buyer(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", papers=0)
    seller, notary = trade.seller, trade.network.notary
    # Paper "issued" without the time window the contract demands, recorded unverified.
    paper = CommercialPaper.State(PartyAndReference(seller.party, b"\x01"), seller.party,
                                  FACE_VALUE.issued_by(seller.party, b"\x01"),
                                  trade.network.clock.now() + timedelta(days=30))
    builder = TransactionBuilder(notary).add_output_state(paper, CommercialPaper)
    builder.add_command(CommercialPaper.Issue(), seller.party.owning_key)
    record_for_test(sign_for_test(builder.to_signed_transaction([]), seller), seller)
    error = seller_failure(trade, trade.start())
    assert isinstance(error, ContractRejection)
    assert "needs a time window" in error.reason
    assert isinstance(buyer_outcome(trade), ContractRejection)
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_an_invalid_history_of_the_buyers_cash_is_refused_by_the_seller(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", cash=())
    buyer, seller = trade.buyer, trade.seller
    # Cash "issued" by the seller but signed only by the buyer, recorded unverified.
    builder = TransactionBuilder(trade.network.notary)
    builder.add_output_state(Cash.State(FACE_VALUE.issued_by(seller.party, b"\x01"),
                                        buyer.party), Cash)
    builder.add_command(Cash.Issue(), buyer.party.owning_key)
    record_for_test(sign_for_test(builder.to_signed_transaction([]), buyer), buyer)
    error = seller_failure(trade, trade.start())
    assert isinstance(error, ContractRejection)
    assert "must be signed by the issuer Seller" in error.reason
    buyer_error = buyer_outcome(trade)
    assert isinstance(buyer_error, ContractRejection) and buyer_error.reason == error.reason
    assert [p.state.data.owner.name for p in trade.papers()] == ["Seller"]
    assert cash_of(buyer) == [(100000, "Buyer")]
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


class StingyBuyer(TwoPartyTradeFlow.Buyer):
    """Pays one cent less than the price it accepted."""

    def _build_proposal(self, offer: SellerTradeInfo) -> TransactionBuilder:
        cheaper = dataclasses.replace(offer, price=offer.price - Amount(1, "USD"))
        return super()._build_proposal(cheaper)


class GreedyBuyer(TwoPartyTradeFlow.Buyer):
    """Also moves another paper of the seller's to itself under the seller's signature."""

    def __init__(self, other: Party, notary: Party, price: Amount[Any], type_to_buy: type,
                 extra: StateAndRef[OwnableState]) -> None:
        super().__init__(other, notary, price, type_to_buy)
        self.extra = extra

    def _build_proposal(self, offer: SellerTradeInfo) -> TransactionBuilder:
        builder = super()._build_proposal(offer)
        builder.add_input_state(self.extra)
        builder.add_output_state(self.extra.state.data.with_new_owner(self.our_identity)[1],
                                 CommercialPaper)
        return builder


def test_a_proposal_that_pays_less_than_the_price_is_refused(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", buyer_class=StingyBuyer)
    error = seller_failure(trade, trade.start())
    assert type(error) is FlowException
    assert "pays the seller 899.99 USD, not the price of 900.00 USD" in str(error)
    assert_nothing_traded(trade)
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_the_seller_signs_away_nothing_but_the_asset(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n", papers=2)
    first, second = trade.papers()
    trade.buyer_class, trade.buyer_args = GreedyBuyer, (cast(Any, second),)
    handle = trade.seller.start_flow(SellerStarter(trade.buyer.party, first, PRICE))
    error = seller_failure(trade, handle)
    assert type(error) is FlowException
    assert f"spends {second.ref}, a state of the seller's that is not for sale" in str(error)
    assert [p.ref for p in trade.papers()] == [first.ref, second.ref]
    assert_clean(trade.seller, trade.buyer)
    trade.network.stop_nodes()


def test_a_resold_paper_brings_its_history_along(tmp_path: Path) -> None:
    trade = trade_network(tmp_path / "n")
    network, notary = trade.network, trade.network.notary
    first = trade.start()
    network.run_network()
    bought = first.result.result(timeout=0)
    carol = network.create_node("Carol")
    run(network, carol, CashIssueFlow(FACE_VALUE, b"\x09", notary))
    carol.register_initiated_flow(SellerStarter, lambda party: TwoPartyTradeFlow.Buyer(
        party, notary, FACE_VALUE, CommercialPaper.State))
    [paper] = trade.papers(trade.buyer)
    resale = run(network, trade.buyer, SellerStarter(carol.party, paper, FACE_VALUE))
    # Carol verified the paper's whole chain: the trade that sold it to Buyer and its inputs.
    storage = carol.services.validated_transactions
    assert bought.id in storage and resale.id in storage
    assert all(ref.txhash in storage for ref in bought.tx.inputs)
    assert [p.state.data.owner.name for p in trade.papers(carol)] == ["Carol"]
    assert (90000, "Seller") in cash_of(trade.seller)
    assert (FACE_VALUE.quantity, "Buyer") in cash_of(trade.buyer)
    assert_clean(trade.seller, trade.buyer, carol, trade.notary)
    network.stop_nodes()


def test_a_trade_verifies_each_signature_once_per_node(tmp_path: Path) -> None:
    # The floor the trade benchmark derives: every node checks each signature it relies on
    # once (the seller 3, the buyer 4, the validating notary 5), and no more.
    from benchmarks.trade import NEEDED, CryptoCounts, per_trade_crypto

    counts = per_trade_crypto(tmp_path / "count")
    assert counts == CryptoCounts(*NEEDED) == CryptoCounts(signs=3, verifies=12)
