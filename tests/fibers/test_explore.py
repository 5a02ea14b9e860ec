"""The simulation explorer (fibers.testing.explore): it passes a correct protocol at every crash
point, delivery order and duplicate, finds what breaks a flow under them, shrinks what it finds
and replays it. Schedules run per test are in each docstring (about 15 s in all)."""

from __future__ import annotations

from typing import Any

import pytest

from fibers._checkpoint_store import CheckpointStore
from fibers._node import Node
from fibers.testing import ExplorationFailure, MockNetwork, explore, replay
from fibers.testing._schedule import Choice, Fault, ScheduleError, format_schedule, parse_schedule
from tests.fibers.explore_flows import Ask, Bid, Books, Market, Ping, Transfer, install_books


def transfer(net: MockNetwork) -> None:
    install_books(net)
    a, b = net.create_node("A"), net.create_node("B")
    a.start_flow(Transfer(b.party, "t1", 5))


def careless_transfer(net: MockNetwork) -> None:
    install_books(net, careless="B")
    a, b = net.create_node("A"), net.create_node("B")
    a.start_flow(Transfer(b.party, "t1", 5))


def posted_once(net: MockNetwork) -> None:
    """Both sides posted the transfer exactly once, nothing is left running or parked."""
    total = 0
    for node in net.nodes:
        posted = node.services.get(Books).posted()
        assert posted.get("t1") == 1, (node.party.name, posted)
        total += posted["~total"]
        assert node.flows() == [] and node.hospital() == [], (node, node.hospital())
    assert total == 0


def test_a_correct_protocol_passes_every_crash_point_order_and_duplicate() -> None:
    """Exhaustive: about 170 schedules (and as many cut short as equivalent), every one
    checked."""
    report = explore(transfer, posted_once)
    report.raise_first()
    assert report.exhaustive and report.failures == []
    assert report.schedules_run > 100 and report.pruned > 0
    assert len(set(report.schedules)) == report.schedules_run  # no schedule ran twice
    schedules = " | ".join(report.schedules)
    # Crash points, duplicates, timers. (A restore commits nothing since restore is lazy, so
    # there is no crash during a restore here: the commits of a flow woken after a restart
    # are the crash points of the delivery that woke it.)
    for kind in ("!B<", "!B>", "!A<", "!A>", "dup ", "timers"):
        assert kind in schedules, kind


def test_a_service_effect_that_is_not_journaled_is_found_shrunk_and_replayed() -> None:
    """Stops at the first failure: about 30 schedules, then shrinking."""
    report = explore(careless_transfer, posted_once)
    [failure] = report.failures
    assert "'t1': 2" in str(failure.error)  # posted twice on B
    shrunk, full = parse_schedule(failure.schedule), parse_schedule(failure.full_schedule)
    assert len(shrunk) < len(full)
    assert any(c.fault is not None and c.fault.node == "B" and c.fault.is_crash for c in shrunk)
    assert failure.replay_line == (
        f"replay(careless_transfer, posted_once, {failure.schedule!r})")
    assert any("B crashed; restarted from its storage" in line for line in failure.transcript)
    with pytest.raises(AssertionError, match="replay\\(careless_transfer") as raised:
        report.raise_first()
    assert failure.schedule in str(raised.value)
    # The printed schedule replays the failure, in the careless protocol only.
    with pytest.raises(ExplorationFailure, match="'t1': 2"):
        replay(careless_transfer, posted_once, failure.schedule)
    transcript = replay(transfer, posted_once, failure.schedule)
    assert any("crashed" in line for line in transcript)


def test_the_full_schedule_replays_the_same_run() -> None:
    report = explore(careless_transfer, posted_once, shrink=False)
    [failure] = report.failures
    assert failure.schedule == failure.full_schedule
    with pytest.raises(ExplorationFailure) as raised:
        replay(careless_transfer, posted_once, failure.full_schedule)
    assert str(failure.error).splitlines()[0] in str(raised.value)


def market(net: MockNetwork) -> None:
    def install(node: Node) -> None:
        if node.party.name == "Market":
            node.services.install("market", Market())

    net.node_hooks.append(install)
    buyer, seller, place = (net.create_node(n) for n in ("Buyer", "Seller", "Market"))
    buyer.start_flow(Bid(place.party, 10))
    seller.start_flow(Ask(place.party, 9))


def one_trade(net: MockNetwork) -> None:
    assert net.node("Market").services.get(Market).trades == [(10, 9)]


