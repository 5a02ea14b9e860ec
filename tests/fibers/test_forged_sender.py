"""A frame is from the party its transport authenticated, whatever it says: a session message
that names another party's session id, sent by a third party, never reaches that session."""

from __future__ import annotations

import msgspec

from fibers._messages import Data, ExistingSessionMessage, decode_message, encode_message
from fibers._wire import encode
from fibers.testing import MockNetwork
from fibers.transport import InFlightMessage
from tests.fibers.test_sessions import Ping


def _is_data(frame: bytes) -> bool:
    message = decode_message(frame)
    return isinstance(message, ExistingSessionMessage) and isinstance(message.body, Data)


def test_a_third_party_cannot_speak_in_anothers_session(mock_network: MockNetwork) -> None:
    alice, bob = mock_network.create_node("Alice"), mock_network.create_node("Bob")
    mallory = mock_network.create_node("Mallory")
    handle = alice.start_flow(Ping(bob.party))
    # Deliver until Bob's answer to Alice is on the wire, and hold it there.
    def bobs_answer() -> list[InFlightMessage]:
        return [m for m in mock_network.pending_messages()
                if m.recipient == alice.party and _is_data(m.frame)]

    while not bobs_answer():
        assert mock_network.deliver_next() is not None, "Bob never answered"
    [reply] = bobs_answer()
    assert reply.sender == bob.party
    real = decode_message(reply.frame)
    assert isinstance(real, ExistingSessionMessage)
    forged = encode_message(msgspec.structs.replace(real, body=Data(encode("forged"))))
    before = alice.frame_stats.total
    # Mallory replays Bob's reply and sends a forged one with Bob's session id: both are
    # Mallory's, in no session Mallory has with Alice.
    alice.deliver_batch([(mallory.party, reply.frame), (mallory.party, forged)])
    assert not handle.result.done()
    assert alice.frame_stats.total == before + 2
    mock_network.run_network()
    assert handle.result.result(timeout=0) == "pong"
