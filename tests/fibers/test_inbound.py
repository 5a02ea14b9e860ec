"""Inbound frames a node cannot use: counted, logged with sender and reason, dropped, and the
rest of their batch handled; the reorder window; duplicates for parked flows."""

from __future__ import annotations

import contextlib
import logging
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fibers import SerializationError
from fibers._identity import NodeIdentity, Party
from fibers._inbound import REORDER_WINDOW
from fibers._messages import (
    Ack,
    Data,
    End,
    ExistingSessionMessage,
    InitialSessionMessage,
    decode_message,
    encode_message,
    with_acks,
)
from fibers._router import Router
from fibers._sessions import class_name
from fibers._wire import encode
from fibers.testing import MockNetwork
from tests.fibers.test_sessions import Ping

_raw = msgspec.msgpack.Encoder()
MALLORY = NodeIdentity("Mallory").party


# Each is a frame a peer could put on the wire; none is a usable session message.
MALFORMED: dict[str, bytes] = {
    # [tag 0, session id, class name with invalid UTF-8, version, app, payload]
    "invalid UTF-8 in a class name": b"\x96\x00\x01\xa3\xff\xfe\xfd\x01\xa0\xc0",
    "negative session id": _raw.encode([6, -1, True, 0, [5]]),
    "negative init session id": _raw.encode([0, -5, "a:B", 1, "", None]),
    "session id of 2**63": _raw.encode([6, 2**63, True, 0, [5]]),
    "sequence number 2**32": _raw.encode([6, 7, True, 2**32, [5]]),
    "negative sequence number": _raw.encode([6, 7, True, -1, [5]]),
    "ack entry out of range": _raw.encode([7, [[-1, True, 2**40]]]),
    # [tag 8, session id, to initiator, seq, body, acks]: a session message carrying acks
    "piggybacked ack with a negative session id": _raw.encode([8, 7, True, 0, [5],
                                                               [[-1, True, 0]]]),
    "piggybacked ack with seq 2**32": _raw.encode([8, 7, True, 0, [5], [[7, True, 2**32]]]),
    "piggybacked ack of the wrong shape": _raw.encode([8, 7, True, 0, [5], [[7, True]]]),
    "piggybacked acks that are not a list": _raw.encode([8, 7, True, 0, [5], 5]),
    "piggybacked acks missing": _raw.encode([8, 7, True, 0, [5]]),
    "wrong types": _raw.encode([6, "seven", 1, 0, [5]]),
    "unknown tag": _raw.encode([9, 1, 2]),
    "empty": b"",
    "random bytes": bytes(random.Random(12).randbytes(64)),
    "truncated": encode_message(ExistingSessionMessage(7, True, 0, Data(b"x" * 40)))[:-5],
    "class name of 2000 characters": _raw.encode([0, 5, "a" * 2000, 1, "", None]),
    "empty class name": _raw.encode([0, 5, "", 1, "", None]),
    "not an array": _raw.encode({"tag": 6}),
}


@pytest.mark.parametrize("frame", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_frame_is_a_serialization_error_at_decode(frame: bytes) -> None:
    with pytest.raises(SerializationError, match="malformed frame"):
        decode_message(frame)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_frame_is_counted_logged_dropped_and_its_batch_handled(
    mock_network: MockNetwork, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Ping(bob.party))
    [init] = mock_network.network.queue
    mock_network.network.queue.clear()
    with caplog.at_level(logging.WARNING, logger="fibers.node"):
        # The bad frame comes first, from the same peer: the init after it still runs.
        bob.deliver_batch([(alice.party, MALFORMED[name]), (init.sender, init.frame)])
    assert bob.frame_stats.malformed == 1 and bob.frame_stats.total == 1
    [record] = [r for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert "from Alice" in record.getMessage() and "malformed frame" in record.getMessage()
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"


def test_a_payload_that_does_not_decode_fails_only_its_flow(mock_network: MockNetwork) -> None:
    """A well-formed envelope whose payload is not a wire value: the responder's receive
    fails, the node and the other flows of the batch carry on."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    good = alice.start_flow(Ping(bob.party))
    [init] = mock_network.network.queue
    mock_network.network.queue.clear()
    bad_init = InitialSessionMessage(99, class_name(Ping), 1, "", b"\xc1garbage")
    bob.deliver_batch([(MALLORY, encode_message(bad_init)), (init.sender, init.frame)])
    mock_network.run_network()
    assert good.result.result(timeout=0) == "pong"
    assert bob.flows() == [] and bob.hospital() == []
    assert bob.frame_stats.total == 0  # the envelope was fine: the flow failed, not the node


def test_a_message_from_a_party_outside_the_session_is_counted(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Ping(bob.party))
    [init] = mock_network.network.queue
    session_id = decode_message(init.frame).initiator_session_id  # type: ignore[union-attr]
    forged = ExistingSessionMessage(session_id, True, 0, End())  # "Bob ended", from Mallory
    alice.deliver_batch([(MALLORY, encode_message(forged))])
    assert alice.frame_stats.wrong_sender == 1
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"


def test_handling_that_raises_drops_only_that_frame(
    mock_network: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even a bug in routing one frame loses no other frame of the batch."""
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Ping(bob.party))
    [init] = mock_network.network.queue
    mock_network.network.queue.clear()
    original = Router.deliver

    def flaky(router: Router, sender: Party, frame: bytes) -> None:
        if frame == b"boom":
            raise RuntimeError("a routing bug")
        original(router, sender, frame)

    monkeypatch.setattr(Router, "deliver", flaky)
    bob.deliver_batch([(alice.party, b"boom"), (init.sender, init.frame)])
    assert bob.frame_stats.failed == 1
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"


# ----- fuzzing whole frames -----------------------------------------------------------------------


def _valid_frames() -> list[bytes]:
    """Frames of every kind, as a reference run put them on the wire."""
    with MockNetwork(durable=False) as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        alice.start_flow(Ping(bob.party))
        frames = [m.frame for m in list(network.network.queue)]
        while network.network.queue:
            message = network.network.queue[0]
            network.deliver_next()
            frames.append(message.frame)
    frames.append(encode_message(Ack([(5, True, 1), (5, False, 0)])))
    acked = with_acks(encode_message(ExistingSessionMessage(5, True, 1, Data(encode(1)))),
                      [(5, False, 0), (6, True, 2)])
    assert acked is not None
    frames.append(acked)
    return frames


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    kind = rng.randrange(6)
    if kind == 0 and data:  # flip bits
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data) + 1):]
    elif kind == 2:  # insert random bytes
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif kind == 3 and data:  # overwrite a byte with an interesting value
        data[rng.randrange(len(data))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCF, 0xD3,
                                                     0xFF, 0xA0, 0xDC, 0x90])
    elif kind == 4:  # re-encode the envelope with a field replaced
        try:
            fields = msgspec.msgpack.decode(bytes(data))
        except msgspec.DecodeError:
            return bytes(data)
        if isinstance(fields, list) and fields:
            fields[rng.randrange(len(fields))] = rng.choice(
                [-1, 2**32, 2**63, 2**64 - 1, "\u00e9", None, [], {}, 1.5, b"\xff", True])
            try:
                return _raw.encode(fields)
            except (TypeError, OverflowError):
                return bytes(data)
    else:  # pure noise
        return rng.randbytes(rng.randint(0, 80))
    return bytes(data)


