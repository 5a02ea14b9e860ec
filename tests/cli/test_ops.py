"""``NodeOps``: operating a node with values in and values out, feeds as subscriptions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from cli._convert import FlowArgumentError, UnknownNameError
from cli._ops import NodeDownError, NodeOps, RunIdError
from cli._ops_values import ProgressSnapshot, StateMachineUpdate, VaultChange
from fibers import (
    FlowLogic,
    HospitalizeFlowException,
    Party,
    ProgressTracker,
    Step,
    initiated_by,
    initiating_flow,
    startable_by_rpc,
    suspendable,
)
from fibers._errors import FlowConfigurationError
from fibers._node import Node
from ledger.testing import DummyState, MockNetwork, issue_for_test


@startable_by_rpc
@initiating_flow
class Ask(FlowLogic[str]):
    """Ask ``other`` a question; return its answer (the question in capitals)."""

    ASKING = Step("Asking")
    READING = Step("Reading the answer")

    def __init__(self, other: Party, question: str) -> None:
        self.other, self.question = other, question
        self.progress_tracker = ProgressTracker(self.ASKING, self.READING)

    @suspendable
    def call(self) -> str:
        tracker = self.progress_tracker
        assert tracker is not None
        tracker.current_step = self.ASKING
        answer = self.send_and_receive(self.other, self.question, str).unwrap(str)
        tracker.current_step = self.READING
        return answer


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        question = self.receive(self.other, str).unwrap(str)
        self.send(self.other, question.upper())


@startable_by_rpc
class Fragile(FlowLogic[str]):
    """Hospitalised until the operator has ``healed`` it."""

    healed: ClassVar[bool] = False

    def __init__(self, label: str) -> None:
        self.label = label

    @suspendable
    def call(self) -> str:
        if not Fragile.healed:
            raise HospitalizeFlowException(f"{self.label} needs an operator")
        return self.label


@pytest.fixture
def network(tmp_path: Path) -> Iterator[MockNetwork]:
    network = MockNetwork(tmp_path)
    network.create_notary_node("Notary")
    network.create_node("BankA")
    network.create_node("BankB")
    Fragile.healed = False
    try:
        yield network
    finally:
        network.stop_nodes()


def ops_of(network: MockNetwork, name: str) -> NodeOps:
    return NodeOps(lambda: network.node(name), driver=network)


@pytest.fixture
def bank_a(network: MockNetwork) -> NodeOps:
    return ops_of(network, "BankA")


def test_a_flow_starts_by_name_and_the_pump_runs_it_to_its_end(bank_a: NodeOps) -> None:
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "hello"})
    assert started.flow_class == "Ask"
    [machine] = bank_a.state_machines()
    assert (machine.run_id, machine.status, machine.waiting_for) == (
        started.run_id, "SUSPENDED", "a message from BankB")
    assert bank_a.pump() is True  # nothing left to move
    assert bank_a.state_machines() == []
    outcome = bank_a.outcome(started.run_id)
    assert outcome is not None
    assert (outcome.status, outcome.result) == ("COMPLETED", "'HELLO'")


def test_a_qualified_name_starts_the_same_flow(bank_a: NodeOps) -> None:
    started = bank_a.start_flow(f"{__name__}.Ask", {"other": "BankB", "question": "q"})
    assert started.flow_class == "Ask"


def test_bad_arguments_and_unknown_flows_are_refused_before_anything_starts(
    bank_a: NodeOps,
) -> None:
    with pytest.raises(FlowArgumentError, match=r"expected Ask\(other: Party, question: str\)"):
        bank_a.start_flow("Ask", {"other": "BankB"})
    with pytest.raises(UnknownNameError, match="did you mean Ask"):
        bank_a.start_flow("Ask2", {})
    assert bank_a.state_machines() == []


def test_a_tracked_start_streams_the_tree_until_the_outcome(bank_a: NodeOps) -> None:
    snapshots: list[ProgressSnapshot] = []
    started = bank_a.start_tracked_flow("Ask", {"other": "BankB", "question": "q"},
                                        snapshots.append)
    assert snapshots[-1].steps == ((0, "Starting"), (0, "Asking"), (0, "Reading the answer"),
                                   (0, "Done"))
    assert snapshots[-1].index == 1 and snapshots[-1].outcome is None
    bank_a.pump()
    final = snapshots[-1]
    assert final.run_id == started.run_id
    assert final.index == 3
    assert final.outcome is not None and final.outcome.status == "COMPLETED"


def test_the_feed_reports_flows_added_changed_and_removed_with_their_outcome(
    bank_a: NodeOps,
) -> None:
    updates: list[StateMachineUpdate] = []
    subscription = bank_a.state_machines_feed(updates.append)
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    bank_a.pump()
    kinds = [u.kind for u in updates if u.machine.run_id == started.run_id]
    assert kinds[0] == "added" and kinds[-1] == "removed"
    removed = updates[-1]
    assert removed.outcome is not None and removed.outcome.status == "COMPLETED"
    subscription.unsubscribe()
    bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    assert len(updates) == len(kinds)  # nothing after unsubscribing


def test_a_finished_flows_progress_feed_gives_its_final_snapshot(bank_a: NodeOps) -> None:
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    bank_a.pump()
    seen: list[ProgressSnapshot] = []
    bank_a.progress_feed(started.short, seen.append)
    [final] = seen
    assert final.outcome is not None and final.outcome.status == "COMPLETED"


def test_run_ids_may_be_abbreviated_to_a_unique_prefix(bank_a: NodeOps) -> None:
    ids = [bank_a.start_flow("Ask", {"other": "BankB", "question": str(i)}).run_id
           for i in range(17)]  # 17 ids: two of them share their first hex digit
    assert bank_a.resolve_run_id(ids[0][:8]) == ids[0]
    assert bank_a.resolve_run_id(ids[0].upper()) == ids[0]
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(RunIdError, match=f"run id '{shared}' is ambiguous: it starts "):
        bank_a.resolve_run_id(shared)
    with pytest.raises(RunIdError, match="no flow on BankA has a run id starting 'zz'"):
        bank_a.resolve_run_id("zz")


def test_inspect_shows_the_suspended_stack_with_its_locals(bank_a: NodeOps) -> None:
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "what?"})
    entry = bank_a.inspect_flow(started.short)
    assert entry["status"] == "SUSPENDED"
    assert entry["waiting_for"] == "a message from BankB"
    [frame] = entry["stack"]
    assert frame["function"] == "Ask.call"
    assert "tracker" in frame["locals"]
    assert [s["peer"] for s in entry["sessions"]] == ["BankB"]


def test_killing_a_flow_ends_it_and_its_counterparty(network: MockNetwork,
                                                      bank_a: NodeOps) -> None:
    bank_b = ops_of(network, "BankB")
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    network.run_network(max_messages=1)  # BankB's responder starts and answers
    assert bank_a.kill_flow(started.short) is True
    outcome = bank_a.outcome(started.run_id)
    assert outcome is not None and outcome.status == "KILLED"
    assert outcome.error is not None and outcome.error.startswith("KilledFlowException")
    bank_a.pump()
    assert bank_b.state_machines() == []
    assert bank_a.kill_flow(started.run_id) is False  # already over


def test_the_hospital_lists_retries_and_kills_flows(bank_a: NodeOps) -> None:
    first = bank_a.start_flow("Fragile", {"label": "one"})
    second = bank_a.start_flow("Fragile", {"label": "two"})
    rows = {row.run_id: row for row in bank_a.hospital()}
    assert set(rows) == {first.run_id, second.run_id}
    assert "one needs an operator" in rows[first.run_id].diagnosis
    Fragile.healed = True
    assert bank_a.retry(first.short) is True
    bank_a.pump()
    outcome = bank_a.outcome(first.run_id)
    assert outcome is not None and outcome.status == "ENDED"  # retry_flow gives no handle
    assert bank_a.hospital_kill(first.run_id) is False  # not in the hospital any more
    assert bank_a.hospital_kill(second.short) is True
    assert bank_a.hospital() == []


def test_the_checkpoint_dump_has_every_flow_in_flight(bank_a: NodeOps) -> None:
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    [entry] = bank_a.checkpoints_dump()
    assert entry["run_id"] == started.run_id
    assert entry["stack"][0]["function"] == "Ask.call"


def test_the_vault_is_queried_by_state_type_name_and_tracked(network: MockNetwork,
                                                             bank_a: NodeOps) -> None:
    node = network.node("BankA")
    stx = issue_for_test(node, DummyState(node.party, 7))
    [row] = bank_a.vault_query("ledger.testing.DummyState")  # other tests define DummyStates
    assert row.ref == f"{stx.id}(0)"
    assert row.state_type == "DummyState"
    assert dict(row.fields) == {"owner": "BankA", "magic": "7"}
    assert row.notary == "Notary" and not row.locked
    assert bank_a.vault_query("Cash") == []
    changes: list[VaultChange] = []
    snapshot, subscription = bank_a.vault_track(changes.append)
    assert snapshot == [row]
    issue_for_test(node, DummyState(node.party, 8))
    [change] = changes
    assert [r.fields for r in change.produced] == [(("owner", "BankA"), ("magic", "8"))]
    subscription.unsubscribe()
    assert bank_a.state_and_ref(str(stx.id)[:6] + "(0)").ref == row_ref(stx.id)


def row_ref(tx_id: object) -> object:
    from ledger import SecureHash, StateRef

    assert isinstance(tx_id, SecureHash)
    return StateRef(tx_id, 0)


def test_cash_issued_through_ops_shows_in_the_vault(bank_a: NodeOps) -> None:
    started = bank_a.start_flow("CashIssueFlow",
                                {"amount": "250 USD", "issuer_ref": "01", "notary": "Notary"})
    bank_a.pump()
    assert bank_a.outcome(started.run_id) is not None
    [row] = bank_a.vault_query("Cash.State")
    assert row.description == "250.00 USD issued by BankA (ref 01) owned by BankA"


def test_network_map_and_node_info_describe_the_node(bank_a: NodeOps) -> None:
    parties = {row.name: row for row in bank_a.network_map()}
    assert set(parties) == {"BankA", "BankB", "Notary"}
    assert parties["Notary"].notary and parties["BankA"].this_node
    info = bank_a.node_info()
    assert (info.name, info.notary, info.flows, info.draining) == ("BankA", False, 0, False)


def test_a_draining_node_refuses_new_flows(bank_a: NodeOps) -> None:
    bank_a.set_draining(True)
    assert bank_a.node_info().draining
    with pytest.raises(FlowConfigurationError, match="is draining"):
        bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    bank_a.set_draining(False)
    bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})


def test_a_stopped_node_cannot_be_operated(network: MockNetwork) -> None:
    bank_b = ops_of(network, "BankB")
    network.stop_node(network.node("BankB"))
    assert not bank_b.is_up
    with pytest.raises(NodeDownError, match="node BankB is down"):
        bank_b.node_info()


def test_flows_restored_by_a_restart_are_followed_again(network: MockNetwork,
                                                         bank_a: NodeOps) -> None:
    started = bank_a.start_flow("Ask", {"other": "BankB", "question": "q"})
    network.restart_node(network.node("BankA"))
    assert [m.run_id for m in bank_a.state_machines()] == [started.run_id]
    bank_a.pump()
    outcome = bank_a.outcome(started.run_id)
    assert outcome is not None and outcome.status == "COMPLETED"


def test_without_a_driver_the_pump_does_nothing(network: MockNetwork) -> None:
    node: Node = network.node("BankA")
    ops = NodeOps(node)
    ops.start_flow("Ask", {"other": "BankB", "question": "q"})
    assert ops.pump() is False
    assert len(ops.state_machines()) == 1
