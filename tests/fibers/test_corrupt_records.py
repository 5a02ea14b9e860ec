"""A corrupt stored record is contained to its flow: the node starts, every other flow restores
and finishes, the flow the record belongs to goes to the hospital naming the database and key.
Also: messages for a flow parked at start keep their duplicate checks."""

from __future__ import annotations

from collections.abc import Callable

import lmdb
import pytest

from fibers import (
    FlowLogic,
    HospitalizeFlowException,
    Party,
    SerializeAsToken,
    StateMachineRunId,
    initiated_by,
    initiating_flow,
    suspendable,
)
from fibers._messages import Data, ExistingSessionMessage, decode_message, encode_message
from fibers._node import Node
from fibers.testing import MockNetwork
from tests.fibers.test_durability import Collect

Corruption = Callable[[bytes], bytes]

CORRUPTIONS: dict[str, Corruption] = {
    "bad MAC": lambda v: v[:-1] + bytes([v[-1] ^ 0x01]),
    "truncated": lambda v: v[:10],
    "garbage": lambda v: bytes(range(7, 7 + 60)),
}


def _stored_keys(node: Node, db: str, prefix: bytes) -> list[bytes]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return [key for key, _ in storage.prefix_items(txn, db, prefix)]


def _corrupt(node: Node, db: str, keys: list[bytes], corruption: Corruption) -> None:
    """Rewrite ``keys`` of ``db`` in the stopped ``node``'s environment, behind its back."""
    storage = node.storage
    assert storage is not None
    env = lmdb.open(str(storage.base_dir / "node.lmdb"), max_dbs=32, subdir=True)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db.encode(), txn=txn)
            for key in keys:
                value = txn.get(key, db=handle)
                assert value is not None, (db, key)
                txn.put(key, corruption(value), db=handle)
    finally:
        env.close()


