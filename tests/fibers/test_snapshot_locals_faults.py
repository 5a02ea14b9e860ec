"""The snapshot-locals policy and content-addressed values on their failure paths
(docs/checkpoint-format.md, "Frame snapshots"): a step whose values could not be written, a
locals record that could not be written, a damaged locals record, every way a flow ends, and
locals that are not what their type promises (a frozen dataclass holding a list, a ``str``
subclass)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from fibers import (
    FlowException,
    FlowLogic,
    HospitalizeFlowException,
    Party,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._checkpoint import loads
from fibers._frame_snapshots import VALUE_THRESHOLD, decode_snapshots, value_of_ref
from fibers._journal import Snapshot
from fibers._locals import CapturedLocals, SnapshotLocals
from fibers._node import Node
from fibers.testing import MockNetwork
from tests.fibers.test_commit_faults import _faults, _settle
from tests.fibers.test_snapshot_locals import (
    BODY,
    HoldsDocument,
    ParksWithDocument,
    _frame,
    _rows,
    _snapshots,
)


def _references(node: Node) -> set[bytes]:
    """The value digests the stored step records' locals refer to."""
    refs = set()
    for snapshot in _snapshots(node):
        for frame in decode_snapshots(snapshot.frames):
            for local in frame.locals.values():
                if isinstance(local, bytes) and (digest := value_of_ref(local)) is not None:
                    refs.add(digest)
    return refs


# ----- a commit that fails after the values were remembered --------------------------------------


@pytest.mark.parametrize("how", ["values write", "whole commit"])
def test_a_step_whose_values_were_not_stored_writes_them_again_on_its_retry(
    tmp_path: Any, how: str
) -> None:
    """The state machine remembered the document as written when it snapshotted the step;
    the commit failed: no stored step may refer to a value that is not stored."""
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        plan = _faults(alice)
        if how == "values write":
            plan.fail_writes_to("values", 1)
        else:
            plan.fail_next_commits(1)
        handle = alice.start_flow(ParksWithDocument(bob.party, 3))
        _settle(network)
        [entry] = alice.hospital()
        assert entry.run_id == handle.id and "look at kept" in entry.diagnosis
        stored = {key[16:] for key, _ in _rows(alice, "values")}
        refs = _references(alice)
        assert refs and refs <= stored
        alice = network.restart_node(alice)
        frame = _frame(alice.inspect_flow(handle.id), "DocumentFlow.call")
        assert frame["locals"]["doc"].startswith("Document(title='contract'")


# ----- a locals record that cannot be written ----------------------------------------------------


