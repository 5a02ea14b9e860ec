"""Trades between ledger nodes that each run on their own thread (``NodeRuntime`` in threaded
mode on the real clock), built from public API only, as a node process builds its node."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fibers import NetworkMap, Node, NodeIdentity, Party
from fibers.runtime import NodeRuntime
from fibers.storage import NodeStorage
from fibers.transport import InMemoryNetwork, Transport
from finance import (
    Amount,
    Cash,
    CashIssueFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    SellerStarter,
    TwoPartyTradeFlow,
)
from ledger import LedgerServiceHub, install_ledger_services

FACE_VALUE = Amount.parse("1000.00 USD")
PRICE = Amount.parse("900.00 USD")
TIMEOUT = 30.0


class Nodes:
    """A notary, a seller and a buyer, each in a threaded runtime on one in-memory network."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.network = InMemoryNetwork(immediate=True)
        self.network_map = NetworkMap()
        self.identities = {n: NodeIdentity(n) for n in ("Notary", "Seller", "Buyer")}
        for identity in self.identities.values():
            self.network_map.add(identity.party)
        self.runtimes = {name: self.start(name) for name in self.identities}

    def party(self, name: str) -> Party:
        return self.identities[name].party

    def start(self, name: str) -> NodeRuntime:
        identity = self.identities[name]
        notary = self.party("Notary")
        setup = functools.partial(install_ledger_services, notary=name == "Notary")

        def build(transport: Transport) -> Node:
            node = Node(identity, transport, network_map=self.network_map, setup=setup,
                        hub=LedgerServiceHub,
                        storage=NodeStorage.open(self.base / name, sync=False))
            if name == "Buyer":
                node.register_initiated_flow(
                    SellerStarter,
                    lambda seller: TwoPartyTradeFlow.Buyer(seller, notary, PRICE,
                                                           CommercialPaper.State))
            return node

        runtime = NodeRuntime(self.network.endpoint(identity.party), build)
        runtime.start()
        return runtime

    def run(self, name: str, flow: Any) -> Any:
        """Start ``flow`` on the node ``name`` from this (test) thread and wait for its result."""
        handle = self.runtimes[name].call(lambda node: node.start_flow(flow)).result(TIMEOUT)
        return handle.result.result(timeout=TIMEOUT)

    def cash(self, name: str) -> int:
        def total(node: Node) -> int:
            return sum(s.state.data.amount.quantity
                       for s in node.services.vault.query(Cash.State))

        return self.runtimes[name].call(total).result(TIMEOUT)

    def papers(self, name: str) -> list[Any]:
        return self.runtimes[name].call(
            lambda node: node.services.vault.query(CommercialPaper.State)).result(TIMEOUT)

    def stop(self) -> None:
        for runtime in self.runtimes.values():
            runtime.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    network = Nodes(tmp_path)
    try:
        yield network
    finally:
        network.stop()


def _prepare(nodes: Nodes, trades: int) -> list[Any]:
    notary = nodes.party("Notary")
    maturity = nodes.runtimes["Seller"].call(lambda n: n.clock.now()).result(TIMEOUT)
    for i in range(trades):
        nodes.run("Buyer", CashIssueFlow(FACE_VALUE, bytes([1 + i]), notary))
        nodes.run("Seller", CommercialPaperIssueFlow(FACE_VALUE, maturity + timedelta(days=30),
                                                     notary))
    return nodes.papers("Seller")


def test_concurrent_trades_between_threaded_nodes_settle_exactly_once(nodes: Nodes) -> None:
    papers = _prepare(nodes, 5)
    buyer = nodes.party("Buyer")
    seller = nodes.runtimes["Seller"]
    handles = seller.call(
        lambda node: [node.start_flow(SellerStarter(buyer, paper, PRICE)) for paper in papers]
    ).result(TIMEOUT)
    ids = {handle.result.result(timeout=TIMEOUT).id for handle in handles}
    assert len(ids) == 5
    assert nodes.cash("Seller") == 5 * PRICE.quantity
    assert nodes.cash("Buyer") == 5 * (FACE_VALUE.quantity - PRICE.quantity)
    assert nodes.papers("Seller") == [] and len(nodes.papers("Buyer")) == 5


def test_a_threaded_buyer_stopped_mid_trade_finishes_it_after_a_restart(nodes: Nodes) -> None:
    papers = _prepare(nodes, 1)
    nodes.runtimes["Buyer"].stop()
    handle = nodes.runtimes["Seller"].call(
        lambda node: node.start_flow(SellerStarter(nodes.party("Buyer"), papers[0], PRICE))
    ).result(TIMEOUT)
    assert not handle.result.done()  # the buyer is down: its frames wait in the network
    nodes.runtimes["Buyer"] = nodes.start("Buyer")
    assert handle.result.result(timeout=TIMEOUT).id is not None
    assert nodes.cash("Seller") == PRICE.quantity
    assert len(nodes.papers("Buyer")) == 1