def _run_until(network: MockNetwork, condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        assert network.run_network(max_messages=1) == 1, "the network ran dry first"
    raise AssertionError("the condition never held")


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("db", ["flows", "steps", "inbox", "outbox"])
def test_a_corrupt_record_hospitalises_only_its_flow(
    mock_network: MockNetwork, db: str, corruption: str
) -> None:
    alice = mock_network.create_node("Alice")
    bob, charlie = mock_network.create_node("Bob"), mock_network.create_node("Charlie")
    survivor = alice.start_flow(Collect(charlie.party))
    if db != "outbox":  # let Charlie confirm, so that the survivor's run is not trivial
        _run_until(mock_network, lambda: bool(_stored_keys(alice, "inbox", b"Charlie\0")))
    victim = alice.start_flow(Collect(bob.party))
    run = victim.id.uuid.bytes
    if db == "inbox":  # Bob's confirm is stored for the victim
        _run_until(mock_network, lambda: bool(_stored_keys(alice, "inbox", b"Bob\0")))
    keys = {
        "flows": [run],
        "steps": _stored_keys(alice, "steps", run)[:1],
        "inbox": _stored_keys(alice, "inbox", b"Bob\0"),
        "outbox": _stored_keys(alice, "outbox", b"Bob\0"),
    }[db]
    assert keys
    mock_network.stop_node(alice)
    _corrupt(alice, db, keys, CORRUPTIONS[corruption])

    alice = mock_network.restart_node(alice)  # starts: the record is contained
    restored = survivor if survivor.result.done() else alice.handle(survivor.id)
    mock_network.run_network()

    [entry] = alice.hospital()
    assert entry.run_id == victim.id
    assert f"database '{db}' at key {keys[0].hex()}" in entry.diagnosis, entry.diagnosis
    assert restored.result.result(timeout=0) == ["apple", "banana"]
    assert [f.run_id for f in alice.flows()] == []
    # The diagnosis survives another restart (the flow stays parked, the node still starts).
    alice = mock_network.restart_node(alice)
    assert [e.run_id for e in alice.hospital()] == [victim.id]


def test_a_corrupt_outbox_record_of_a_finished_flow_is_skipped(
    mock_network: MockNetwork,
) -> None:
    """An unacknowledged message whose flow already ended: nothing to park, logged and
    skipped; the node starts and serves new flows."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Collect(bob.party))
    mock_network.run_network()
    assert handle.result.result(timeout=0) == ["apple", "banana"]
    storage = alice.storage
    assert storage is not None
    key = b"Bob\0" + (12345).to_bytes(8, "big") + b"\0" + (0).to_bytes(4, "big")
    with storage.group() as group:
        group.step(lambda txn: storage.put(txn, "outbox", key, b"\x01" + b"x" * 40))
    alice = mock_network.restart_node(alice)
    assert alice.hospital() == []
    again = alice.start_flow(Collect(bob.party))
    mock_network.run_network()
    assert again.result.result(timeout=0) == ["apple", "banana"]


# ----- duplicates for a flow parked when its node started ---


class Gate(SerializeAsToken):
    open = False
    answers: list[str] | None = None


@initiating_flow
class TakeThenPark(FlowLogic[list[str]]):
    """Takes "apple" (committed: waiting for "pear" ends the step), then "pear", then parks
    until the gate opens, then takes "banana" (which Bob sends 5 s after "pear")."""

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> list[str]:
        first = self.send_and_receive(self.other, "both?", str).unwrap(str)
        second = self.receive(self.other, str).unwrap(str)
        if not self.service_hub.get(Gate).open:
            raise HospitalizeFlowException("waiting for the gate")
        answers = [first, second, self.receive(self.other, str).unwrap(str)]
        self.service_hub.get(Gate).answers = answers
        return answers


@initiated_by(TakeThenPark)
class AnswerApartTwice(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.send(self.other, "apple")
        self.send(self.other, "pear")
        self.sleep(5)  # "banana" leaves later, so the test can hold it back
        self.send(self.other, "banana")


def _data_frames_to(network: MockNetwork, name: str) -> list[bytes]:
    frames = []
    for message in network.network.queue:
        decoded = decode_message(message.frame)
        if (message.recipient.name == name and isinstance(decoded, ExistingSessionMessage)
                and isinstance(decoded.body, Data)):
            frames.append(message.frame)
    return frames


def test_a_duplicate_for_a_parked_flow_is_not_processed_again_on_retry(
    mock_network: MockNetwork,
) -> None:
    gate = Gate()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("gate", gate)
    handle = alice.start_flow(TakeThenPark(bob.party))
    # Deliver until "apple" is on its way to Alice, and keep a copy of its frame.
    _run_until(mock_network, lambda: bool(_data_frames_to(mock_network, "Alice")))
    apple = _data_frames_to(mock_network, "Alice")
    mock_network.run_network()  # Alice takes "apple", then "pear", and parks
    assert [e.run_id for e in alice.hospital()] == [handle.id]
    alice = mock_network.restart_node(alice)
    assert [e.run_id for e in alice.hospital()] == [handle.id]
    # Bob re-sends "apple" (as after his own restart): a duplicate for the parked flow.
    alice.deliver_batch([(bob.party, apple[0])])
    seq = decode_message(apple[0]).seq  # type: ignore[union-attr]
    assert seq not in [int.from_bytes(k[-4:], "big")
                       for k in _stored_keys(alice, "inbox", b"Bob\0")]
    mock_network.advance_time(5)  # now "banana"
    mock_network.run_network()
    gate.open = True
    assert alice.retry_flow(handle.id)
    mock_network.run_network()
    assert alice.flows() == [] and alice.hospital() == []
    assert gate.answers == ["apple", "pear", "banana"]  # not ["apple", "apple", "pear"]


def test_parked_routes_know_what_was_processed(mock_network: MockNetwork) -> None:
    """The floor of each parked route is one past the last message its journal received."""
    from fibers._hospital import parked_routes

    gate = Gate()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("gate", gate)
    handle = alice.start_flow(TakeThenPark(bob.party))
    mock_network.run_network()
    assert alice.checkpoints is not None
    stored = alice.checkpoints.load_flow(StateMachineRunId(handle.id.uuid))
    [(route, floor)] = parked_routes(alice.party.name, stored).items()
    assert route[0] == "Alice" and route[2] is True
    assert floor == 2  # the confirm was 0, "apple" 1


def test_a_parked_flow_keeps_the_reorder_window(mock_network: MockNetwork) -> None:
    from fibers._inbound import REORDER_WINDOW

    gate = Gate()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    alice.services.install("gate", gate)
    handle = alice.start_flow(TakeThenPark(bob.party))
    mock_network.run_network()
    alice = mock_network.restart_node(alice)
    assert [e.run_id for e in alice.hospital()] == [handle.id]
    before = _stored_keys(alice, "inbox", b"Bob\0")
    [(route, _)] = alice._router.parked().items()
    far = [(bob.party, encode_message(ExistingSessionMessage(route[1], True, seq, Data(b"x"))))
           for seq in (3 + REORDER_WINDOW, 2**32 - 1)]
    alice.deliver_batch(far)
    assert alice.frame_stats.too_far_ahead == 2
    assert _stored_keys(alice, "inbox", b"Bob\0") == before


def test_a_missing_step_record_hospitalises_only_its_flow(mock_network: MockNetwork) -> None:
    """Step records chain by journal index: one deleted behind the node's back (the seal
    cannot see a whole record vanish) leaves a gap, which parks its flow naming the record
    after the gap instead of replaying a journal with a hole in it."""
    alice = mock_network.create_node("Alice")
    bob, charlie = mock_network.create_node("Bob"), mock_network.create_node("Charlie")
    survivor = alice.start_flow(Collect(charlie.party))
    victim = alice.start_flow(Collect(bob.party))
    run = victim.id.uuid.bytes
    _run_until(mock_network, lambda: len(_stored_keys(alice, "steps", run)) >= 2)
    first, second = _stored_keys(alice, "steps", run)[:2]
    assert first == run + bytes(4)  # the first step starts at journal record 0
    mock_network.stop_node(alice)
    storage = alice.storage
    assert storage is not None
    env = lmdb.open(str(storage.base_dir / "node.lmdb"), max_dbs=32, subdir=True)
    try:
        with env.begin(write=True) as txn:
            assert txn.delete(first, db=env.open_db(b"steps", txn=txn))
    finally:
        env.close()

    alice = mock_network.restart_node(alice)
    restored = survivor if survivor.result.done() else alice.handle(survivor.id)
    mock_network.run_network()

    [entry] = alice.hospital()
    assert entry.run_id == victim.id
    assert f"step record at key {second.hex()}" in entry.diagnosis, entry.diagnosis
    assert "missing" in entry.diagnosis
    assert restored.result.result(timeout=0) == ["apple", "banana"]


def test_a_flow_checkpointed_before_step_records_is_parked_not_run_again(
    mock_network: MockNetwork,
) -> None:
    """A flow whose journal is in the databases used before step records must not restore as
    a flow that did nothing yet (it would run its requests again): it is parked, saying so."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    old = alice.start_flow(Collect(bob.party))
    run = old.id.uuid.bytes
    _run_until(mock_network, lambda: bool(_stored_keys(alice, "steps", run)))
    mock_network.stop_node(alice)
    storage = alice.storage
    assert storage is not None
    env = lmdb.open(str(storage.base_dir / "node.lmdb"), max_dbs=32, subdir=True)
    try:
        with env.begin(write=True) as txn:  # as the earlier release stored it
            steps = env.open_db(b"steps", txn=txn)
            for key in [k for k, _ in txn.cursor(db=steps) if k.startswith(run)]:
                txn.delete(key, db=steps)
            txn.put(run + bytes(4), b"\x03" + bytes(40), db=env.open_db(b"journal", txn=txn))
    finally:
        env.close()

    alice = mock_network.restart_node(alice)
    mock_network.run_network()
    [entry] = alice.hospital()
    assert entry.run_id == old.id
    assert "format before step records" in entry.diagnosis, entry.diagnosis
    assert alice.flows() == []