def test_fuzzed_frames_interleaved_with_valid_traffic_leave_flows_and_node_working(
    mock_network: MockNetwork,
) -> None:
    """Thousands of mutated frames (from a third party, so they cannot legitimately touch the
    honest sessions) in the same batches as a run of pings: every ping completes, every bad
    frame is dropped or handled, and the node serves new flows afterwards."""
    rng = random.Random(20261201)
    corpus = _valid_frames()
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handles = [alice.start_flow(Ping(bob.party)) for _ in range(10)]
    mutated = 0
    while mock_network.network.pending():
        batch: list[tuple[Party, bytes]] = []
        recipient = mock_network.network.pending()[0].recipient
        for message in list(mock_network.network.queue):
            if message.recipient == recipient:
                mock_network.network.queue.remove(message)
                batch.append((message.sender, message.frame))
        noisy: list[tuple[Party, bytes]] = []
        for item in batch:
            for _ in range(rng.randint(20, 60)):
                noisy.append((MALLORY, _mutate(rng, rng.choice(corpus))))
                mutated += 1
            noisy.append(item)
        rng.shuffle(noisy)  # Mallory's frames anywhere; the honest ones keep their order
        honest = iter(batch)
        ordered = [next(honest) if sender is not MALLORY else (sender, frame)
                   for sender, frame in noisy]
        node = alice if recipient == alice.party else bob
        node.deliver_batch(ordered)
    assert mutated > 1000
    assert [h.result.result(timeout=0) for h in handles] == ["pong"] * 10
    assert alice.frame_stats.malformed + bob.frame_stats.malformed > mutated // 2
    assert alice.hospital() == [] and bob.hospital() == []
    late = alice.start_flow(Ping(bob.party))
    mock_network.run_network()
    assert late.result.result(timeout=0) == "pong"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_decode_raises_only_serialization_error(frame: bytes) -> None:
    with contextlib.suppress(SerializationError):
        decode_message(frame)


# ----- the reorder window -------------------------------------------------------------------------


def test_messages_too_far_ahead_are_dropped_unacknowledged_and_counted(
    mock_network: MockNetwork,
) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    handle = alice.start_flow(Ping(bob.party))
    [init] = mock_network.network.queue
    session_id = decode_message(init.frame).initiator_session_id  # type: ignore[union-attr]
    mock_network.deliver_next()  # Bob answers: confirm (0), "pong" (1), end (2) queued
    assert handle.result.done() is False
    # Bob floods the session ahead of its turn; Alice still expects number 0.
    flood = [
        (bob.party, encode_message(ExistingSessionMessage(session_id, True, seq, Data(encode(1)))))
        for seq in range(3, 3 + 2 * REORDER_WINDOW)
    ]
    acks_before = len([m for m in mock_network.network.queue if m.recipient == bob.party])
    alice.deliver_batch(flood)
    [(_, session)] = list(alice._router.sessions())
    assert session.out_of_order is not None
    assert len(session.out_of_order) == REORDER_WINDOW - 3  # numbers 3 .. WINDOW-1 buffered
    assert max(session.out_of_order) == REORDER_WINDOW - 1
    assert alice.frame_stats.too_far_ahead == REORDER_WINDOW + 3
    # Nothing was acknowledged: the buffered ones are not stored yet, the others dropped.
    assert len([m for m in mock_network.network.queue if m.recipient == bob.party]) == acks_before
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"