def test_code_that_assumes_an_order_between_two_sessions_is_found() -> None:
    """The bid is sent first, so the default order passes (1 schedule); with reordering the
    explorer delivers the ask first (2 schedules)."""
    calm = explore(market, one_trade, crashes=False, duplicates=False, reorder=False)
    assert calm.failures == [] and calm.schedules_run == 1
    report = explore(market, one_trade, crashes=False, duplicates=False)
    [failure] = report.failures
    assert failure.schedule == "Seller>Market#0"
    with pytest.raises(ExplorationFailure, match="Seller>Market#0"):
        replay(market, one_trade, failure.schedule)


def test_duplicates_are_found_where_a_flow_would_double_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the responder's dedup records ignored, a duplicated session init runs the
    responder again and posts twice; the explorer finds it with duplicates alone (about 5
    schedules)."""
    assert explore(transfer, posted_once, crashes=False).failures == []
    monkeypatch.setattr(CheckpointStore, "seen_init", lambda *args: False)
    report = explore(transfer, posted_once, crashes=False)
    [failure] = report.failures
    assert "dup A>B#0" in failure.schedule  # the session init, after the session ended
    assert "'t1': 2" in str(failure.error)


def test_storage_faults_at_every_write_of_a_correct_protocol() -> None:
    """Storage write failures instead of crashes: every write of each event fails in turn
    (about 60 schedules); the engine retries the step and nothing is posted twice."""
    report = explore(transfer, posted_once, crashes=False, duplicates=False,
                     storage_faults=True)
    report.raise_first()
    assert report.exhaustive and report.schedules_run > 20
    assert any("!B~" in s for s in report.schedules) and any("!A~" in s for s in report.schedules)
    transcript = replay(transfer, posted_once, "A>B#0 !B~0")
    assert "  B's storage write 0 failed" in transcript


def test_past_max_schedules_it_samples_reproducibly_from_the_seed() -> None:
    """10 schedules depth first, then 10 random ones; the same seed draws the same ones."""
    first = explore(transfer, posted_once, max_schedules=20, seed=3)
    again = explore(transfer, posted_once, max_schedules=20, seed=3)
    other = explore(transfer, posted_once, max_schedules=20, seed=4)
    assert not first.exhaustive and first.failures == []
    assert first.schedules_run == 20 and first.sampled == 10
    assert first.schedules == again.schedules
    assert first.schedules[10:] != other.schedules[10:]


@pytest.mark.parametrize("seed", range(3))
def test_a_budgeted_exploration_finds_the_bug_too(seed: int) -> None:
    """At most 40 schedules: 20 depth first, then random ones until one fails."""
    report = explore(careless_transfer, posted_once, max_schedules=40, seed=seed, shrink=False)
    assert report.failures and report.schedules_run <= 40


def test_the_schedule_text_round_trips_and_rejects_what_it_cannot_read() -> None:
    choices = [
        Choice("deliver", "A", "B", 0),
        Choice("dup", "A", "B", 0),
        Choice("timers"),
        Choice("deliver", "Bank A", "B", 12, Fault("B", "<", 1)),
        Choice("deliver", "A", "B", 3, Fault("B", ">", 0, ("<", 2))),
        Choice("timers", fault=Fault("A", "~", 4)),
    ]
    text = format_schedule(choices)
    assert text == ("A>B#0, dup A>B#0, timers, Bank A>B#12 !B<1, A>B#3 !B>0 r<2, "
                    "timers !A~4")
    assert parse_schedule(text) == choices
    for bad in ("A-B#0", "A>B#x", "A>B#0 !B?1", "A>B#0 !B~1 r<0"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)


def test_a_schedule_that_never_becomes_possible_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="B>A#9"):
        replay(transfer, posted_once, "B>A#9")


def test_the_invariant_runs_on_a_quiet_network_with_restarted_nodes() -> None:
    seen: list[Any] = []

    def quiet(net: MockNetwork) -> None:
        seen.append([(n.party.name, n.stopped, n.flows()) for n in net.nodes])
        assert net.pending_messages() == []
        assert all(n.next_deadline() is None and n.redelivery_due is None for n in net.nodes)

    replay(transfer, quiet, "A>B#0 !B<0")
    assert seen == [[("A", False, []), ("B", False, [])]]


def ping_pong(net: MockNetwork) -> None:
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    alice.start_flow(Ping(bob.party))


def finished(net: MockNetwork) -> None:
    for node in net.nodes:
        assert node.flows() == [] and node.hospital() == [], node


def test_the_readme_example() -> None:
    """README, "Test a flow against every crash": exhaustive in about 70 schedules."""
    report = explore(ping_pong, finished)
    report.raise_first()
    assert report.exhaustive and report.schedules_run > 10