def test_a_parked_flow_whose_locals_cannot_be_written_is_still_parked_durably(
    mock_network: MockNetwork,
) -> None:
    """A local too large for the store (here: its write fails) costs the locals record, not
    the hospital status: the diagnosis matters more."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    _faults(alice).fail_writes_to("locals", 1)
    handle = alice.start_flow(ParksWithDocument(bob.party, 1))
    mock_network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == handle.id
    assert [key for key, _ in _rows(alice, "flow_status")] == [handle.id.uuid.bytes]
    assert _rows(alice, "locals") == []
    alice = mock_network.restart_node(alice)
    [entry] = alice.hospital()
    assert "look at kept" in entry.diagnosis
    inspected = alice.inspect_flow(handle.id)
    assert inspected["status"] == "HOSPITALIZED" and inspected["locals_from"] is None
    assert [f["function"] for f in inspected["stack"]] == ["DocumentFlow.call"]


def test_a_damaged_locals_record_still_shows_the_step_s_values(tmp_path: Any) -> None:
    """Under every_step, a parked flow whose locals record is unreadable is shown from its last
    step, whose referenced values are read as usual."""
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(ParksWithDocument(bob.party, 2))
        network.run_network()
        storage = alice.storage
        assert storage is not None
        key = handle.id.uuid.bytes
        with storage.group() as group:
            assert group.step(lambda txn: storage.put(txn, "locals", key, b"\x01junk")) is None
        alice = network.restart_node(alice)
        inspected = alice.inspect_flow(handle.id)
        assert "unreadable locals record" in inspected["locals_from"]
        frame = _frame(inspected, "DocumentFlow.call")
        assert frame["locals"]["doc"].startswith("Document(title='contract'")
        assert frame["locals"]["note"] == "'kept'"


# ----- every way a flow ends deletes its locals and values ---------------------------------------


@initiating_flow
class FailsWithDocument(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> int:
        doc = BODY.decode("latin-1")  # a large str: content-addressed too
        self.send_and_receive(self.other, 0, int)
        raise FlowException(f"gave up holding {len(doc)} characters")


@initiated_by(FailsWithDocument)
class EchoForFailing(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, int)
        self.send(self.other, 1)


def _nothing_left(node: Node) -> None:
    for db in ("flows", "flow_status", "steps", "locals", "values"):
        assert _rows(node, db) == [], db


def test_a_failed_flow_leaves_no_locals_or_values(tmp_path: Any) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(FailsWithDocument(bob.party))
        assert len(_rows(alice, "values")) == 1
        network.run_network()
        with pytest.raises(FlowException, match="gave up"):
            handle.result.result(timeout=0)
        _nothing_left(alice)


def test_a_killed_running_flow_leaves_no_locals_or_values(tmp_path: Any) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(HoldsDocument(bob.party, 3))
        machine = alice._scheduler.get(handle.id)
        assert machine is not None
        captured = machine.capture_locals()  # hibernation's write: a locals record too
        assert captured is not None
        storage = alice.storage
        assert storage is not None
        with storage.group() as group:
            assert group.step(lambda txn: alice.checkpoints.write_locals(txn, captured)) is None
        assert _rows(alice, "locals") and _rows(alice, "values")
        assert alice.kill_flow(handle.id)
        network.run_network()
        _nothing_left(alice)


def test_a_parked_flow_retried_to_its_end_leaves_no_locals_or_values(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(ParksWithDocument(bob.party, 1))
    mock_network.run_network()
    assert _rows(alice, "locals") and _rows(alice, "values")
    monkeypatch.setattr(ParksWithDocument, "park", False)  # the operator fixed the cause
    assert alice.retry_flow(handle.id)
    mock_network.run_network()
    assert handle.result.result(timeout=0) == len(BODY)
    _nothing_left(alice)


# ----- locals that are not what their type promises ----------------------------------------------


@dataclass(frozen=True)
class Basket:
    """Frozen, but holding a list that the flow changes between steps."""

    items: list[str] = field(default_factory=list)


class FillsBasket(FlowLogic[int]):
    """Adds an item to its basket at each of three sleeps."""

    def __init__(self, size: int) -> None:
        self.size = size  # the length of each item: small, or the basket over the threshold

    @suspendable
    def call(self) -> int:
        basket = Basket()
        for i in range(3):
            basket.items.append(f"item{i}-" + "x" * self.size)
            self.sleep(10)
        return len(basket.items)


def _basket(node: Node, snapshot: Snapshot, captured: CapturedLocals) -> Basket:
    """The basket among ``snapshot``'s locals: inline, or a value ``captured`` carries or a
    step stored."""
    [frame] = decode_snapshots(snapshot.frames)
    local = frame.locals["basket"]
    assert isinstance(local, bytes)
    digest = value_of_ref(local)
    pickled = local if digest is None else (
        captured.value(digest) or node.checkpoints.stored_value(captured.run_id, digest))
    basket = loads(pickled, node.checkpoints.tokens)
    assert isinstance(basket, Basket)
    return basket


@pytest.mark.parametrize("policy", ["on_demand", "every_step"])
@pytest.mark.parametrize("size", [4, VALUE_THRESHOLD])
def test_a_frozen_dataclass_holding_a_list_is_shown_as_it_is_now(
    tmp_path: Any, size: int, policy: SnapshotLocals
) -> None:
    """Frozen is no promise that its contents do not change: what a snapshot shows of it is
    what it holds at that suspension, not what it held when first seen."""
    with MockNetwork(tmp_path, snapshot_locals=policy) as network:
        alice = network.create_node("Alice")
        handle = alice.start_flow(FillsBasket(size))
        machine = alice._scheduler.get(handle.id)
        assert machine is not None
        for count in (1, 2, 3):
            inspected = alice.inspect_flow(handle.id)  # live: captured now (and cached)
            assert inspected["locals_from"] == "live"
            shown = _frame(inspected, "FillsBasket.call")["locals"]["basket"]
            assert shown.startswith("Basket(items=['item0-")
            captured = machine.capture_locals()
            assert captured is not None
            assert len(_basket(alice, captured.snapshot, captured).items) == count
            if policy == "every_step":  # and the step record of this suspension
                [*_, last] = _snapshots(alice)
                assert len(_basket(alice, last, captured).items) == count
            network.advance_time(10)
            network.run_network()
        assert handle.result.result(timeout=0) == 3


class Label(str):
    """A ``str`` subclass: not a frozen value (its attributes may change)."""

    note: str = ""


class HoldsLabel(FlowLogic[str]):
    @suspendable
    def call(self) -> str:
        label = Label("L" * (2 * VALUE_THRESHOLD))
        for note in ("first", "second"):
            label.note = note
            self.sleep(10)
        return label.note


def test_a_large_str_subclass_is_pickled_inline_each_time(tmp_path: Any) -> None:
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice = network.create_node("Alice")
        handle = alice.start_flow(HoldsLabel())
        for note in ("first", "second"):
            [*_, last] = _snapshots(alice)
            [frame] = decode_snapshots(last.frames)
            local = frame.locals["label"]
            assert isinstance(local, bytes) and value_of_ref(local) is None
            label = loads(local, alice.checkpoints.tokens)
            assert isinstance(label, Label) and label.note == note
            network.advance_time(10)
            network.run_network()
        assert _rows(alice, "values") == []
        assert handle.result.result(timeout=0) == "second"


# ----- records moved between flows or keys -------------------------------------------------------


def test_a_value_record_moved_from_another_flow_is_named_unreadable(tmp_path: Any) -> None:
    """Two flows holding the same document have a values record each under the same digest:
    one copied over the other fails its seal (bound to its key), and only that flow's local
    is shown unreadable."""
    with MockNetwork(tmp_path, snapshot_locals="every_step") as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        first = alice.start_flow(ParksWithDocument(bob.party, 1))
        second = alice.start_flow(ParksWithDocument(bob.party, 1))
        network.run_network()
        rows = {key[:16]: key for key, _ in _rows(alice, "values")}
        source, victim = rows[first.id.uuid.bytes], rows[second.id.uuid.bytes]
        assert victim[16:] == source[16:]  # the same content: the same digest
        storage = alice.storage
        assert storage is not None
        with storage.read() as txn:
            sealed = storage.get(txn, "values", source)
        assert sealed is not None
        with storage.group() as group:
            assert group.step(lambda txn: storage.put(txn, "values", victim, sealed)) is None
        alice = network.restart_node(alice)
        shown = _frame(alice.inspect_flow(second.id), "DocumentFlow.call")["locals"]["doc"]
        assert shown.startswith("<unreadable:") and victim.hex() in shown, shown
        kept = _frame(alice.inspect_flow(first.id), "DocumentFlow.call")["locals"]["doc"]
        assert kept.startswith("Document(title='contract'")


# ----- a capture whose locals cannot be pickled --------------------------------------------------


class Hostile:
    """Refuses to be pickled, by pickle and by dill, and to be shown."""

    def __reduce_ex__(self, protocol: object) -> Any:
        raise RuntimeError("no pickling")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ParksHoldingTheUnpicklable(FlowLogic[None]):
    @suspendable
    def call(self) -> None:
        lock = threading.Lock()
        hostile = Hostile()
        note = "still shown"
        self.sleep(10)
        raise HospitalizeFlowException(f"{note}: {lock!r} and {type(hostile).__name__}")


def test_a_flow_parked_holding_unpicklable_locals_is_parked_and_shown(
    mock_network: MockNetwork,
) -> None:
    alice = mock_network.create_node("Alice")
    handle = alice.start_flow(ParksHoldingTheUnpicklable())
    mock_network.advance_time(10)
    mock_network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == handle.id
    assert [key for key, _ in _rows(alice, "flow_status")] == [handle.id.uuid.bytes]
    alice = mock_network.restart_node(alice)
    inspected = alice.inspect_flow(handle.id)
    assert inspected["locals_from"] == "captured"
    shown = _frame(inspected, "ParksHoldingTheUnpicklable.call")["locals"]
    assert shown["note"] == "'still shown'"
    assert shown["lock"].startswith("<unserialisable")
    assert shown["hostile"].startswith("<unserialisable") and "Hostile" in shown["hostile"]
