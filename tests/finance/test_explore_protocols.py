"""The project's own protocols under the simulation explorer (fibers.testing.explore): cash
payment, finality to two participants and the two-party trade, each checked against the
ledger's invariants once quiet (cash or magic conserved, each asset owned once, vaults agree
with the notary; benchmarks/explore.py). Each runs ``max_schedules`` schedules, half depth
first and half sampled from the seed (a few seconds each): every crash point, order and
duplicate of these protocols would take far longer, so the budget covers the crash points
nearest the end of the default order plus a reproducible random sample of the rest."""

from __future__ import annotations

import pytest

from benchmarks.explore import (
    cash_payment,
    ledger_consistent,
    ledger_network,
    paid,
    trade,
    traded,
)
from fibers.testing import ExplorationFailure, MockNetwork, explore, replay
from ledger.testing import DummyState
from ledger.testing import MockNetwork as LedgerMockNetwork
from tests.ledger.test_flows import Pay, SelfIssue


def finality(net: MockNetwork) -> None:
    """Alice issues magic 10 to herself, then pays 6 to Bob and 4 to Charlie (explored)."""
    assert isinstance(net, LedgerMockNetwork)
    net.create_notary_node("Notary")
    alice, bob, charlie = (net.create_node(n) for n in ("Alice", "Bob", "Charlie"))
    handle = alice.start_flow(SelfIssue(net.notary, 10))
    net.run_network()
    issued = handle.result.result(timeout=0)
    alice.start_flow(Pay([issued.tx.out_ref(0)], [(bob.party, 6), (charlie.party, 4)]))


def finalised(net: MockNetwork) -> None:
    owned = ledger_consistent(net)
    magics = {node.party.name: sorted(s.state.data.magic
                                      for s in node.services.vault.query(DummyState)
                                      if s.state.data.owner == node.party)
              for node in net.nodes}
    assert magics == {"Notary": [], "Alice": [], "Bob": [6], "Charlie": [4]}, (magics, owned)


@pytest.mark.parametrize(("scenario", "invariant", "schedules"), [
    (cash_payment, paid, 40),
    (finality, finalised, 40),
    (trade, traded, 40),
])
def test_the_protocol_holds_its_invariants_under_the_explorer(
    scenario: object, invariant: object, schedules: int
) -> None:
    report = explore(scenario, invariant, max_schedules=schedules,  # type: ignore[arg-type]
                     network=ledger_network, seed=7)
    report.raise_first()
    assert report.schedules_run == schedules and report.sampled == schedules // 2
    text = " | ".join(report.schedules)
    assert "!" in text and "dup " in text  # crashes and duplicates were among them


def test_the_invariants_have_teeth() -> None:
    """A payment that never happened, and one replayed with a crash: the first fails the
    payment's invariant, the second holds."""
    def no_payment(net: MockNetwork) -> None:
        assert isinstance(net, LedgerMockNetwork)
        net.create_notary_node("Notary")
        net.create_node("Alice")
        net.create_node("Bob")

    with pytest.raises(ExplorationFailure, match="Alice"):
        replay(no_payment, paid, "", network=ledger_network)
    transcript = replay(cash_payment, paid, "Alice>Bob#0 !Bob<0", network=ledger_network)
    assert "  Bob crashed; restarted from its storage" in transcript


def test_a_message_for_a_session_whose_init_was_lost_is_kept_for_the_init() -> None:
    """Found by the explorer: the buyer crashed before storing the seller's init, then got the
    seller's next message of that session. It used to acknowledge and drop it as one of an
    ended session, so the re-sent init opened a session waiting forever for it."""
    transcript = replay(trade, traded, "Seller>Buyer#0 !Buyer<0, Seller>Buyer#1",
                        network=ledger_network, seed=7)
    assert "  Buyer crashed; restarted from its storage" in transcript
