"""Attacks on the durable step path: a failed commit that both received and consumed a message,
acknowledgements owed to a peer that is sent nothing, acknowledgements riding on frames that are
themselves dropped, floods of acknowledgements, and the step record's hand-built encoding."""

from __future__ import annotations

import pytest

from fibers import FlowLogic, Party, _wire, initiated_by, initiating_flow, suspendable
from fibers._checkpoint_store import message_key
from fibers._inbound import REORDER_WINDOW
from fibers._journal import JournalEntry, Snapshot
from fibers._messages import (
    SEQ_LIMIT,
    Ack,
    AckedSessionMessage,
    Data,
    ExistingSessionMessage,
    decode_message,
    encode_message,
    with_acks,
)
from fibers._node import Node
from fibers._step_record import encode_step
from fibers.testing import MockNetwork, explore
from tests.fibers.explore_flows import Transfer, install_books
from tests.fibers.test_commit_faults import _acks, _faults, _records, _settle
from tests.fibers.test_durability import Answer, Collect
from tests.fibers.test_step_path import _still_exactly_once


def _outbox(node: Node) -> list[bytes]:
    return _records(node, "outbox")


# ----- a failed commit that received and consumed a message -------------------------------------


def test_a_failed_commit_that_received_and_consumed_a_message_acks_nothing_and_runs_once(
) -> None:
    """Alice receives Bob's confirm and "apple" and consumes "apple" in the same commit (no
    inbox record: only the step record keeps it). That commit fails: nothing of it may be
    acknowledged, on an Ack or riding on a frame, and Bob's re-sent copy is processed once."""
    Answer.calls = 0
    with MockNetwork() as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Collect(bob.party))
        net.deliver_next()  # Bob stores the init, answers: confirm (0), "apple" (1)
        assert len(net.pending_messages()) == 2
        _faults(alice).fail_writes_to("steps", 1)
        net.deliver_all()  # one round at Alice: receive both, consume "apple", commit fails
        assert _acks(net, "Alice") == []
        assert not any(m.sender == alice.party for m in net.pending_messages())
        assert len(_outbox(bob)) == 2  # Bob keeps both for re-sending
        assert _records(alice, "inbox") == []
        _settle(net)
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        assert Answer.calls == 2
        # (deliver_all records no transcript: what it shows reached Alice is Bob's re-sent
        # copies.) "apple" was acknowledged only after its re-sent copy arrived and was stored.
        [(sid, _)] = {(e.message.session_id, 0) for e in net.transcript
                      if isinstance(e.message, ExistingSessionMessage)}
        resent = next(i for i, e in enumerate(net.transcript) if e.recipient == "Alice"
                      and isinstance(e.message, ExistingSessionMessage) and e.message.seq == 1)
        acked_at = [i for i, entry in _acks(net, "Alice") if entry == (sid, True, 1)]
        assert acked_at and min(acked_at) > resent
        for node in (alice, bob):
            assert _outbox(node) == [] and _records(node, "inbox") == []


# ----- acks owed to a peer that is sent nothing ------------------------------------------------


