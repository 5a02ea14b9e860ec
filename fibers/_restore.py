"""Restore: a node with storage coming back (docs/architecture.md, "Restart").

Restore is lazy: ``restore_all`` reads only the keys of the stored flows and the wake index's
deadlines and events (docs/checkpoint-format.md, "The wake index"). Every flow that is not
parked starts hibernated (``fibers._hibernation``) and is replayed when something wakes it: a
message for one of its sessions, its timer, a kill, an inspection; flows waiting for an event
are woken at once (it may have happened while the node was down). Parked flows (or unreadable
ones) are parked again with their routes. Storage written before the wake index existed is
restored eagerly, once, indexing every flow. Then the outbox (messages never acknowledged) is
re-sent from its own records, without reading any step record. ``refeed`` gives a replayed
flow the messages that had arrived and were not consumed. Restore owns only the frames waiting
for a peer the network map does not know yet; each is sent once that party is added.

Contract: scheduler thread only; an unusable record (inbox or outbox, a step record, the wake
index) parks the one flow it belongs to, naming the record, and never stops the node from
starting (a flow's own records are read when it is woken, and diagnosed then).
"""

from __future__ import annotations

import gc
import logging
import struct

from fibers._checkpoint_store import CheckpointStore, StoredFlow, session_prefix, split_message_key
from fibers._commit import CommitStage
from fibers._errors import SerializationError
from fibers._hibernation import Hibernation
from fibers._hospital import Hospital
from fibers._identity import Party
from fibers._messages import Data, ExistingSessionMessage, decode_message
from fibers._node_types import NetworkMap
from fibers._router import Router
from fibers._scheduler import Scheduler
from fibers._state_machine import FlowStateMachine
from fibers._storage import CorruptRecordError
from fibers.transport import Transport

__all__ = ["Restore"]

log = logging.getLogger("fibers.node")


