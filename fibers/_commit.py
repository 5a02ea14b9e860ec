"""The commit stage of the step pipeline: what a scheduler round wrote, committed as one group,
and what may only happen once it is durable (sending messages, settling results,
acknowledging what was received). See docs/architecture.md, "The step pipeline".

``CommitStage`` owns the round's units, the outbox keys peers acknowledged (deleted with the
next commit), and the redelivery of sent messages not yet acknowledged. The other parts hand
it writes through named methods (``record_step``, ``store_received``, ``store_init``, ...);
none of them touches storage for a flow step directly.

The units, their queue and the building of a step's writes are in ``fibers._commit_units``
(which states the invariant that a unit's after-work waits for its writes); the deletion of
acknowledged outbox records and the re-sending of unacknowledged ones in
``fibers._commit_acks``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fibers import _dedup as dedup
from fibers._checkpoint_store import CheckpointStore, StepWrite, message_key, session_prefix
from fibers._clock import Clock
from fibers._commit_acks import PLAIN, WHOLE_SESSION, Forget, forget_acknowledged, redeliver
from fibers._commit_units import (
    AckEntry,
    CommitQueue,
    Frames,
    Unit,
    commit_units,
    outbox_key,
    responder_sessions_finished,
    step_write,
)
from fibers._identity import Party
from fibers._messages import (
    Ack,
    Data,
    ExistingSessionMessage,
    InitialSessionMessage,
    encode_message,
    with_acks,
)
from fibers._node_types import NetworkMap
from fibers._redelivery import Redelivery
from fibers._storage_api import Storage, Txn
from fibers.transport import Transport

if TYPE_CHECKING:
    from fibers._state_machine import FlowStateMachine

__all__ = ["AfterStep", "CommitStage", "StepFailed"]

log = logging.getLogger("fibers.node")

AfterStep = Callable[["FlowStateMachine", Frames], object]
"""Called once a flow's step committed (at once without storage), with its messages."""

StepFailed = Callable[["FlowStateMachine", Exception, "bytes | None"], object]
"""Called for a flow state machine whose unit failed, with the error and its start record
when that unit wrote it."""