@initiating_flow
class TellTwice(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.send(self.other, "one")
        self.send(self.other, "two")
        self.receive(self.other, str)


@initiated_by(TellTwice)
class ListensSlowly(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable
    def call(self) -> None:
        self.receive(self.other, str)
        self.sleep(3600)  # sends nothing to its peer for an hour
        self.receive(self.other, str)
        self.send(self.other, "done")


def test_acks_owed_to_a_peer_sent_nothing_leave_as_an_ack_right_after_their_commit() -> None:
    with MockNetwork() as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(TellTwice(bob.party))
        net.deliver_next()  # the init with "one": Bob confirms; the ack rides on the confirm
        net.run_network()  # "two" reaches Bob while his flow sleeps: kept in the inbox
        standalone = [e.message for e in net.transcript
                      if e.sender == "Bob" and isinstance(e.message, Ack)]
        assert len(standalone) == 1 and standalone[0].entries[0][2] == 1
        assert _outbox(alice) == []  # Alice forgot both without the clock moving
        assert len(_records(bob, "inbox")) >= 1
        net.advance_time(3600)
        net.run_network()
        assert handle.result.done()
        for node in (alice, bob):
            assert _outbox(node) == []


# ----- acks riding on frames that are themselves dropped ------------------------------------


def _alice_waits_for_ack_of_second(net: MockNetwork) -> tuple[Node, int, bytes]:
    """Alice has sent "second?" (seq 1) and it was lost; returns Alice, the session and
    Bob's confirm frame (already processed by Alice)."""
    alice, bob = net.create_node("Alice"), net.create_node("Bob")
    alice.start_flow(Collect(bob.party))
    [init] = net.pending_messages()
    sid = decode_message(init.frame).initiator_session_id  # type: ignore[union-attr]
    net.deliver_next()
    confirm = net.pending_messages()[0].frame
    net.deliver_all()  # Alice gets confirm and "apple", sends "second?"
    net.network.queue.clear()  # ... which is lost
    assert message_key("Bob", sid, False, 1) in _outbox(alice)
    return alice, sid, confirm


def test_an_ack_riding_on_a_duplicate_is_honoured() -> None:
    with MockNetwork() as net:
        alice, sid, confirm = _alice_waits_for_ack_of_second(net)
        bob = net.node("Bob")
        plain = decode_message(confirm)
        assert isinstance(plain, ExistingSessionMessage)  # (its own acks ride on it already)
        carrier = encode_message(AckedSessionMessage(
            plain.session_id, plain.to_initiator, plain.seq, plain.body, [(sid, False, 1)]))
        alice.deliver_batch([(bob.party, carrier)])  # the confirm again: a duplicate
        assert alice.frame_stats.stale_acks == 0
        net.run_network()
        assert message_key("Bob", sid, False, 1) not in _outbox(alice)


def test_an_ack_riding_on_a_frame_too_far_ahead_is_honoured() -> None:
    with MockNetwork() as net:
        alice, sid, _ = _alice_waits_for_ack_of_second(net)
        bob = net.node("Bob")
        ahead = encode_message(AckedSessionMessage(
            sid, True, 2 + REORDER_WINDOW, Data(_wire.encode("x")), [(sid, False, 1)]))
        alice.deliver_batch([(bob.party, ahead)])
        assert alice.frame_stats.too_far_ahead == 1 and alice.frame_stats.stale_acks == 0
        net.run_network()
        assert message_key("Bob", sid, False, 1) not in _outbox(alice)


def test_acks_riding_on_a_frame_from_another_peer_forget_nothing_of_ours_to_bob() -> None:
    """Carol acknowledges Alice's message to Bob on a frame of a session that is Bob's: an
    acknowledgement names messages sent to its own sender only."""
    with MockNetwork() as net:
        alice, sid, confirm = _alice_waits_for_ack_of_second(net)
        carol = net.create_node("Carol")
        plain = decode_message(confirm)
        assert isinstance(plain, ExistingSessionMessage)
        forged = encode_message(AckedSessionMessage(
            plain.session_id, plain.to_initiator, 5, plain.body, [(sid, False, 1)]))
        alice.deliver_batch([(carol.party, forged)])
        assert alice.frame_stats.stale_acks == 1 and alice.frame_stats.wrong_sender == 1
        net.run_network()
        assert message_key("Bob", sid, False, 1) in _outbox(alice)


# ----- floods of acknowledgements ------------------------------------------------------------


def test_thousands_of_acks_with_huge_seqs_are_ignored_counted_and_the_frame_still_used() -> None:
    Answer.calls = 0
    with MockNetwork() as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Collect(bob.party))
        [init] = net.pending_messages()
        sid = decode_message(init.frame).initiator_session_id  # type: ignore[union-attr]
        net.deliver_next()
        frames = [(m.sender, m.frame) for m in net.pending_messages()]
        net.network.queue.clear()
        flood = [(sid, False, SEQ_LIMIT - 1 - i) for i in range(5000)]
        flooded = with_acks(frames[-1][1], flood)
        assert flooded is not None
        alice.deliver_batch([*frames[:-1], (frames[-1][0], flooded)])
        assert alice.frame_stats.stale_acks == 5000 and alice.frame_stats.total == 0
        _settle(net)
        assert handle.result.result(timeout=0) == ["apple", "banana"]
        assert _outbox(alice) == [] and _outbox(bob) == []


def test_an_ack_with_a_seq_out_of_range_drops_its_frame_which_is_re_sent() -> None:
    with MockNetwork() as net:
        alice, bob = net.create_node("Alice"), net.create_node("Bob")
        handle = alice.start_flow(Collect(bob.party))
        net.deliver_next()
        frames = [(m.sender, m.frame) for m in net.pending_messages()]
        net.network.queue.clear()
        message = decode_message(frames[-1][1])
        assert type(message) is ExistingSessionMessage
        bad = encode_message(AckedSessionMessage(
            message.session_id, message.to_initiator, message.seq, message.body, []))
        # The same frame with one ack whose seq is SEQ_LIMIT (a uint64 in MessagePack).
        bad = bad[:-1] + b"\x91\x93\x01\xc2\xcf" + SEQ_LIMIT.to_bytes(8, "big")
        alice.deliver_batch([*frames[:-1], (frames[-1][0], bad)])
        assert alice.frame_stats.malformed == 1 and alice.frame_stats.stale_acks == 0
        _settle(net)
        assert handle.result.result(timeout=0) == ["apple", "banana"]


# ----- the step record's hand-built encoding ----------------------------------------------


@pytest.mark.parametrize("journal, snapshot, start", [
    ([("s", 2**64, -(2**63) - 1)], None, 0),
    ([("s", 1, 2)], Snapshot(("f",), (2**70,), "w", b""), 0),
    ([("s", 1, 2)], None, 2**65),
    ([("s", 1, 2)], Snapshot(("f",), (1,), "w", b""), 2**65),
    ([("s", bytearray(b"ab"), memoryview(b"cd"))], None, 3),
    ([("s", True, 1.5)], Snapshot(("f", "g"), (1, 2), "w", b"\x00" * 1000), 7),
])
def test_encode_step_matches_the_codec_on_edge_values(
        journal: list[JournalEntry], snapshot: Snapshot | None, start: int) -> None:
    expected = _wire.encode((start, tuple(journal), None if snapshot is None else (
        snapshot.call_chain, snapshot.lines, snapshot.waiting, snapshot.frames)))
    assert encode_step(start, journal, snapshot) == expected


@pytest.mark.parametrize("journal, snapshot", [
    ([("s", "\ud800", 1)], None),
    ([("s", 1, 2)], Snapshot(("\udcff",), (1,), "w", b"")),
    ([("s", 1, 2)], Snapshot(("f",), (1,), "\ud800", b"")),
    ([("s", b"x" * _wire.MAX_MESSAGE_SIZE, 1)], None),
    ([("s", 1, 2)], Snapshot(("f",), (1,), "w", b"x" * _wire.MAX_MESSAGE_SIZE)),
])
def test_encode_step_refuses_what_the_codec_refuses(
        journal: list[JournalEntry], snapshot: Snapshot | None) -> None:
    value = (0, tuple(journal), None if snapshot is None else (
        snapshot.call_chain, snapshot.lines, snapshot.waiting, snapshot.frames))
    with pytest.raises(_wire.SerializationError) as codec:
        _wire.encode(value)
    with pytest.raises(_wire.SerializationError) as built:
        encode_step(0, journal, snapshot)
    assert str(built.value) == str(codec.value)


# ----- acks riding on duplicated, reordered frames; failed writes -----------------------------


def _transfer(net: MockNetwork) -> None:
    install_books(net)
    a, b = net.create_node("A"), net.create_node("B")
    a.start_flow(Transfer(b.party, "t1", 5))


def test_piggybacked_acks_are_exactly_once_with_duplicated_and_reordered_frames() -> None:
    """Exhaustive over reorderings, a duplicated frame (its acks honoured twice: the second
    ignored) and a crash anywhere: each side posts once, no inbox or outbox record is left."""
    report = explore(_transfer, _still_exactly_once, reorder=True, duplicates=True)
    report.raise_first()
    assert report.exhaustive and report.failures == []


def test_piggybacked_acks_are_exactly_once_when_any_write_fails() -> None:
    """Exhaustive over one failed write anywhere (the commit receiving and consuming a
    message among them): nothing is acknowledged before it is stored (else the sender would
    forget what the retry needs), and everything is processed once."""
    report = explore(_transfer, _still_exactly_once, reorder=False, duplicates=False,
                     crashes=False, storage_faults=True)
    report.raise_first()
    assert report.exhaustive and report.failures == []
