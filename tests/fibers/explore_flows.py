"""Small flows for the explorer's tests (module level, so restarted nodes find them by name).

``Transfer``/``Receive`` move an amount between two nodes' ``Books``; ``Books.post`` is
journaled and writes with the step, so the protocol is correct at every crash point, order and
duplicate. ``CarelessBooks`` is the same service without ``@journaled``: a flow replayed after a
restart posts again. ``Bid``/``Ask`` meet in a ``Market`` on a third node whose ask side assumes
the bid arrived first.
"""

from __future__ import annotations

from fibers import FlowLogic, Party, SerializeAsToken, initiated_by, initiating_flow, suspendable
from fibers._node import Node
from fibers._services import journaled
from fibers._storage import Txn
from fibers.testing import MockNetwork

TOTAL = b"~total"


class Books(SerializeAsToken):
    """How often each transfer was posted on this node, and the node's balance, in its storage
    (written with the flow step that posts)."""

    def __init__(self) -> None:
        self.node: Node | None = None

    def bind(self, node: Node) -> None:
        assert node.storage is not None
        node.storage.db("books")
        self.node = node

    def _post(self, transfer: str, amount: int) -> None:
        node = self.node
        assert node is not None and node.storage is not None
        storage = node.storage

        def write(txn: Txn) -> None:
            for key, delta in ((transfer.encode(), 1), (TOTAL, amount)):
                storage.put(txn, "books", key, b"%d" % (int(storage.get(txn, "books", key)
                                                             or b"0") + delta))

        node.step_write(write)

    @journaled
    def post(self, transfer: str, amount: int) -> None:
        self._post(transfer, amount)

    def posted(self) -> dict[str, int]:
        node = self.node
        assert node is not None and node.storage is not None
        with node.storage.read() as txn:
            return {k.decode(): int(v) for k, v in node.storage.prefix_items(txn, "books", b"")}


class CarelessBooks(Books):
    """``Books`` whose ``post`` is not journaled: replayed after a restart, it posts again."""

    def post(self, transfer: str, amount: int) -> None:  # no @journaled: the bug
        self._post(transfer, amount)


@initiating_flow
class Transfer(FlowLogic[str]):
    def __init__(self, payee: Party, transfer: str, amount: int) -> None:
        self.payee, self.transfer, self.amount = payee, transfer, amount

    @suspendable
    def call(self) -> str:
        self.service_hub.get(Books).post(self.transfer, -self.amount)
        self.send(self.payee, f"{self.transfer}:{self.amount}")
        receipt = self.receive(self.payee, str).unwrap(str)
        self.send(self.payee, "thanks")
        return receipt


@initiated_by(Transfer)
class Receive(FlowLogic[None]):
    def __init__(self, payer: Party) -> None:
        self.payer = payer

    @suspendable
    def call(self) -> None:
        transfer, amount = self.receive(self.payer, str).unwrap(str).split(":")
        self.service_hub.get(Books).post(transfer, int(amount))
        self.send(self.payer, f"receipt {transfer}")
        self.receive(self.payer, str)


def install_books(net: MockNetwork, careless: str = "") -> None:
    """Install ``Books`` (``CarelessBooks`` on the node called ``careless``) on every node the
    network builds, restarted ones included."""

    def setup(node: Node) -> None:
        books = node.services.installed.get("books")
        if not isinstance(books, Books):
            books = CarelessBooks() if node.party.name == careless else Books()
            node.services.install("books", books)
        books.bind(node)

    net.node_hooks.append(setup)


class Market(SerializeAsToken):
    """An order book on the market node (in memory: the order tests crash nothing)."""

    def __init__(self) -> None:
        self.bid: int | None = None
        self.trades: list[tuple[int, int]] = []


@initiating_flow
class Bid(FlowLogic[None]):
    def __init__(self, market: Party, price: int) -> None:
        self.market, self.price = market, price

    @suspendable
    def call(self) -> None:
        self.send(self.market, self.price)


@initiating_flow
class Ask(FlowLogic[None]):
    def __init__(self, market: Party, price: int) -> None:
        self.market, self.price = market, price

    @suspendable
    def call(self) -> None:
        self.send(self.market, self.price)


@initiated_by(Bid)
class TakeBid(FlowLogic[None]):
    def __init__(self, bidder: Party) -> None:
        self.bidder = bidder

    @suspendable
    def call(self) -> None:
        self.service_hub.get(Market).bid = self.receive(self.bidder, int).unwrap(int)


@initiated_by(Ask)
class TakeAsk(FlowLogic[None]):
    """The bug: it assumes the bid's session was handled first."""

    def __init__(self, seller: Party) -> None:
        self.seller = seller

    @suspendable
    def call(self) -> None:
        ask = self.receive(self.seller, int).unwrap(int)
        market = self.service_hub.get(Market)
        if market.bid is None:
            raise ValueError("an ask before any bid")
        market.trades.append((market.bid, ask))


@initiating_flow
class Ping(FlowLogic[str]):
    """The README's example flow pair, for its explorer example."""

    def __init__(self, other: Party):
        self.other = other

    @suspendable
    def call(self) -> str:
        return self.send_and_receive(self.other, "ping", str).unwrap(lambda s: s)


@initiated_by(Ping)
class Pong(FlowLogic[None]):
    def __init__(self, other: Party):
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "pong")