class CommitStage:
    """The commit stage of one node: the round's units, acknowledgements, redelivery.

    Without storage (``checkpoints`` None) nothing is written: a step's messages leave and its
    result settles at once, and nothing is acknowledged or re-sent.
    """

    # The simulation explorer's crash point (set through ``Node.commit_hook``): called with
    # "before" ahead of each group commit that writes, and "after" it, before anything that
    # waited for it is sent, settled or acknowledged.
    hook: Callable[[str], object] | None = None

    def __init__(
        self,
        who: Party,
        checkpoints: CheckpointStore | None,
        transport: Transport,
        clock: Clock,
        network_map: NetworkMap,
        *,
        redelivery_interval: timedelta,
        after_step: AfterStep,
    ) -> None:
        self._who = who
        self._checkpoints = checkpoints
        self._transport = transport
        self._clock = clock
        self._network_map = network_map
        self._queue = CommitQueue()
        self._after_step = after_step
        # Outbox keys the peers acknowledged (or, for our inits, implied; see fibers._dedup).
        # Invariant: they are deleted in the very commit after which the acknowledgements due
        # for the frames that put them here are sent (a commit whose deletions fail sends no
        # acknowledgement); the dedup pruning relies on it.
        self._acked: list[Forget] = []
        self._acked_later: list[Forget] = []  # ... whose deletion failed: retried with a commit
        self._acked_later_at: datetime | None = None  # when _acked_later is retried
        self._unacked = Redelivery(redelivery_interval)
        # Invariant: the earlier of _unacked.next_due and _acked_later_at (None when neither
        # is set), refreshed wherever either changes: a node reads it at every round.
        self.redelivery_due: datetime | None = None
        """When unacknowledged outbox messages are next re-sent, or acknowledged ones whose
        deletion failed are deleted (None: nothing waits); read only."""
        # Acknowledgements owed to each peer by the commit whose after-work runs now (empty
        # otherwise): they ride on the first frame sent to that peer (``send_tracked``), and
        # those left go as one ``Ack`` each once the after-work is done.
        self._owed: dict[str, tuple[Party, list[AckEntry]]] = {}
        self._sent_at: datetime | None = None  # the clock during that after-work

    @property
    def durable(self) -> bool:
        """Whether this stage writes to storage."""
        return self._checkpoints is not None

    def has_pending(self) -> bool:
        """Whether the round has anything to commit (the scheduler asks after every round)."""
        return bool(self._queue.units or self._acked)

    # ----- units ----------------------------------------------------------------------------------

    def unit_for(self, machine: FlowStateMachine | None) -> Unit:
        """The unit a write for ``machine`` joins: its own, unless it no longer runs (parked)
        or there is none (a unit of its own)."""
        # Invariant: only a stage with storage has units (its node's scheduler asks no other
        # whether something is pending).
        assert self._checkpoints is not None, "a node without storage commits nothing"
        if machine is None or machine.abandoned:
            return self._queue.new_unit()
        return self._queue.for_flow(machine)

    def new_unit(self) -> Unit:
        """A unit of its own, for node-level work."""
        assert self._checkpoints is not None, "a node without storage commits nothing"
        return self._queue.new_unit()

    def loose(self) -> Unit:
        """The round's unit for service writes and actions made outside any flow."""
        assert self._checkpoints is not None, "a node without storage commits nothing"
        return self._queue.loose()

    def record_step(self, machine: FlowStateMachine) -> None:
        """The state machine suspended or finished: queue its step's writes, and
        ``after_step(machine, frames)`` (with the step's messages, to be sent) for once they
        committed."""
        if self._checkpoints is None:  # nothing to store or track: the messages leave now
            outbox, machine.outbox = machine.outbox, []  # take_outbox, without a call
            send = self._transport.send
            for recipient, message in outbox:  # (a comprehension is a call of its own)
                send(recipient, encode_message(message))
            if machine.finished:  # without storage, nothing else waits for a step
                self._after_step(machine, [])
            return
        outbox, machine.outbox = machine.outbox, []  # take_outbox, without a call
        frames: Frames = []
        for recipient, message in outbox:  # (a loop: no call per message for its key)
            key = message_key(recipient.name, message.session_id, message.to_initiator,
                              message.seq) if type(message) is ExistingSessionMessage \
                else outbox_key(recipient, message)
            frames.append((recipient, key, encode_message(message)))
        unit = self._queue.for_flow(machine)
        wait = machine.current_wait()
        if frames or machine.journal.new_entries or machine.consumed or machine.start_record \
                or machine.extra_writes or machine.finished or machine.routes_changed \
                or wait != machine.stored_wait:
            write = step_write(self._checkpoints, self._who.name, machine, frames,
                               unit=unit, wait=wait)
            unit.start = unit.start or write.start_record
            unit.writes.append(write)
        # else woken without progress (or restored back at its checkpoint): nothing to store.
        unit.after.append(frames)

    def record_kill(self, write: StepWrite, responder_keys: list[tuple[bytes, int]],
                    after: Callable[[], object]) -> None:
        """Delete a parked flow's records (``write``, its last step) and end its responder
        sessions on our side in a unit of its own; ``after`` once that committed."""
        assert self._checkpoints is not None
        write.extra_writes.append(responder_sessions_finished(self._storage(), responder_keys))
        unit = self._queue.new_unit()  # nothing is told before the records are gone
        unit.writes.append(write)
        unit.after.append(after)

    # ----- what arrives ---------------------------------------------------------------------------

    def ack_after_commit(self, sender: Party, entry: AckEntry,
                         machine: FlowStateMachine | None = None) -> None:
        """Acknowledge a received message to its sender once it is stored: with
        ``machine``'s unit of this round (which may be storing it right now), or with a unit
        of its own (acks to the same peer still travel together)."""
        if self.durable:
            self.unit_for(machine).ack(sender, entry)

    def store_received(self, machine: FlowStateMachine | None, sender: Party,
                       message: ExistingSessionMessage) -> None:
        """Keep a received message in the inbox with ``machine``'s step (or alone, for a
        parked flow); acknowledge it once stored."""
        session_id, to_initiator, seq = message.session_id, message.to_initiator, message.seq
        unit = self.unit_for(machine)
        if unit.inbox is None:
            unit.inbox = {}
        unit.inbox[(sender.name, session_id, to_initiator, seq)] = message
        unit.acks.append((sender, (session_id, to_initiator, seq)))

    def store_init(self, machine: FlowStateMachine, sender: Party,
                   init: InitialSessionMessage) -> None:
        """Keep the init's dedup record and first payload with the responder's first step
        (one unit: the init is acknowledged only once its responder is stored)."""
        sid = init.initiator_session_id
        dedup_key = session_prefix(sender.name, sid, False)
        store = self._storage()
        unit = self.unit_for(machine)
        unit.writes.append(lambda txn: dedup.accepted(store, txn, dedup_key))
        if init.first_payload is not None:
            if unit.inbox is None:
                unit.inbox = {}
            unit.inbox[(sender.name, sid, False, 0)] = ExistingSessionMessage(
                sid, False, 0, Data(init.first_payload))
        unit.ack(sender, (sid, False, 0))

    def store_rejection(self, sender: Party, session_id: int, key: bytes,
                        frame: bytes) -> None:
        """Record a rejected session init (so that a re-sent copy is never run) with the
        Reject in the outbox; acknowledge the init and send the Reject once that is stored.
        Without storage the Reject leaves at once."""
        if not self.durable:
            self._transport.send(sender, frame)
            return
        dedup_key = session_prefix(sender.name, session_id, False)
        store = self._storage()

        def write(txn: Txn) -> None:
            dedup.rejected(store, txn, dedup_key)
            store.put_sealed(txn, "outbox", key, frame)

        unit = self._queue.new_unit()
        unit.writes.append(write)
        unit.ack(sender, (session_id, False, 0))
        unit.after.append(lambda: self.send_tracked(sender, key, frame))

    def acknowledged(self, sender: Party, entries: list[AckEntry]) -> int:
        """``sender`` acknowledged these messages of ours: they leave the outbox with the next
        commit (no commit of its own: lost on a crash, a message is re-sent and dropped as a
        duplicate) and are not re-sent. An entry naming no message sent to ``sender`` and
        awaiting its acknowledgement (a duplicate, or a message never sent, or not yet) is
        ignored; returns how many were."""
        if not self.durable:
            return 0
        name, unacked, acked, ignored = sender.name, self._unacked, self._acked, 0
        for session_id, to_initiator, seq in entries:
            key = message_key(name, session_id, to_initiator, seq)
            if unacked.acknowledged(key):
                acked.append((key, seq if to_initiator else PLAIN))
            else:
                ignored += 1
        self._refresh_due()
        return ignored

    def init_implied(self, responder: Party, session_id: int) -> None:
        """The responder of our session ``session_id`` stored our init (it sent something in
        the session): forget the init in the commit that stores (or drops) that message,
        before acknowledging it. Its dedup record may go once we acknowledge (see
        ``fibers._dedup``)."""
        if self.durable:
            self._acked.append((message_key(responder.name, session_id, False, 0), PLAIN))

    def session_over(self, responder: Party, session_id: int) -> None:
        """The responder's side of our session ``session_id`` ended (we received its End,
        ErrorEnd or Reject): delete every message of ours in the session from the outbox in
        the commit that stores (or drops) that final message, before acknowledging it. Nobody
        will consume them, and the responder's dedup record may go once we acknowledge (see
        ``fibers._dedup``, rule 2)."""
        if self.durable:
            self._acked.append((session_prefix(responder.name, session_id, False),
                                WHOLE_SESSION))

    # ----- the group commit -----------------------------------------------------------------------

    def commit(self, step_failed: StepFailed, after_failures: Callable[[], object]) -> None:
        """Write the round's units in one (synced) group commit, then do what waited for the
        units that committed: send, settle, acknowledge (riding on the messages sent, else
        one Ack per peer). For each unit of a flow that failed, ``step_failed``;
        ``after_failures`` once before those."""
        forgetting = self._forgetting() if self._acked or self._acked_later else None
        units = self._queue.take()
        hook = self.hook
        if hook is not None and not any(unit.writes or unit.inbox for unit in units):
            hook = None
        if hook is not None:
            hook("before")
        result = commit_units(self._checkpoints, units, self._who)
        if hook is not None:
            hook("after")
        if forgetting is None or forgetting in result.committed:  # see _acked's invariant
            self._owed = result.acks_by_peer()
        self._sent_at = self._clock.now()
        try:
            self._run_after(result.committed)  # (frames to peers owed acks carry them)
        finally:
            self._sent_at = None
            self._send_owed_acks()
        if result.failed:
            after_failures()
        for unit, error in result.failed:
            if unit.on_failure is not None:
                unit.on_failure(error)
            if unit.owner is not None and not unit.owner.abandoned:
                step_failed(unit.owner, error, unit.start)
            elif unit.on_failure is None:
                log.error("%s could not store %s: %s", self._who,
                          "a parked flow's records" if unit.owner else "node records", error)

    def _forgetting(self) -> Unit:
        """The unit that deletes the acknowledged outbox records (see ``_acked``)."""
        acked = self._acked + self._acked_later
        self._acked, self._acked_later = [], []
        forgetting = self._queue.new_unit()
        store = self._storage()
        forgetting.writes.append(lambda txn: forget_acknowledged(store, txn, acked))
        forgetting.on_failure = lambda _: self._forget_later(acked)
        return forgetting

    def _send_owed_acks(self) -> None:
        """The acknowledgements no message carried: one Ack per peer."""
        if self._owed:
            owed, self._owed = self._owed, {}
            for peer, entries in owed.values():
                self._transport.send(peer, encode_message(Ack(entries)))

    def _run_after(self, committed: list[Unit]) -> None:
        """What waited for the committed units, in order: actions, and each flow step's
        ``after_step`` with its frames."""
        after_step = self._after_step
        for unit in committed:
            for action in unit.after:
                if type(action) is list:
                    assert unit.owner is not None
                    after_step(unit.owner, action)
                else:
                    action()  # type: ignore[operator]

    def _forget_later(self, acked: list[Forget]) -> None:
        """Acknowledged messages whose deletion failed: deleted with a later commit, at the
        latest at the next redelivery tick."""
        self._acked_later.extend(acked)
        if self._acked_later_at is None:
            self._acked_later_at = self._clock.now() + timedelta(seconds=1)
            self._refresh_due()

    def _storage(self) -> Storage:
        assert self._checkpoints is not None, "only a node with storage stores"
        return self._checkpoints.storage

    # ----- sending and redelivery -----------------------------------------------------------------

    def send_tracked(self, recipient: Party, key: bytes, frame: bytes) -> None:
        """Send a frame that waits in the outbox; it is re-sent until acknowledged. Sent after a
        commit that owes ``recipient`` acknowledgements, it carries them (``with_acks``)."""
        if self._checkpoints is not None:  # tracked first: only then is its ack honoured
            self._unacked.sent(key, self._sent_at or self._clock.now())
            self._refresh_due()
        owed = self._owed
        if owed:
            entries = owed.pop(recipient.name, None)
            if entries is not None:
                acked = with_acks(frame, entries[1])
                if acked is None:
                    owed[recipient.name] = entries
                else:
                    frame = acked
        self._transport.send(recipient, frame)

    def resent(self, keys: list[bytes]) -> None:
        """Outbox messages were sent again (restart, reconnect): re-send them until acked."""
        self._unacked.sent_all(keys, self._clock.now())
        self._refresh_due()

    def _refresh_due(self) -> None:
        due, later = self._unacked.next_due, self._acked_later_at
        self.redelivery_due = due if later is None or (due is not None and due < later) \
            else later

    def tick(self, now: datetime) -> bool:
        """Re-send what is due; True when acknowledged deletions that failed are due again
        (the caller runs a round to commit them)."""
        retry_forget = False
        if self._acked_later_at is not None and self._acked_later_at <= now:
            self._acked_later_at = None
            self._acked, self._acked_later = self._acked + self._acked_later, []
            retry_forget = True
        due = self._unacked.next_due
        if due is not None and due <= now and self._checkpoints is not None:
            redeliver(self._checkpoints, self._unacked, self._network_map, self._transport, now)
        self._refresh_due()
        return retry_forget

    def clear(self) -> None:
        """Forget the round and the redelivery schedule (node stop: nothing more is stored)."""
        self._queue.clear()
        self._unacked.clear()
        self._refresh_due()
