"""The frame snapshot policy (``snapshot_locals``) and content-addressed large values
(docs/checkpoint-format.md, "Frame snapshots"): what the step records hold under each policy,
locals captured for the hospital, for inspection and by ``capture_locals`` (hibernation's
hook), values stored once per flow and referenced, and what happens when such a record is
missing or tampered with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from fibers import (
    FlowLogic,
    HospitalizeFlowException,
    Party,
    StateMachineRunId,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._frame_snapshots import VALUE_THRESHOLD, decode_snapshots, value_of_ref
from fibers._identity import NodeIdentity
from fibers._inspection import describe_stored
from fibers._journal import Snapshot
from fibers._node import Node
from fibers._state_machine import FlowStateMachine
from fibers._step_record import decode_step
from fibers.testing import MockNetwork
from fibers.transport import InMemoryNetwork
from tests.fibers.test_storage_interface import RecordingStorage

BODY = bytes(range(256)) * 20  # 5 KB: well above VALUE_THRESHOLD


@dataclass(frozen=True)
class Document:
    title: str
    body: bytes


class DocumentFlow(FlowLogic[int]):
    """Holds a large frozen value and a small local across ``rounds`` round trips; then
    returns, or (``park``) asks to be hospitalised."""

    park: ClassVar[bool] = False

    def __init__(self, other: Party, rounds: int) -> None:
        self.other = other
        self.rounds = rounds

    @suspendable
    def call(self) -> int:
        doc = Document("contract", BODY)
        note = "kept"
        for i in range(self.rounds):
            self.send_and_receive(self.other, i, int)
        if type(self).park:
            raise HospitalizeFlowException(f"look at {note}")
        self.send(self.other, -1)
        return len(doc.body)


@initiating_flow
class HoldsDocument(DocumentFlow):
    pass


@initiating_flow
class ParksWithDocument(DocumentFlow):
    park = True


@initiated_by(HoldsDocument)
class Echo(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        while (number := self.receive(self.other, int).unwrap(int)) >= 0:
            self.send(self.other, number)


@initiated_by(ParksWithDocument)
class EchoForParked(Echo):
    pass


def _rows(node: Node, db: str) -> list[tuple[bytes, bytes]]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return [(key, storage.unseal(db, key, value))
                for key, value in storage.prefix_items(txn, db, b"")]


def _snapshots(node: Node) -> list[Snapshot]:
    return [snapshot for _, payload in _rows(node, "steps")
            if (snapshot := decode_step(payload)[2]) is not None]


def _machine(node: Node, run_id: StateMachineRunId) -> FlowStateMachine:
    machine = node._scheduler.get(run_id)
    assert machine is not None
    return machine


def _frame(entry: dict[str, Any], function: str) -> dict[str, Any]:
    [frame] = [f for f in entry["stack"] if f["function"] == function]
    return frame


def _value_puts(storage: RecordingStorage) -> int:
    return sum(1 for w in storage.writes if w.db == "values" and w.operation.startswith("put"))


# ----- the policy --------------------------------------------------------------------------------


def test_by_default_step_records_keep_chain_lines_and_wait_but_no_locals(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    assert alice.snapshot_locals == "on_demand"
    alice.start_flow(HoldsDocument(bob.party, 3))
    snapshots = _snapshots(alice)
    assert snapshots  # one per step that did IO, each with where the flow stood
    for snapshot in snapshots:
        assert snapshot.call_chain == ("DocumentFlow.call",)
        assert snapshot.lines and snapshot.waiting == "a message from Bob"
        assert snapshot.frames == b""
    assert _rows(alice, "values") == [] and _rows(alice, "locals") == []


def test_every_step_pickles_the_locals_into_each_step_record(tmp_path: Any) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        alice.start_flow(ParksWithDocument(bob.party, 3))
        network.run_network()  # parked at the end: its step records stay
        snapshots = _snapshots(alice)
        assert len(snapshots) >= 3
        for snapshot in snapshots:
            [frame] = decode_snapshots(snapshot.frames)
            assert frame.qualname == "DocumentFlow.call"
            assert {"self", "doc", "note"} <= set(frame.locals)
            doc = frame.locals["doc"]
            assert isinstance(doc, bytes) and value_of_ref(doc) is not None
            note = frame.locals["note"]
            assert isinstance(note, bytes) and value_of_ref(note) is None  # small: inline


@pytest.mark.parametrize("bad", ["always", "", None, 1])
def test_a_bad_policy_is_refused_naming_the_choices(tmp_path: Any, bad: object) -> None:
    with pytest.raises(ValueError, match=r"snapshot_locals must be 'on_demand'.*'every_step'"):
        MockNetwork(tmp_path, snapshot_locals=bad)  # type: ignore[arg-type]
    identity = NodeIdentity("Alice")
    with pytest.raises(ValueError, match="snapshot_locals must be"):
        Node(identity, InMemoryNetwork().endpoint(identity.party),
             snapshot_locals=bad)  # type: ignore[arg-type]


# ----- locals captured out of step ---------------------------------------------------------------


def test_a_parked_flow_s_locals_are_stored_and_shown_after_a_restart(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(ParksWithDocument(bob.party, 2))
    mock_network.run_network()
    [entry] = alice.hospital()
    assert "look at kept" in entry.diagnosis
    assert len(_rows(alice, "locals")) == 1 and len(_rows(alice, "values")) == 1
    for restart in (False, True):
        if restart:
            alice = mock_network.restart_node(alice)
        inspected = alice.inspect_flow(handle.id)
        assert inspected["status"] == "HOSPITALIZED"
        assert inspected["locals_from"] == "captured"
        frame = _frame(inspected, "DocumentFlow.call")
        assert frame["locals"]["note"] == "'kept'"
        assert frame["locals"]["doc"].startswith("Document(title='contract', body=b'\\x00\\x01")
    [dumped] = alice.dump_checkpoints()
    assert _frame(dumped, "DocumentFlow.call")["locals"]["note"] == "'kept'"
    assert alice.kill_flow(handle.id)  # its records go, the locals and values with them
    assert _rows(alice, "locals") == [] and _rows(alice, "values") == []


class Switchable(FlowLogic[str]):
    """Reads the clock first when ``CLOCK_FIRST`` (its "new code"), else asks at once."""

    CLOCK_FIRST: ClassVar[bool] = False


@initiating_flow
class ChangesItsMind(Switchable):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        reason = "waiting for the answer"
        if type(self).CLOCK_FIRST:
            self.now()
        return self.send_and_receive(self.other, reason, str).unwrap(str)


@initiated_by(ChangesItsMind)
class Silent(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.sleep(3600)


def test_a_flow_that_diverges_at_replay_is_parked_with_its_live_locals(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(ChangesItsMind(bob.party))
    monkeypatch.setattr(Switchable, "CLOCK_FIRST", True)
    alice = mock_network.restart_node(alice)
    alice.wake_hibernated()  # restore is lazy: replayed (and parked) when woken
    [entry] = alice.hospital()
    assert "NondeterminismError" in entry.diagnosis
    inspected = alice.inspect_flow(handle.id)
    assert inspected["locals_from"] == "captured"
    frame = _frame(inspected, "ChangesItsMind.call")
    assert frame["locals"]["reason"] == "'waiting for the answer'"


def test_capture_locals_of_a_suspended_flow_is_written_by_the_group_commit(
    mock_network: MockNetwork,
) -> None:
    """The hook hibernation calls: it serialises the locals without changing the flow, and
    ``CheckpointStore.write_locals`` stores them in a group commit; they go with the flow."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(HoldsDocument(bob.party, 2))
    machine = _machine(alice, handle.id)
    captured = machine.capture_locals()
    assert captured is not None and captured.run_id == handle.id
    assert captured.journal_length == machine.journal_length
    assert captured.snapshot.call_chain == ("DocumentFlow.call",)
    assert captured.snapshot.waiting == "a message from Bob"
    [frame] = decode_snapshots(captured.snapshot.frames)
    doc = frame.locals["doc"]
    assert isinstance(doc, bytes)
    digest = value_of_ref(doc)
    assert digest is not None and captured.value(digest) is not None  # not stored yet: carried
    assert _rows(alice, "locals") == []  # capturing writes nothing
    storage = alice.storage
    assert storage is not None
    with storage.group() as group:
        assert group.step(lambda txn: alice.checkpoints.write_locals(txn, captured)) is None
    stored = alice.checkpoints.stored_locals(handle.id)
    assert stored == (captured.journal_length, captured.snapshot)
    [(key, _)] = _rows(alice, "values")
    assert key == handle.id.uuid.bytes + digest
    dumped = describe_stored(alice.checkpoints, handle.id, machine.snapshot,
                             machine.journal_length)
    assert dumped[0] == "captured"
    assert dumped[1][0]["locals"]["doc"].startswith("Document(title='contract'")
    mock_network.run_network()  # the flow goes on as if nothing happened, and ends
    assert handle.result.result(timeout=0) == len(BODY)
    assert machine.capture_locals() is None  # ended
    assert _rows(alice, "locals") == [] and _rows(alice, "values") == []


