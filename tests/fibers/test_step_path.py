"""The durable step path writes only what a crash needs: a message received and consumed in
the same group commit leaves no inbox record (the step record journals it), yet every message
is processed exactly once at every crash point; a message consumed in a later commit is kept
in the inbox until then."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import FlowLogic, Party, _wire, initiated_by, initiating_flow, suspendable
from fibers._checkpoint_store import message_key
from fibers._journal import JournalEntry, Snapshot
from fibers._messages import (
    AckedSessionMessage,
    Data,
    ExistingSessionMessage,
    InitialSessionMessage,
    decode_message,
    with_acks,
)
from fibers._node import Node
from fibers._step_record import decode_step, encode_step
from fibers.storage import Storage, Txn
from fibers.testing import MockNetwork, explore
from tests.fibers.explore_flows import Transfer, install_books
from tests.fibers.test_durability import Collect
from tests.fibers.test_explore import posted_once
from tests.fibers.test_storage_interface import RecordingStorage

Written = tuple[str, str, bytes, bytes | None]  # (operation, database, key, payload)


class KeyRecordingStorage(RecordingStorage):
    """Records every put and delete with its key (and payload) too."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.keyed: list[Written] = []

    def put_sealed(self, txn: Txn, db_name: str, key: bytes, payload: bytes) -> None:
        self.keyed.append(("put", db_name, key, payload))
        super().put_sealed(txn, db_name, key, payload)

    def delete(self, txn: Txn, db_name: str, key: bytes) -> bool:
        self.keyed.append(("delete", db_name, key, None))
        return super().delete(txn, db_name, key)


def _recording() -> tuple[dict[str, KeyRecordingStorage], Callable[[Storage], Storage]]:
    made: dict[str, KeyRecordingStorage] = {}

    def wrap(inner: Storage) -> Storage:
        store = KeyRecordingStorage(inner)
        made[inner.base_dir.name] = store
        return store

    return made, wrap


def _data_in_inbox(store: KeyRecordingStorage) -> list[Written]:
    """The inbox puts and deletes of data messages (control messages stay until a flow ends)."""
    found = []
    for op, db, key, payload in store.keyed:
        if db != "inbox":
            continue
        if op == "put":
            assert payload is not None
            message = decode_message(payload)
            if not (isinstance(message, ExistingSessionMessage) and isinstance(message.body, Data)):
                continue
        found.append((op, db, key, payload))
    return found


def _inbox_and_outbox(net: MockNetwork) -> dict[str, int]:
    counts = {}
    for node in net.nodes:
        storage = node.storage
        assert storage is not None
        with storage.read() as txn:
            counts[node.party.name] = sum(
                1 for db in ("inbox", "outbox") for _ in storage.prefix_items(txn, db, b""))
    return counts


def test_a_message_received_and_consumed_in_one_commit_is_never_written_to_the_inbox() -> None:
    made, wrap = _recording()
    with MockNetwork(wrap_storage=wrap) as net:
        a, b = net.create_node("A"), net.create_node("B")
        handle = a.start_flow(Collect(b.party))
        net.run_network()
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        # Each side received data messages and consumed each in the round it arrived in.
        assert [d for d in made.values()] and all(
            _data_in_inbox(store) == [] for store in made.values())
        # ... and they were stored: by the step records (the journal), and acknowledged.
        assert any(db == "steps" for store in made.values() for _, db, _, _ in store.keyed)
        assert _inbox_and_outbox(net) == {"A": 0, "B": 0}


def _still_exactly_once(net: MockNetwork) -> None:
    posted_once(net)
    assert set(_inbox_and_outbox(net).values()) == {0}, _inbox_and_outbox(net)


def test_skipping_the_inbox_record_is_exactly_once_at_every_crash_point() -> None:
    """Exhaustive over crash points (before and after every group commit, and during
    restore) of the transfer, whose responder consumes each message in the commit that
    stores it: each side posts once, nothing is left in any inbox or outbox."""

    def transfer(net: MockNetwork) -> None:
        install_books(net)
        a, b = net.create_node("A"), net.create_node("B")
        a.start_flow(Transfer(b.party, "t1", 5))

    report = explore(transfer, _still_exactly_once, reorder=False, duplicates=False)
    report.raise_first()
    assert report.exhaustive and report.failures == []
    schedules = " | ".join(report.schedules)
    for kind in ("!B<", "!B>", "!A<", "!A>"):
        assert kind in schedules, kind


