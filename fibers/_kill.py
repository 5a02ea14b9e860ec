"""Killing a flow that is parked in the hospital: its counterparties are told from its records.

A parked flow's code is not run again to end it (it is parked because running it failed, often
because it no longer replays). Instead the end of each of its open sessions is derived from
what the flow durably did, and sent as an ``ErrorEnd`` with the sequence number the
counterparty expects next, so it raises ``UnexpectedFlowEndException`` at its next receive:

* on a node with storage, from the journal and start record (what the counterparty saw);
* on a node without storage, from the parked flow's sessions, minus the messages of the step
  that parked it (they never left the node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fibers._checkpoint_store import StoredFlow
from fibers._messages import ErrorEnd, ExistingSessionMessage, InitialSessionMessage

if TYPE_CHECKING:
    from fibers._state_machine import FlowStateMachine


@dataclass(slots=True)
class OpenSession:
    """A session the parked flow had open, and the number of its next message."""

    peer: str
    session_id: int
    we_initiated: bool
    next_seq: int

    def end(self) -> ExistingSessionMessage:
        """The message that tells the counterparty the flow ended."""
        return ExistingSessionMessage(self.session_id, not self.we_initiated, self.next_seq,
                                      ErrorEnd(None))


def sessions_from_records(stored: StoredFlow) -> list[OpenSession]:
    """The sessions a stored flow had open and the counterparty had heard of, from its start
    record and journal (see fibers._journal for the records)."""
    open_: dict[tuple[int, str], OpenSession] = {}
    start = stored.start
    responder: tuple[int, str] | None = None
    if start is not None and start.peer is not None:  # a responder: its confirm was number 0
        responder = (0, start.peer.name)
        open_[responder] = OpenSession(start.peer.name, start.session_id, False, 1)
    previous: tuple[object, ...] = ()
    for entry in stored.journal:
        kind, key = entry[0], (entry[1:3] if len(entry) >= 3 else None)
        if kind == "open" and len(entry) > 3 and isinstance(entry[3], int):
            owner, peer = entry[1], entry[2]
            if isinstance(owner, int) and isinstance(peer, str):
                # The init is number 0; a send that opened the session travelled inside it.
                open_[(owner, peer)] = OpenSession(peer, entry[3], True, 1)
        elif kind == "send" and key in open_:
            opened_by_this_send = previous[:3] == ("open", *entry[1:3])
            if not opened_by_this_send:
                open_[key].next_seq += 1
        elif kind == "recv_end" and key in open_ and key != responder:
            # The counterparty had ended. (A responder always ends its own session with a
            # message, the final one its dedup record waits for: see fibers._dedup, rule 3.)
            del open_[key]
        previous = entry
    return list(open_.values())


def sessions_in_memory(machine: FlowStateMachine) -> list[OpenSession]:
    """The sessions of a parked flow on a node without storage: the messages of the step that
    parked it are still in its outbox, never sent, so each session's next number is the
    first of them; a session whose init is among them was never heard of."""
    unsent_inits: set[int] = set()
    first_unsent: dict[tuple[int, bool], int] = {}
    for _, message in machine.outbox:
        if isinstance(message, InitialSessionMessage):
            unsent_inits.add(message.initiator_session_id)
        else:
            key = (message.session_id, not message.to_initiator)
            first_unsent[key] = min(first_unsent.get(key, message.seq), message.seq)
    sessions = []
    for s in machine.sessions.values():
        if s.peer_ended or s.rejected is not None or s.closed:
            continue
        if s.we_initiated and s.session_id in unsent_inits:
            continue
        seq = first_unsent.get((s.session_id, s.we_initiated), s.next_send_seq)
        sessions.append(OpenSession(s.peer.name, s.session_id, s.we_initiated, seq))
    return sessions