def test_capture_locals_is_none_without_storage() -> None:
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(HoldsDocument(bob.party, 2))
        assert _machine(alice, handle.id).capture_locals() is None
        assert alice.inspect_flow(handle.id)["stack"] == []


def test_inspecting_a_live_flow_shows_its_live_locals_and_writes_nothing(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(HoldsDocument(bob.party, 2))
    before = {db: _rows(alice, db) for db in ("steps", "locals", "values")}
    inspected = alice.inspect_flow(handle.id)
    assert inspected["locals_from"] == "live"
    frame = _frame(inspected, "DocumentFlow.call")
    assert frame["locals"]["note"] == "'kept'" and frame["locals"]["i"] == "0"
    assert frame["locals"]["doc"].startswith("Document(title='contract'")
    assert {db: _rows(alice, db) for db in before} == before


# ----- content-addressed values ------------------------------------------------------------------


def test_a_large_frozen_value_is_written_once_across_many_steps_and_read_after_restart(
    tmp_path: Any,
) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step",
                     wrap_storage=RecordingStorage) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(ParksWithDocument(bob.party, 12))
        network.run_network()
        assert len(alice.hospital()) == 1
        storage = alice.storage
        assert isinstance(storage, RecordingStorage)
        assert len(_snapshots(alice)) >= 12  # a step record (with locals) per round trip
        assert _value_puts(storage) == 1  # ... and the document stored once for them all
        [(key, pickled)] = _rows(alice, "values")
        assert len(pickled) >= VALUE_THRESHOLD and key.startswith(handle.id.uuid.bytes)
        alice = network.restart_node(alice)
        frame = _frame(alice.inspect_flow(handle.id), "DocumentFlow.call")
        assert frame["locals"]["doc"].startswith("Document(title='contract', body=b'\\x00")
        [(key_after, _)] = _rows(alice, "values")
        assert key_after == key
        assert alice.kill_flow(handle.id)
        assert _rows(alice, "values") == [] and _rows(alice, "locals") == []


