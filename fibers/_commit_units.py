"""The units of a scheduler round and the writes they carry: what the commit stage
(``fibers._commit``) commits as one group. See docs/architecture.md, "The step pipeline".

A round's writes are grouped in *units*. Each flow that did something in the round has one
unit (its received messages, its init record and its step, so they are stored together or not
at all); node-level work (forgetting acknowledged messages, rejecting a session, storing for a
parked flow, a service's writes outside flows) gets units of its own. The group commit is one
flat write transaction (``Storage.write_each``): a unit whose writes fail is isolated (the
transaction is redone without it) and fails alone; a failed group commit fails every unit that
wrote something. A flow's step is kept as data (``StepWrite``, built by ``step_write``) and its
after-commit work as its frames, so that recording a step makes no closure.

Invariant: a unit's ``after`` actions and ``acks`` happen only if its writes committed, so
nothing is acknowledged before it is stored and no message leaves before the step that
produced it is recorded. A unit without writes depends on no write of this round and always
counts as committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fibers import _dedup as dedup
from fibers._checkpoint_store import (
    CheckpointStore,
    StepWrite,
    message_key,
    session_prefix,
)
from fibers._identity import Party
from fibers._messages import ExistingSessionMessage, InitialSessionMessage, SessionMessage
from fibers._storage_api import Storage, Txn
from fibers._wake_index import IndexWrite, Wait

if TYPE_CHECKING:
    from fibers._state_machine import FlowStateMachine

__all__ = [
    "AckEntry",
    "CommitQueue",
    "CommitResult",
    "Frames",
    "InboxKey",
    "Unit",
    "commit_units",
    "index_write",
    "outbox_key",
    "responder_sessions_finished",
    "step_write",
]

log = logging.getLogger("fibers.node")

AckEntry = tuple[int, bool, int]
"""(session id, to initiator, seq) of one received message, as an ``Ack`` lists it."""

InboxKey = tuple[str, int, bool, int]
"""(sender, session id, to initiator, seq) of a received message: ``message_key``'s parts."""

Frames = list[tuple[Party, bytes, bytes]]
"""(recipient, outbox key, frame) of the messages a step sends."""


@dataclass(eq=False, slots=True)
class Unit:
    """Writes stored together, and what waits for them."""

    owner: FlowStateMachine | None = None
    # In order: write functions and flow steps (``CheckpointStore.write_step``, kept as data so
    # it costs no closure).
    writes: list[Callable[[Txn], object] | StepWrite] = field(default_factory=list)
    # Received messages to keep in the inbox (written before ``writes``), by inbox key; encoded
    # only when written. A message the owner consumes in a step of this same unit is removed
    # from here instead of being written and deleted: the step record journals it, and the two
    # commit (or fail) together. See docs/checkpoint-format.md, "The inbox".
    inbox: dict[InboxKey, ExistingSessionMessage] | None = None
    # In order: actions, and the frames of the owner's steps (for ``after_step``: no closure).
    after: list[Callable[[], object] | Frames] = field(default_factory=list)
    acks: list[tuple[Party, AckEntry]] = field(default_factory=list)
    # The owner's start record when this unit writes it (the flow's first step): a flow whose
    # unit failed has no stored record to be retried from but this one.
    start: bytes | None = None
    on_failure: Callable[[Exception], object] | None = None

    def ack(self, sender: Party, entry: AckEntry) -> None:
        """Acknowledge ``entry`` to ``sender`` once this unit committed."""
        self.acks.append((sender, entry))


@dataclass(slots=True)
class CommitResult:
    """The outcome of one group commit."""

    committed: list[Unit]
    failed: list[tuple[Unit, Exception]]

    def acks_by_peer(self) -> dict[str, tuple[Party, list[AckEntry]]]:
        """The acknowledgements of the committed units, one list per peer (by name)."""
        by_peer: dict[str, tuple[Party, list[AckEntry]]] = {}
        for unit in self.committed:
            for peer, entry in unit.acks:
                owed = by_peer.get(peer.name)
                if owed is None:
                    by_peer[peer.name] = (peer, [entry])
                else:
                    owed[1].append(entry)
        return by_peer


class CommitQueue:
    """The units of the current round (scheduler thread only)."""

    def __init__(self) -> None:
        # Invariant: _by_flow maps each flow to its unit in units (one unit per flow per
        # round); both are emptied together by ``take``. units is read only outside.
        self.units: list[Unit] = []
        self._by_flow: dict[FlowStateMachine, Unit] = {}
        self._loose: Unit | None = None

    def __bool__(self) -> bool:
        return bool(self.units)

    def for_flow(self, machine: FlowStateMachine) -> Unit:
        """``machine``'s unit of this round, made on first use."""
        unit = self._by_flow.get(machine)
        if unit is None:
            unit = self._by_flow[machine] = self.new_unit(machine)
        return unit

    def new_unit(self, owner: FlowStateMachine | None = None) -> Unit:
        """A unit of its own (node-level work when ``owner`` is None)."""
        unit = Unit(owner)
        self.units.append(unit)
        return unit

    def loose(self) -> Unit:
        """The round's unit for service writes and actions made outside any flow."""
        if self._loose is None:
            self._loose = self.new_unit()
        return self._loose

    def take(self) -> list[Unit]:
        """The round's units in the order they were made; the queue starts a new round."""
        units, self.units = self.units, []
        self._by_flow.clear()
        self._loose = None
        return units

    def clear(self) -> None:
        """Forget the round (node stop: nothing of it is stored)."""
        self.take()


