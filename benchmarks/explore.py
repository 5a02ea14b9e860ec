"""``fibers bench explore``: how many schedules per second the simulation explorer runs on the
two-party trade (``fibers.testing.explore``; README, "Test a flow against every crash").

Also home of the ledger scenarios and invariants the test suite explores
(tests/finance/test_explore_protocols.py): a scenario sets up a notary and the parties, issues
what they need (run to the end, uncrashed) and starts the protocol under exploration; the
explorer then moves every event of the protocol.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks._report import Result
from fibers import Node, Party
from fibers.testing import MockNetwork as EngineMockNetwork
from fibers.testing import explore
from finance import (
    Amount,
    Cash,
    CashIssueFlow,
    CashPaymentFlow,
    CommercialPaper,
    CommercialPaperIssueFlow,
    SellerStarter,
    TwoPartyTradeFlow,
)
from ledger import ContractState, OwnableState, StateRef
from ledger.testing import MockNetwork

__all__ = ["cash_payment", "ledger_network", "paid", "scenario", "trade", "traded"]

PRICE = Amount.parse("900.00 USD")
FACE_VALUE = Amount.parse("1000.00 USD")


def ledger_network(base: Path) -> MockNetwork:
    """The explorer's network for ledger scenarios: ``ledger.testing.MockNetwork``."""
    return MockNetwork(base)


def _run(net: EngineMockNetwork[Any], node: Node, flow: Any) -> None:
    handle = node.start_flow(flow)
    net.run_network()
    handle.result.result(timeout=0)


def cash_payment(net: EngineMockNetwork) -> None:
    """Alice issues 100 USD to herself, then pays Bob 30 (under exploration)."""
    assert isinstance(net, MockNetwork)
    net.create_notary_node("Notary")
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    _run(net, alice, CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", net.notary))
    alice.start_flow(CashPaymentFlow(Amount.parse("30.00 USD"), bob.party))


def _register_buyer(node: Node) -> None:
    if node.party.name != "Buyer":
        return
    notary = node.network_map.party("Notary")

    def buyer(seller: Party) -> TwoPartyTradeFlow.Buyer:
        return TwoPartyTradeFlow.Buyer(seller, notary, PRICE, CommercialPaper.State)

    node.register_initiated_flow(SellerStarter, buyer)


def trade(net: EngineMockNetwork) -> None:
    """The buyer issues 1,000 USD, the seller a commercial paper; then the seller sells it for
    900 USD (under exploration). Restarted buyers register their responder again."""
    assert isinstance(net, MockNetwork)
    net.node_hooks.append(_register_buyer)
    net.create_notary_node("Notary")
    seller, buyer = net.create_node("Seller"), net.create_node("Buyer")
    _run(net, buyer, CashIssueFlow(Amount.parse("1,000.00 USD"), b"\x01", net.notary))
    _run(net, seller, CommercialPaperIssueFlow(FACE_VALUE, net.clock.now() + timedelta(days=30),
                                               net.notary))
    [paper] = seller.services.vault.query(CommercialPaper.State)
    seller.start_flow(SellerStarter(buyer.party, paper, PRICE))


def ledger_consistent(net: EngineMockNetwork) -> dict[str, Counter[str]]:
    """Nothing left running, parked or soft-locked; each unconsumed asset owned once (held by
    its owner's vault and consumed nowhere); every consumption a vault knows is the notary's.
    Returns what each node owns: quantity of cash (in cents) and count of other states, by
    type name."""
    assert isinstance(net, MockNetwork)
    # mypy refuses an abstract class for type[T] (python/mypy#4717); every state is one.
    every: type[ContractState] = ContractState  # type: ignore[type-abstract]
    notary = net.node("Notary").services.uniqueness
    owners: dict[StateRef, str] = {}
    owned: dict[str, Counter[str]] = {}
    for node in net.nodes:
        name, vault = node.party.name, node.services.vault
        assert node.flows() == [] and node.hospital() == [], (name, node.flows(),
                                                              node.hospital())
        assert not vault._locks, (name, "soft locks left", vault._locks)
        mine = owned[name] = Counter()
        for sar in vault.query(every):
            assert notary.consumed_by(sar.ref) is None, (name, "spent but in vault", sar.ref)
            for other in net.nodes:
                assert other.services.vault.consumed_by(sar.ref) is None, (name, other, sar.ref)
            data = sar.state.data
            if not isinstance(data, OwnableState):
                continue
            owner = data.owner.name
            assert net.node(owner).services.vault.state_and_ref(sar.ref) is not None, (
                f"{sar.ref} owned by {owner} is not in {owner}'s vault")
            if owner == name:
                assert owners.setdefault(sar.ref, name) == name
                kind = type(data).__qualname__
                mine[kind] += data.amount.quantity if isinstance(data, Cash.State) else 1
        for ref, tx_id in vault._consumed.items():
            assert notary.consumed_by(ref) in (tx_id, None), (name, ref, "notary disagrees")
    return owned


def paid(net: EngineMockNetwork) -> None:
    """After ``cash_payment``: cash conserved, Bob has 30 USD, Alice 70, ledger consistent."""
    owned = ledger_consistent(net)
    assert owned["Alice"]["Cash.State"] == 7000 and owned["Bob"]["Cash.State"] == 3000, owned


def traded(net: EngineMockNetwork) -> None:
    """After ``trade``: cash conserved, the seller has 900 USD, the buyer 100 and the paper."""
    owned = ledger_consistent(net)
    assert owned["Seller"]["Cash.State"] == 90000, owned
    assert owned["Buyer"]["Cash.State"] == 10000, owned
    assert owned["Buyer"]["CommercialPaper.State"] == 1 and not owned["Seller"][
        "CommercialPaper.State"], owned


def measure(schedules: int, seed: int = 0) -> float:
    """Schedules per second of the explorer on the trade (``schedules`` of them)."""
    started = time.perf_counter()
    report = explore(trade, traded, max_schedules=schedules, seed=seed,
                     network=ledger_network)
    elapsed = time.perf_counter() - started
    report.raise_first()
    return report.schedules_run / elapsed


def scenario(*, quick: bool) -> list[Result]:
    """Schedules explored per second on the two-party trade (every one a fresh network, the
    scenario's issuances, the trade under one schedule, the ledger invariants)."""
    schedules = 4 if quick else 60
    per_second = measure(schedules)
    return [Result(id="explore.schedules_per_s.trade", scenario="explore",
                   name="explorer schedules/s, two-party trade", value=per_second,
                   unit="schedules/s", flows=schedules)]


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.explore [--schedules N]``: print the schedules per second."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=60)
    args = parser.parse_args(argv)
    print(f"{measure(args.schedules):.1f} schedules/s on the two-party trade")


if __name__ == "__main__":
    main()