def test_values_go_with_a_flow_that_finishes(tmp_path: Any) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(HoldsDocument(bob.party, 3))
        assert len(_rows(alice, "values")) == 1
        network.run_network()
        assert handle.result.result(timeout=0) == len(BODY)
        for db in ("steps", "values", "locals"):
            assert _rows(alice, db) == [], db


def _tamper(node: Node, key: bytes, value: bytes | None) -> None:
    storage = node.storage
    assert storage is not None
    with storage.group() as group:
        if value is None:
            assert group.step(lambda txn: storage.delete(txn, "values", key)) is None
        else:
            assert group.step(lambda txn: storage.put(txn, "values", key, value)) is None


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_a_bad_value_record_is_named_and_contained_to_its_flow(
    tmp_path: Any, damage: str
) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        parked = alice.start_flow(ParksWithDocument(bob.party, 2))
        network.run_network()
        running = alice.start_flow(HoldsDocument(bob.party, 2))
        keys = [key for key, _ in _rows(alice, "values") if key.startswith(parked.id.uuid.bytes)]
        [key] = keys
        storage = alice.storage
        assert storage is not None
        with storage.read() as txn:
            sealed = storage.get(txn, "values", key)
        assert sealed is not None
        _tamper(alice, key, None if damage == "missing" else sealed[:-1] + b"\x00")
        alice = network.restart_node(alice)  # restore never reads values: the node starts
        inspected = alice.inspect_flow(parked.id)
        frame = _frame(inspected, "DocumentFlow.call")
        shown = frame["locals"]["doc"]
        assert shown.startswith("<unreadable:") and key.hex() in shown
        assert frame["locals"]["note"] == "'kept'"  # the rest of the flow's locals are shown
        assert len(alice.dump_checkpoints()) == 2
        other = _frame(alice.inspect_flow(running.id), "DocumentFlow.call")
        assert other["locals"]["doc"].startswith("Document(title='contract'")
        restored = alice.handle(running.id)
        network.run_network()
        assert restored.result.result(timeout=0) == len(BODY)


def test_a_tampered_locals_record_is_named_and_the_flow_still_shown(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(ParksWithDocument(bob.party, 1))
    mock_network.run_network()
    storage = alice.storage
    assert storage is not None
    key = handle.id.uuid.bytes
    with storage.read() as txn:
        sealed = storage.get(txn, "locals", key)
    assert sealed is not None
    with storage.group() as group:
        assert group.step(lambda txn: storage.put(txn, "locals", key, sealed[:-1] + b"!")) is None
    alice = mock_network.restart_node(alice)
    inspected = alice.inspect_flow(handle.id)
    assert inspected["status"] == "HOSPITALIZED"
    assert "unreadable locals record" in inspected["locals_from"]
    assert key.hex() in inspected["locals_from"]
    assert [f["function"] for f in inspected["stack"]] == ["DocumentFlow.call"]