@initiating_flow
class SendLater(FlowLogic[str]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> str:
        self.send(self.other, "early")
        return self.receive(self.other, str).unwrap(str)


@initiated_by(SendLater)
class SleepThenReceive(FlowLogic[None]):
    received: list[str] = []  # noqa: RUF012 - the test's record across restarts

    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.sleep(10)
        word = self.receive(self.other, str).unwrap(str)
        SleepThenReceive.received.append(word)
        self.send(self.other, word.upper())


def test_a_message_consumed_in_a_later_commit_stays_in_the_inbox_until_then() -> None:
    SleepThenReceive.received = []
    made, wrap = _recording()
    with MockNetwork(wrap_storage=wrap) as net:
        a, b = net.create_node("A"), net.create_node("B")
        handle = a.start_flow(SendLater(b.party))
        net.run_network()  # the init (with "early") is stored; B sleeps
        [(op, _, key, _)] = _data_in_inbox(made["B"])
        assert op == "put"
        b = net.restart_node(b)  # a crash while the message waits in the inbox
        net.clock.advance(timedelta(seconds=11))
        net.run_network()
        while net.step():
            pass
        assert handle.result.result(timeout=0) == "EARLY"
        # Replayed after the restart, the flow got the stored message once and deleted it.
        assert SleepThenReceive.received == ["early"]
        assert ("delete", "inbox", key, None) in made["B"].keyed
        assert _inbox_and_outbox(net) == {"A": 0, "B": 0}


# ----- acknowledgements ride on frames ------------------------------------------------------------


def _outbox(node: Node) -> list[bytes]:
    storage = node.storage
    assert storage is not None
    with storage.read() as txn:
        return [key for key, _ in storage.prefix_items(txn, "outbox", b"")]


def test_acks_ride_on_the_next_frame_to_their_peer_and_are_honoured() -> None:
    with MockNetwork() as net:
        a, b = net.create_node("A"), net.create_node("B")
        handle = a.start_flow(Collect(b.party))
        net.run_network()
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        messages = [e.message for e in net.transcript]
        riding = [m for m in messages if isinstance(m, AckedSessionMessage)]
        # B's confirm carries the ack of A's init, A's "second?" the ack of B's "apple", ...
        assert len(riding) >= 3
        acked = {(m.session_id, m.to_initiator, m.seq) if isinstance(m, ExistingSessionMessage)
                 else (m.initiator_session_id, False, 0) for m in messages
                 if isinstance(m, ExistingSessionMessage | InitialSessionMessage)}
        assert {entry for m in riding for entry in m.acks} <= acked
        # ... and every message was forgotten by its sender once acknowledged, none twice.
        assert _outbox(a) == [] and _outbox(b) == []
        assert a.frame_stats.stale_acks == 0 and b.frame_stats.stale_acks == 0


def test_a_lying_piggybacked_ack_is_ignored_and_counted() -> None:
    """B acknowledges A's next message before A has sent it, on a genuine frame: were it
    honoured, A would delete that message from its outbox in the very commit that writes it,
    and a loss of it could never be repaired."""
    with MockNetwork() as net:
        a, b = net.create_node("A"), net.create_node("B")
        handle = a.start_flow(Collect(b.party))
        [init] = net.network.queue
        sid = decode_message(init.frame).initiator_session_id  # type: ignore[union-attr]
        net.deliver_next()  # B stores the init and answers: confirm (0), "apple" (1)
        frames = [(m.sender, m.frame) for m in net.network.queue]
        net.network.queue.clear()
        lying = with_acks(frames[-1][1], [(sid, False, 1), (sid + 1, False, 0)])
        assert lying is not None
        a.deliver_batch([*frames[:-1], (frames[-1][0], lying)])  # A sends "second?" (1)
        assert a.frame_stats.stale_acks == 2 and a.frame_stats.total == 0
        assert message_key("B", sid, False, 1) in _outbox(a)  # kept until B really has it
        net.network.queue.clear()  # ... and "second?" is lost on the way
        for _ in range(8):  # redelivery re-sends it
            net.clock.advance(timedelta(seconds=5))
            net.run_network()
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        assert _outbox(a) == [] and _outbox(b) == []


def test_a_garbled_piggybacked_ack_drops_its_frame_which_is_re_sent() -> None:
    with MockNetwork() as net:
        a, b = net.create_node("A"), net.create_node("B")
        handle = a.start_flow(Collect(b.party))
        net.deliver_next()
        frames = [(m.sender, m.frame) for m in net.network.queue]
        net.network.queue.clear()
        sender, frame = frames[-1]
        garbled = with_acks(frame, [(1, False, 0)])
        assert garbled is not None
        garbled = garbled[:-3] + b"\xd3"  # the ack's seq becomes a negative int64 (truncated)
        a.deliver_batch([*frames[:-1], (sender, garbled)])
        assert a.frame_stats.malformed == 1
        for _ in range(8):
            net.clock.advance(timedelta(seconds=5))
            net.run_network()
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        assert _outbox(a) == [] and _outbox(b) == []


# ----- the step record's encoder builds what the wire codec would --------------------------------

_plain = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                   st.text(max_size=8), st.binary(max_size=8), st.floats(allow_nan=False))
_entry = st.tuples(st.text(min_size=1, max_size=6), _plain, _plain) | st.tuples(
    st.text(min_size=1, max_size=6), st.tuples(_plain, _plain), st.lists(_plain, max_size=2))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(start=st.integers(min_value=0, max_value=2**32 - 1),
       journal=st.lists(_entry, max_size=4),
       snapshot=st.none() | st.builds(
           Snapshot, st.lists(st.text(max_size=10), max_size=3).map(tuple),
           st.lists(st.integers(min_value=0, max_value=10**6), max_size=3).map(tuple),
           st.text(max_size=10), st.binary(max_size=10)))
def test_encode_step_writes_exactly_what_the_wire_codec_writes(
        start: int, journal: list[JournalEntry], snapshot: Snapshot | None) -> None:
    """The step record is built without the codec's recursion; its bytes must not change
    (tests/fibers/golden pins them), whatever the entries hold: nested tuples, lists and ints
    beyond 64 bits take the codec's own path."""
    expected = _wire.encode((start, tuple(journal), None if snapshot is None else (
        snapshot.call_chain, snapshot.lines, snapshot.waiting, snapshot.frames)))
    assert encode_step(start, journal, snapshot) == expected
    assert decode_step(expected)[0] == start
