"""``fibers demo``: two nodes on an in-memory network settle a short negotiation flow.

This is the engine-level demo; the trade-with-a-crash demo replaces it once the ledger and
finance layers exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from fibers import (
    FlowException,
    FlowLogic,
    Party,
    initiated_by,
    initiating_flow,
    serializable,
    suspendable,
)
from fibers._messages import Ack, Data, ExistingSessionMessage, InitialSessionMessage
from fibers._wire import decode
from fibers.testing import MockNetwork


@serializable
@dataclass(frozen=True)
class Offer:
    """A price offered for a quantity of widgets."""

    quantity: int
    price_per_unit: int


@initiating_flow
class Negotiate(FlowLogic[Offer]):
    """Offer a price, raising it until the seller accepts (or the budget runs out)."""

    def __init__(self, seller: Party, quantity: int, budget: int) -> None:
        self.seller, self.quantity, self.budget = seller, quantity, budget

    @suspendable
    def call(self) -> Offer:
        price = 1
        while price * self.quantity <= self.budget:
            offer = Offer(self.quantity, price)
            answer = self.send_and_receive(self.seller, offer, str).unwrap(str)
            if answer == "accept":
                return offer
            price += 1
        raise FlowException(f"the seller wants more than {self.budget} in total")


@initiated_by(Negotiate)
class Sell(FlowLogic[Offer]):
    """Accept the first offer at or above the reserve price."""

    RESERVE = 3

    def __init__(self, buyer: Party) -> None:
        self.buyer = buyer

    @suspendable
    def call(self) -> Offer:
        while True:
            offer = self.receive(self.buyer, Offer).unwrap(self._check)
            accepted = offer.price_per_unit >= self.RESERVE
            self.send(self.buyer, "accept" if accepted else "reject")
            if accepted:
                return offer

    @staticmethod
    def _check(offer: Offer) -> Offer:
        if offer.quantity <= 0:
            raise FlowException(f"cannot sell {offer.quantity} widgets")
        return offer


def describe(message: object) -> str:
    """A session message in words, payload decoded."""
    if isinstance(message, InitialSessionMessage):
        flow = message.flow_class.split(":")[-1]
        payload = decode(message.first_payload) if message.first_payload else None
        return f"opens a session for {flow} with {payload!r}"
    if isinstance(message, ExistingSessionMessage):
        body = message.body
        if isinstance(body, Data):
            return f"sends {decode(body.payload)!r}"
        return f"{type(body).__name__.lower()}s the session"
    return repr(message)


def run_demo(console: Console, *, crash_after: int = 3) -> int:
    """Run the negotiation, crash and restart the seller's node after ``crash_after`` messages,
    and print each message and the result. Returns an exit status."""
    with MockNetwork(strict_suspendable=True) as network:
        buyer, seller = network.create_node("BuyerBank"), network.create_node("SellerBank")
        console.print("[bold]Fibers engine demo[/]: a negotiation written as sequential code, "
                      "checkpointed at every suspension")
        handle = buyer.start_flow(Negotiate(seller.party, quantity=10, budget=100))
        delivered, seen = 0, set()
        while network.deliver_next() is not None:
            entry = network.transcript[-1]
            if isinstance(entry.message, Ack):
                continue  # storage acknowledgements: part of the protocol, not of the story
            delivered += 1
            text = describe(entry.message)
            if isinstance(entry.message, ExistingSessionMessage):
                key = (entry.sender, entry.message.to_initiator, entry.message.seq)
                if key in seen:
                    text = f"[dim]re-sends #{entry.message.seq} after its restart "
                    text += "(a duplicate: dropped by the receiver)[/]"
                seen.add(key)
            console.print(f"  {entry.sender:>10} -> {entry.recipient:<10} {text}",
                          highlight=False)
            if delivered == crash_after:
                seller = network.restart_node(seller)
                [flow] = seller.flows()
                console.print(f"  [red]SellerBank crashed[/] and restarted from its LMDB "
                              f"storage: flow {flow.run_id.short} restored, waiting for "
                              f"{flow.waiting_for}", highlight=False)
        offer = handle.result.result(timeout=0)
        console.print(f"[green]Agreed[/]: {offer.quantity} widgets at {offer.price_per_unit} each"
                      f" (flow {handle.id}); the seller's crash cost nothing")
    return 0