class Restore:
    """Restoring the flows of one node with storage, and re-sending what it had sent."""

    def __init__(
        self,
        party: Party,
        checkpoints: CheckpointStore,
        scheduler: Scheduler,
        router: Router,
        commit: CommitStage,
        *,
        transport: Transport,
        network_map: NetworkMap,
    ) -> None:
        self._party = party
        self._checkpoints = checkpoints
        self._scheduler = scheduler
        self._router = router
        self._commit = commit
        self._transport = transport
        self._network_map = network_map
        self._hospital: Hospital | None = None
        self._hibernation: Hibernation | None = None
        # Stored frames to re-send to parties the network map does not know yet, by name.
        self._awaiting_peer: dict[str, list[bytes]] = {}

    def attach(self, hospital: Hospital, hibernation: Hibernation) -> None:
        """Wire the hospital and hibernation (built after this part, which refeeds their
        flows)."""
        self._hospital = hospital
        self._hibernation = hibernation

    def _waking(self) -> Hibernation:
        assert self._hibernation is not None, "Restore.attach(hospital, hibernation) first"
        return self._hibernation

    def _parking(self) -> Hospital:
        assert self._hospital is not None, "Restore.attach(hospital) first"
        return self._hospital

    def restore_all(self) -> None:
        """Restore every stored flow (restart), lazily, then re-send unacknowledged
        messages."""
        # Restoring builds many long-lived objects and little garbage; the cyclic collector
        # would rescan them again and again (a third of the time at 10,000 flows).
        collecting = gc.isenabled()
        gc.disable()
        try:
            if self._checkpoints.wake_index.indexed():
                self._restore_lazily()
            else:
                self._restore_eagerly()
            self.resend_outbox()
            self._scheduler.run_until_idle()  # a corrupt outbox record may park a flow
        finally:
            if collecting:
                gc.enable()

    def _restore_lazily(self) -> None:
        """Every flow that is not parked starts hibernated; see the module docstring."""
        hibernation = self._waking()
        every, parked = self._checkpoints.run_ids()
        for run_id in parked:
            self.restore(self._checkpoints.load_flow(run_id))
        skip = set(parked)
        for run_id in every:
            if run_id not in skip:
                hibernation.adopt(run_id)
        for run_id, wait in self._checkpoints.wake_index.waits():
            if run_id not in hibernation:
                continue
            if isinstance(wait, CorruptRecordError) or wait[1] is not None or wait[2]:
                # An event may have happened meanwhile; or it asked (wake_on_restart).
                hibernation.wake_later(run_id)
            elif wait[0] is not None:
                self._scheduler.wake_at(run_id, wait[0])
        self._scheduler.run_until_idle()

    def _restore_eagerly(self) -> None:
        """Storage older than the wake index: replay every flow now (as before lazy restore)
        and let each one's next step index it; then mark the storage indexed."""
        for stored in self._checkpoints.load_flows():
            self.restore(stored)
        store = self._checkpoints
        self._commit.loose().writes.append(store.wake_index.mark_indexed)
        self._scheduler.run_until_idle()

    def resend_outbox(self, peer: str | None = None) -> int:
        """Send every unacknowledged stored frame (to ``peer`` only, when given) again, and
        again until acknowledged; returns how many. A record that fails its check parks the
        flow that sent it."""
        sent: list[bytes] = []
        for key, frame in self._checkpoints.outbox(peer):
            if isinstance(frame, CorruptRecordError):
                self._outbox_record_corrupt(key, frame)
            else:
                self.resend(key.partition(b"\0")[0].decode(), frame)
                sent.append(key)
        self._commit.resent(sent)
        return len(sent)

    def restore(self, stored: StoredFlow) -> None:
        """Re-run a stored flow against its journal (scheduled, indexing it again), or park
        it when it was parked or is unreadable (``Hibernation.revive``)."""
        self._waking().revive(stored, reindex=True)

    def refeed(self, machine: FlowStateMachine) -> None:
        """Give a restored flow the messages that had arrived but were not consumed. A stored
        message that fails its check (or does not decode) parks the flow, naming the record;
        other flows are not affected."""
        for session in list(machine.sessions.values()):
            prefix = session_prefix(session.peer.name, session.session_id, session.we_initiated)
            expected = session.next_recv_seq
            # Invariant: the inbox holds exactly the messages of this session that were
            # received and not consumed (data), plus its control messages (confirm, end,
            # error).
            applied = False
            try:
                messages = [(k, decode_message(f)) for k, f in self._checkpoints.inbox(prefix)]
            except (CorruptRecordError, SerializationError) as exc:
                self._parking().admit_restored(machine, f"inbox record unreadable: {exc}")
                return
            for _, message in messages:
                if not isinstance(message, ExistingSessionMessage):
                    continue
                if (isinstance(message.body, Data) and message.seq < session.next_recv_seq
                        and (session.we_initiated or message.seq > 0)):
                    # Consumed before the restart, its replay already delivered it. (A
                    # responder's first payload is number 0 although its session starts
                    # expecting 1.)
                    continue
                if message.seq > expected:
                    # After a gap: the message before it was never stored (a step that
                    # failed), so never acknowledged; its sender re-sends it, and this one
                    # follows it.
                    if session.out_of_order is None:
                        session.out_of_order = {}
                    session.out_of_order[message.seq] = message.body
                    continue
                session.apply(message.seq, message.body)
                applied = True
                if message.seq == expected:
                    expected += 1
            session.next_recv_seq = expected
            if applied and machine.waiting is session:
                self._scheduler.schedule(machine)

    def _outbox_record_corrupt(self, key: bytes, error: CorruptRecordError) -> None:
        """An unacknowledged message can no longer be re-sent: the flow that sent it (when it
        is running) is parked naming the record, since its peer may wait for it forever; the
        record stays for the operator to inspect."""
        log.error("%s cannot re-send an outbox record: %s", self._party, error)
        try:
            peer, session_id, to_initiator, _ = split_message_key(key)
        except (ValueError, struct.error):
            return
        # We sent it to the initiator: we are the responder, routed under the peer's name.
        initiator = peer if to_initiator else self._party.name
        owner = self._router.owner_waking((initiator, session_id, not to_initiator))
        if owner is not None:
            self._parking().admit_restored(owner, f"outbox record unreadable: {error}")

    # ----- re-sending -----------------------------------------------------------------------------

    def resend(self, recipient: str, frame: bytes) -> None:
        """Send a stored, unacknowledged frame again to the party called ``recipient``. When
        the network map does not know that party yet, the frame waits until it is added."""
        try:
            party = self._network_map.party(recipient)
        except KeyError:
            waiting = self._awaiting_peer.setdefault(recipient, [])
            if not waiting:
                log.warning("%s will re-send to %s once the network map knows it", self._party,
                            recipient)
            waiting.append(frame)
            return
        self._transport.send(party, frame)

    def awaited_peers(self) -> list[str]:
        """The names of the parties frames wait for (unknown to the network map when sent)."""
        return list(self._awaiting_peer)

    def party_added(self, party: Party) -> None:
        """The network map learnt ``party``: send what waited for it."""
        for frame in self._awaiting_peer.pop(party.name, None) or ():
            self._transport.send(party, frame)

    def clear(self) -> None:
        """Forget the frames waiting for a peer (node stop)."""
        self._awaiting_peer.clear()