def commit_units(store: CheckpointStore | None, units: list[Unit], who: object) -> CommitResult:
    """Write ``units`` in one flat group commit; a unit whose writes fail is isolated (the
    commit is redone without it, see ``Storage.write_each``) and fails alone."""
    failed: list[tuple[Unit, Exception]] = []
    writing = [unit for unit in units if unit.writes or unit.inbox]
    if writing and store is not None:
        try:
            errors = store.storage.write_each(writing, store.write_unit)
        except Exception as exc:  # the whole commit failed: nothing of it is stored
            log.error("%s: a group commit failed", who, exc_info=exc)
            return CommitResult([unit for unit in units if not (unit.writes or unit.inbox)],
                                [(unit, exc) for unit in writing])
        if errors.count(None) < len(errors):
            failed = [(unit, error) for unit, error in zip(writing, errors, strict=True)
                      if error is not None]
            lost = {id(unit) for unit, _ in failed}
            return CommitResult([unit for unit in units if id(unit) not in lost], failed)
    return CommitResult(units, failed)


def outbox_key(recipient: Party, message: SessionMessage) -> bytes:
    """The outbox key of ``message`` to ``recipient`` (an init is message 0 of its session)."""
    if isinstance(message, InitialSessionMessage):
        return message_key(recipient.name, message.initiator_session_id, False, 0)
    return message_key(recipient.name, message.session_id, message.to_initiator, message.seq)


def step_write(checkpoints: CheckpointStore, ours: str, machine: FlowStateMachine,
               frames: Frames, *, unit: Unit, wait: Wait) -> StepWrite:
    """The writes of ``machine``'s step (``ours``: this node's name), taken from the machine
    (which starts its next step empty); ``unit`` is its unit of this round, whose received
    messages the step consumes are dropped from it instead of being written and deleted."""
    flow_journal = machine.journal
    journal, flow_journal.new_entries = flow_journal.new_entries, []
    consumed: list[bytes] = []
    if machine.consumed:
        received = unit.inbox
        for k in machine.consumed:
            # Received in this unit: neither written nor deleted (see ``Unit.inbox``).
            if received is None or received.pop(k, None) is None:
                consumed.append(message_key(*k))
        machine.consumed = []
    start, machine.start_record = machine.start_record, None
    extra, machine.extra_writes = machine.extra_writes, []
    values = machine.new_values
    if values is not None:  # (most steps: none, every_step snapshots of large values)
        machine.new_values = None
    finished = machine.finished
    done: list[bytes] = []
    if finished:
        history = machine.session_history
        done = [session_prefix(s.peer.name, s.session_id, s.we_initiated) for s in history]
    if finished and any(not s.we_initiated for s in history):
        # Its final message in each (see fibers._dedup, rule 3) is the last it numbered.
        extra.append(responder_sessions_finished(
            checkpoints.storage,
            [(session_prefix(s.peer.name, s.session_id, False), s.next_send_seq - 1)
             for s in history if not s.we_initiated]))
    return StepWrite(
        run_id=machine.run_id,
        finished=finished,
        journal_start=flow_journal.length - len(journal),
        journal=journal,
        snapshot=machine.snapshot,
        outbox=frames,
        consumed=consumed,
        inbox_prefixes_done=done,
        start_record=start,
        extra_writes=extra,
        values=values or (),
        index=index_write(ours, machine, wait, start is not None),
    )


def index_write(ours: str, machine: FlowStateMachine, wait: Wait, first: bool
                ) -> IndexWrite | None:
    """The step's changes to the wake index (docs/checkpoint-format.md, "The wake
    index"), None when it changes nothing: the routes of its open sessions when one
    opened (or with its first step), all its routes forgotten at its end, and what it
    waits for when that changed. The flow's memory is updated as if they committed: a
    step that fails drops that memory anyway."""
    if machine.finished:
        return IndexWrite(forget=[session_prefix(*s.routing_key(ours))
                                  for s in machine.session_history])
    index = None
    if machine.routes_changed or first:
        machine.routes_changed = False
        index = IndexWrite(routes=[session_prefix(*s.routing_key(ours))
                                   for s in machine.sessions.values()])
    if wait != machine.stored_wait:
        machine.stored_wait = wait
        if index is None:
            index = IndexWrite()
        index.put_wait = wait
    return index


def responder_sessions_finished(store: Storage, keys: list[tuple[bytes, int]]
                                ) -> Callable[[Txn], None]:
    """The write that records, with a finished flow's last step (or its kill), that its
    responder sessions (dedup key, number of our final message in it) are over on our side
    (their dedup records may then go, see ``fibers._dedup``)."""

    def write(txn: Txn) -> None:
        for key, final_seq in keys:
            dedup.responder_finished(store, txn, key, final_seq)

    return write
