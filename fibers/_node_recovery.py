"""Durability and operations for ``Node``: storing what arrives, restoring flows after a
restart, retrying steps that could not be stored, the hospital, and inspection.

These are functions of the node (``Node`` calls them and re-exports the public ones as
methods); they use the scheduler's state directly and run on its thread.
"""

from __future__ import annotations

import gc
import heapq
import logging
import struct
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fibers import _dedup as dedup
from fibers import _kill
from fibers._checkpoint_store import (
    StartRecord,
    StepWrite,
    StoredFlow,
    message_key,
    session_prefix,
    split_message_key,
)
from fibers._commit import Unit
from fibers._errors import KilledFlowException, SerializationError
from fibers._flow_logic import FlowInfo, StateMachineRunId
from fibers._identity import Party
from fibers._inbound import REORDER_WINDOW
from fibers._journal import describe_wait
from fibers._messages import (
    Data,
    ExistingSessionMessage,
    InitialSessionMessage,
    decode_message,
    encode_message,
)
from fibers._node_types import FlowSummary, HospitalEntry
from fibers._state_machine import FlowStateMachine, class_name
from fibers._storage import CorruptRecordError, NodeStorage, Txn

if TYPE_CHECKING:
    from fibers._node import Node

log = logging.getLogger("fibers.node")


# ----- durability: storing what arrives, restoring what was stored ----------------------------


def ack_after_commit(
    node: Node,
    sender: Party,
    session_id: int,
    to_initiator: bool,
    seq: int,
    *,
    fiber: FlowStateMachine | None = None,
) -> None:
    """Acknowledge a received message to its sender once it is stored: with ``fiber``'s unit
    of this round (which may be storing it right now), or with a unit of its own (acks to the
    same peer still travel together, see ``Node._commit``)."""
    if node.durable:
        _unit_for(node, fiber).ack(sender, (session_id, to_initiator, seq))


def _unit_for(node: Node, fiber: FlowStateMachine | None) -> Unit:
    """The unit a write for ``fiber`` joins: its own, unless it no longer runs (parked)."""
    if fiber is None or fiber.abandoned:
        return node._commits.new_unit()
    return node._commits.for_flow(fiber)


def store_init(
    node: Node, fiber: FlowStateMachine, sender: Party, init: InitialSessionMessage
) -> None:
    """Keep the init's dedup record and first payload with the responder's first step (one
    unit: the init is acknowledged only once its responder is stored)."""
    sid = init.initiator_session_id
    dedup_key = session_prefix(sender.name, sid, False)
    data = None
    if init.first_payload is not None:
        first = ExistingSessionMessage(sid, False, 0, Data(init.first_payload))
        data = (message_key(sender.name, sid, False, 0), encode_message(first))
    store = node.checkpoints.storage

    def write(txn: Txn) -> None:
        store.put(txn, "dedup", dedup_key, b"")
        if data is not None:
            store.put_sealed(txn, "inbox", data[0], data[1])

    unit = _unit_for(node, fiber)
    unit.writes.append(write)
    unit.ack(sender, (sid, False, 0))


def store_rejection(node: Node, sender: Party, session_id: int, key: bytes, frame: bytes) -> None:
    """Record a rejected session init (so that a re-sent copy is never run) with the Reject in
    the outbox; acknowledge the init and send the Reject once that is stored."""
    dedup_key = session_prefix(sender.name, session_id, False)
    store = node.checkpoints.storage

    def write(txn: Txn) -> None:
        dedup.rejected(store, txn, dedup_key)
        store.put_sealed(txn, "outbox", key, frame)

    unit = node._commits.new_unit()
    unit.writes.append(write)
    unit.ack(sender, (session_id, False, 0))
    unit.after.append(lambda: node._send_tracked(sender, key, frame))


def store_received(
    node: Node, fiber: FlowStateMachine, sender: Party, message: ExistingSessionMessage
) -> None:
    """Keep a received message in the inbox with ``fiber``'s step; acknowledge it once stored."""
    session_id, to_initiator, seq = message.session_id, message.to_initiator, message.seq
    key = message_key(sender.name, session_id, to_initiator, seq)
    frame = encode_message(message)
    store = node.checkpoints.storage
    unit = _unit_for(node, fiber)
    unit.writes.append(lambda txn: store.put_sealed(txn, "inbox", key, frame))
    unit.ack(sender, (session_id, to_initiator, seq))


def responder_sessions_finished(node: Node, fiber: FlowStateMachine) -> Callable[[Txn], None]:
    """The write that records, with a finished flow's last step, that its responder sessions
    are over on our side (their dedup records may then go, see ``fibers._dedup``)."""
    keys = [session_prefix(s.peer.name, s.session_id, False)
            for s in fiber.session_history if not s.we_initiated]
    store = node.checkpoints.storage

    def write(txn: Txn) -> None:
        for key in keys:
            dedup.responder_finished(store, txn, key)

    return write


def forget_acknowledged(store: NodeStorage, txn: Txn, keys: list[bytes]) -> None:
    """Delete acknowledged messages from the outbox; an acknowledgement from an initiator
    also advances its session's dedup record (see ``fibers._dedup``)."""
    for key in keys:
        store.delete(txn, "outbox", key)
        peer, session_id, to_initiator, _ = split_message_key(key)
        if to_initiator:
            dedup.initiator_acknowledged(store, txn, session_prefix(peer, session_id, False))


def restore_all(node: Node) -> None:
    """Restore every stored flow (restart), then re-send unacknowledged messages."""
    # Restoring builds many long-lived objects and little garbage; the cyclic collector
    # would rescan them again and again (a third of the time at 10,000 flows).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for stored in node.checkpoints.load_flows():
            restore(node, stored)
        node.run_until_idle()
    finally:
        if collecting:
            gc.enable()
    resend_outbox(node)
    node.run_until_idle()


def resend_outbox(node: Node, peer: str | None = None) -> int:
    """Send every unacknowledged stored frame (to ``peer`` only, when given) again; returns
    how many. A record that fails its check hospitalises the flow that sent it."""
    sent = 0
    for key, frame in node.checkpoints.outbox(peer):
        if isinstance(frame, CorruptRecordError):
            outbox_record_corrupt(node, key, frame)
        else:
            node.resend(split_message_key(key)[0], frame)
            node._unacked.sent(key, node.clock.now())  # and again until acknowledged
            sent += 1
    return sent


def outbox_record_corrupt(node: Node, key: bytes, error: CorruptRecordError) -> None:
    """An unacknowledged message can no longer be re-sent: the flow that sent it (when it is
    running) goes to the hospital naming the record, since its peer may wait for it forever;
    the record stays for the operator to inspect."""
    log.error("%s cannot re-send an outbox record: %s", node.party, error)
    try:
        peer, session_id, to_initiator, _ = split_message_key(key)
    except (ValueError, struct.error):
        return
    # We sent it to the initiator: we are the responder, routed under the peer's name.
    initiator = peer if to_initiator else node.party.name
    routed = node._sessions.get((initiator, session_id, not to_initiator))
    if routed is not None:
        hospitalise_restored(node, routed[0], f"outbox record unreadable: {error}")


def restore(node: Node, stored: StoredFlow) -> None:
    """Re-run a stored flow against its journal, or park it when it was parked or unreadable."""
    if stored.flow is None or stored.status == "HOSPITALIZED" or stored.start is None:
        diagnosis = stored.diagnosis or "hospitalised before the restart"
        node._hospital[stored.run_id] = HospitalEntry(stored.run_id, stored.flow_class, diagnosis)
        for key, floor in parked_routes(node, stored).items():
            node._parked_routes[key] = (stored.run_id, floor)
        return
    start = stored.start
    fiber = FlowStateMachine(node, stored.run_id, stored.flow)
    if start.peer is not None:
        node._open_responder_session(
            fiber,
            start.peer,
            start.session_id,
            FlowInfo(start.peer_version, start.peer_app),
            start.confirm_version,
        )
    fiber.start_replay(stored.journal, stored.snapshot)
    fiber.needs_refeed = True
    node._flows[fiber.run_id] = fiber
    node._schedule(fiber)


def parked_routes(node: Node, stored: StoredFlow) -> dict[tuple[str, int, bool], int]:
    """The routing keys of the sessions a parked flow had, read from its records, so that
    messages for it are still stored (for a retry) rather than dropped; each with the number
    of the first message from the peer the flow has not processed (one past the last ``recv``
    its journal holds for that session), below which a message is a duplicate."""
    routes: dict[tuple[str, int, bool], int] = {}
    current: dict[tuple[object, object], tuple[str, int, bool]] = {}  # (owner, peer) -> route
    if stored.start is not None and stored.start.peer is not None:
        key = (stored.start.peer.name, stored.start.session_id, False)
        routes[key] = 0
        current[(0, stored.start.peer.name)] = key
    for entry in stored.journal:
        if entry[0] == "open" and len(entry) > 3 and isinstance(entry[3], int):
            key = (node.party.name, entry[3], True)
            routes[key] = 0
            current[(entry[1], entry[2])] = key
        elif entry[0] == "recv" and len(entry) > 4 and isinstance(entry[4], int):
            owned = current.get((entry[1], entry[2]))
            if owned is not None:
                routes[owned] = max(routes[owned], entry[4] + 1)
    return routes


def store_for_parked(
    node: Node,
    sender: Party,
    message: ExistingSessionMessage,
    run_id: StateMachineRunId,
    floor: int,
) -> None:
    """Keep a message for the parked flow ``run_id`` in the inbox; its retry picks it up. A
    message numbered below ``floor`` was processed before the flow was parked: it is a
    duplicate, acknowledged and not stored (a retry would process it again); one numbered
    ``REORDER_WINDOW`` or more past it is dropped unacknowledged, as for a running flow, so a
    peer cannot fill a parked flow's inbox without bound."""
    if message.seq >= floor + REORDER_WINDOW:
        node.frame_stats.too_far_ahead += 1
        log.warning("%s dropped message %d from %s for parked flow %s: more than %d ahead",
                    node.party, message.seq, sender, run_id, REORDER_WINDOW)
        return
    if message.seq < floor:
        log.debug("%s dropped duplicate %d for parked flow %s", node.party, message.seq, run_id)
        ack_after_commit(node, sender, message.session_id, message.to_initiator, message.seq)
        return
    key = message_key(sender.name, message.session_id, message.to_initiator, message.seq)
    frame = encode_message(message)
    store = node.checkpoints.storage
    unit = node._commits.new_unit()
    unit.writes.append(lambda txn: store.put_sealed(txn, "inbox", key, frame))
    unit.ack(sender, (message.session_id, message.to_initiator, message.seq))


def forget_parked_routes(node: Node, run_id: StateMachineRunId) -> None:
    """The flow left the hospital: its sessions route normally again (or not at all)."""
    for key in [k for k, (owner, _) in node._parked_routes.items() if owner == run_id]:
        del node._parked_routes[key]


def refeed(node: Node, fiber: FlowStateMachine) -> None:
    """Give a restored flow the messages that had arrived but were not consumed. A stored
    message that fails its check (or does not decode) sends the flow to the hospital, naming
    the record; other flows are not affected."""
    for session in list(fiber.sessions.values()):
        prefix = session_prefix(session.peer.name, session.session_id, session.we_initiated)
        expected = session.next_recv_seq
        # Invariant: the inbox holds exactly the messages of this session that were
        # received and not consumed (data), plus its control messages (confirm, end, error).
        applied = False
        try:
            messages = [(k, decode_message(f)) for k, f in node.checkpoints.inbox(prefix)]
        except (CorruptRecordError, SerializationError) as exc:
            hospitalise_restored(node, fiber, f"inbox record unreadable: {exc}")
            return
        for _, message in messages:
            if not isinstance(message, ExistingSessionMessage):
                continue
            if (isinstance(message.body, Data) and message.seq < session.next_recv_seq
                    and (session.we_initiated or message.seq > 0)):
                # Consumed before the restart, its replay already delivered it. (A responder's
                # first payload is number 0 although its session starts expecting 1.)
                continue
            if message.seq > expected:
                # After a gap: the message before it was never stored (a step that failed),
                # so never acknowledged; its sender re-sends it, and this one follows it.
                if session.out_of_order is None:
                    session.out_of_order = {}
                session.out_of_order[message.seq] = message.body
                continue
            session.apply(message.seq, message.body)
            applied = True
            if message.seq == expected:
                expected += 1
        session.next_recv_seq = expected
        if applied and fiber.waiting is session:
            node._schedule(fiber)


def hospitalise_restored(node: Node, fiber: FlowStateMachine, diagnosis: str) -> None:
    """Park a restored flow that is suspended at its checkpoint (not running) because one of
    its stored records is unusable; its checkpoint stays for the operator."""
    if fiber.abandoned or fiber.run_id not in node._flows:
        return
    node._runnable = deque(f for f in node._runnable if f is not fiber)
    fiber.scheduled = False
    fiber.abandon()
    admit(node, fiber, diagnosis)


def admit(node: Node, fiber: FlowStateMachine, diagnosis: str) -> None:
    """Park ``fiber`` in the hospital: its checkpoint stays, its messages keep arriving."""
    log.warning("%s hospitalised flow %s: %s", node.party, fiber.run_id, diagnosis)
    node._flows.pop(fiber.run_id, None)
    node._hospital[fiber.run_id] = HospitalEntry(
        fiber.run_id, class_name(type(fiber.flow)), diagnosis
    )
    node._hospital_fibers[fiber.run_id] = fiber
    if node.durable:
        run_id, start = fiber.run_id, fiber.start_record
        fiber.start_record = None

        def write(txn: Txn) -> None:
            if start is not None:  # parked in its very first step: keep it retryable
                node.checkpoints.storage.put_sealed(txn, "flows", run_id.uuid.bytes, start)
            node.checkpoints.mark_hospitalized(txn, run_id, diagnosis)

        node._commits.new_unit().writes.append(write)


def step_failed(
    node: Node, fiber: FlowStateMachine, error: BaseException, start: bytes | None = None
) -> None:
    """A step could not be stored: drop the flow's memory and re-run it from storage (from
    ``start``, its start record, when that was part of the failed step).

    Nothing of the step left the node (its messages wait for the commit) and nothing it
    received in the step was acknowledged. Until the retry, messages for the flow's sessions
    are neither stored nor acknowledged: their senders re-send them, and the restored flow,
    which takes the routes over, checks their order against what was stored. A responder
    whose first step failed is dropped: it never existed durably, and its initiator re-sends
    the session init, which starts it afresh."""
    fiber.abandon()
    run_id = fiber.run_id
    if start is not None and StartRecord.decode(start).peer is not None:
        log.warning("%s dropped responder %s whose first step could not be stored (%s); its "
                    "initiator re-sends the session init", node.party, run_id, error)
        _hold_routes(node, fiber, None)
        node._flows.pop(run_id, None)
        node._retries.pop(run_id, None)
        for callback in node._flow_end_callbacks:
            callback(run_id)
        return
    tries = node._retries[run_id] = node._retries.get(run_id, 0) + 1
    diagnosis = f"storing a step failed {tries} times: {type(error).__name__}: {error}"
    if tries > node._max_retries:
        if start is not None:  # parked in its very first step: keep it retryable
            fiber.start_record = start
            node._unstarted[run_id] = start
        admit(node, fiber, diagnosis)
        _park_routes_by_storage(node, fiber)
        return
    delay = node._retry_backoff * 2 ** (tries - 1)
    log.warning(
        "%s will retry flow %s from its checkpoint in %.1f s: %s",
        node.party,
        fiber.run_id,
        delay,
        diagnosis,
    )
    node._flows.pop(run_id, None)
    node._retrying[run_id] = fiber
    _hold_routes(node, fiber, run_id)
    deadline = node.clock.now() + timedelta(seconds=delay)
    if start is not None:  # its first step was lost: retry from memory, writing it again
        node._unstarted[run_id] = start
    heapq.heappush(node._retry_timers, (deadline, next(node._timer_seq), run_id))


def _hold_routes(node: Node, fiber: FlowStateMachine, run_id: StateMachineRunId | None) -> None:
    """Stop routing to ``fiber``; hold its sessions' messages back until ``run_id`` is retried
    (or, for a dropped responder, until its re-sent init starts it again)."""
    # Every session it had, also those it closed in the lost step: a message for one of
    # those must not be taken for one of an ended session (acknowledged and dropped).
    keys = {session.routing_key(node.party.name) for session in fiber.session_history}
    keys.update(key for key, (owner, _) in node._sessions.items() if owner is fiber)
    for key in keys:
        routed = node._sessions.get(key)
        if routed is None or routed[0] is fiber:
            node._sessions.pop(key, None)
            node._retrying_routes[key] = run_id


def _park_routes_by_storage(node: Node, fiber: FlowStateMachine) -> None:
    """Route a flow parked after its steps failed by what was stored, not by its memory:
    its sessions counted messages whose storing failed, and copies of those must be kept for
    its retry, not acknowledged as duplicates."""
    unroute(node, fiber)
    stored = node.checkpoints.load_flow(fiber.run_id)
    for key, floor in parked_routes(node, stored).items():
        node._parked_routes[key] = (fiber.run_id, floor)


def retry_now(node: Node, run_id: StateMachineRunId) -> None:
    """Re-run a flow whose step could not be stored, from storage or from its start record."""
    for key in [k for k, owner in node._retrying_routes.items() if owner == run_id]:
        del node._retrying_routes[key]  # what arrives meanwhile is stored for the restored flow
    old = node._retrying.pop(run_id, None)
    start = node._unstarted.pop(run_id, None)
    if start is None:
        restore(node, node.checkpoints.load_flow(run_id))
    else:
        restore(node, node.checkpoints.stored_from_start(run_id, start))
    fiber = node._flows.get(run_id) or node._hospital_fibers.get(run_id)
    if fiber is not None:
        if start is not None:
            fiber.start_record = start  # written with its first step this time
        if old is not None:
            old.hand_over_result(fiber)


def unroute(node: Node, fiber: FlowStateMachine) -> None:
    for key, (owner, _) in list(node._sessions.items()):
        if owner is fiber:
            del node._sessions[key]


def hospital(node: Node) -> list[HospitalEntry]:
    """Hospitalised flows with their diagnosis."""
    return list(node._hospital.values())


def retry_flow(node: Node, run_id: StateMachineRunId) -> bool:
    """Run a hospitalised flow again from its checkpoint. False when it is not in the
    hospital or the node has no storage to restore it from."""
    if run_id not in node._hospital or not node.durable:
        return False
    del node._hospital[run_id]
    forget_parked_routes(node, run_id)
    old = node._hospital_fibers.pop(run_id, None)
    if old is not None:
        unroute(node, old)
        old.abandon()
    node._retries.pop(run_id, None)
    if old is not None:
        node._retrying[run_id] = old  # its result future goes to the restored flow
    if run_id in node._unstarted:  # parked in its first step, which was never stored
        retry_now(node, run_id)
    else:
        stored = node.checkpoints.load_flow(run_id)
        if stored.status == "HOSPITALIZED" and stored.flow is not None:
            stored.status = "RUNNABLE"
        restore(node, stored)
        fiber = node._flows.get(run_id)
        retried = node._retrying.pop(run_id, None)
        if fiber is not None and retried is not None:
            retried.hand_over_result(fiber)
    fiber = node._flows.get(run_id)
    if fiber is not None:  # running again: a restart must not park it again
        store = node.checkpoints.storage
        node._commits.for_flow(fiber).writes.append(
            lambda txn: store.delete(txn, "flow_status", run_id.uuid.bytes)
        )
    node.run_until_idle()
    return True


def kill_hospitalized(node: Node, run_id: StateMachineRunId) -> None:
    """Kill a parked flow without running its code again: each counterparty of a session it
    had open gets an end (``UnexpectedFlowEndException`` at its next receive), its records are
    deleted in the same commit, and then the flow-end callbacks run (releasing what it held,
    e.g. the vault's soft locks) and its result future, if any, fails with
    ``KilledFlowException``. See fibers._kill for how the sessions are found."""
    del node._hospital[run_id]
    node._unstarted.pop(run_id, None)
    forget_parked_routes(node, run_id)
    old = node._hospital_fibers.pop(run_id, None)
    if old is not None:
        unroute(node, old)
    responder_keys: list[bytes] = []  # its session as a responder is over on our side
    if node.durable:
        stored = node.checkpoints.load_flow(run_id)
        sessions = _kill.sessions_from_records(stored)
        if stored.start is not None and stored.start.peer is not None:
            responder_keys.append(
                session_prefix(stored.start.peer.name, stored.start.session_id, False))
    else:
        sessions = _kill.sessions_in_memory(old) if old is not None else []
    if old is not None:
        old.abandon()
    frames: list[tuple[Party, bytes, bytes]] = []
    for session in sessions:
        try:
            peer = node.network_map.party(session.peer)
        except KeyError:
            log.warning("%s cannot tell unknown party %s that flow %s was killed",
                        node.party, session.peer, run_id)
            continue
        end = session.end()
        key = message_key(session.peer, end.session_id, end.to_initiator, end.seq)
        frames.append((peer, key, encode_message(end)))
    if node.durable:
        store = node.checkpoints.storage

        def responder_finished(txn: Txn) -> None:
            for key in responder_keys:
                dedup.responder_finished(store, txn, key)

        write = StepWrite(
            run_id=run_id, finished=True, journal_start=0, journal=[], snapshot=None,
            outbox=[(key, frame) for _, key, frame in frames], consumed=[],
            inbox_prefixes_done=[
                session_prefix(s.peer, s.session_id, s.we_initiated) for s in sessions
            ],
            extra_writes=[responder_finished],
        )

    def after() -> None:
        for peer, key, frame in frames:
            node._send_tracked(peer, key, frame)
        for callback in node._flow_end_callbacks:
            callback(run_id)
        if old is not None and old._result is not None and not old._result.done():
            old._result.set_exception(KilledFlowException(f"flow {run_id} was killed by an "
                                                          "operator in the hospital"))

    if node.durable:
        unit = node._commits.new_unit()  # nothing is told before the records are gone
        unit.writes.append(lambda txn: node.checkpoints.write_step(txn, write))
        unit.after.append(after)
        node.run_until_idle()
    else:
        after()


def inspect_flow(node: Node, run_id: StateMachineRunId) -> dict[str, Any]:
    """A flow's suspended stack (from its latest frame snapshot, locals as reprs), its
    sessions, progress step and what it waits for. KeyError when there is no such flow."""
    fiber = node._flows.get(run_id) or node._hospital_fibers.get(run_id)
    if fiber is not None:
        return describe(node, fiber)
    for entry in dump_checkpoints(node):
        if entry["run_id"] == str(run_id):
            return entry
    raise KeyError(f"no flow {run_id} on {node.party}")


def describe(node: Node, fiber: FlowStateMachine) -> dict[str, Any]:
    """A live flow as ``inspect_flow`` shows it."""
    flow_summary = summary(fiber)
    snapshot = fiber.snapshot
    hospital = node._hospital.get(fiber.run_id)
    return {
        "run_id": str(fiber.run_id),
        "flow_class": flow_summary.flow_class,
        "status": "HOSPITALIZED" if hospital else flow_summary.status,
        "diagnosis": hospital.diagnosis if hospital else None,
        "progress_step": flow_summary.progress_step,
        "waiting_for": snapshot.waiting if snapshot else flow_summary.waiting_for,
        "journal_records": fiber.journal_length,
        "sessions": [
            {
                "peer": str(s.peer),
                "session_id": s.session_id,
                "initiated_by_us": s.we_initiated,
                "next_send_seq": s.next_send_seq,
                "next_receive_seq": s.next_recv_seq,
                "peer_ended": s.peer_ended,
            }
            for s in fiber.sessions.values()
        ],
        "stack": (node.checkpoints.describe_frames(snapshot, fiber.live_flows())
                  if snapshot and node.durable else []),
    }


def dump_checkpoints(node: Node) -> list[dict[str, Any]]:
    """Every stored checkpoint as JSON-ready dicts (class, status, what it waits for, stack
    with locals, sessions, progress step); the live view for flows without storage."""
    if not node.durable:
        return [describe(node, f) for f in node._flows.values()]
    dumped = []
    for stored in node.checkpoints.load_flows():
        live = node._flows.get(stored.run_id) or node._hospital_fibers.get(stored.run_id)
        if live is not None:
            dumped.append(describe(node, live))
            continue
        hospital = node._hospital.get(stored.run_id)
        dumped.append(
            {
                "run_id": str(stored.run_id),
                "flow_class": stored.flow_class,
                "status": stored.status,
                "diagnosis": hospital.diagnosis if hospital else stored.diagnosis,
                "journal_records": len(stored.journal),
                "waiting_for": stored.snapshot.waiting if stored.snapshot else None,
                "stack": node.checkpoints.describe_frames(stored.snapshot)
                if stored.snapshot
                else [],
            }
        )
    return dumped


def summary(fiber: FlowStateMachine) -> FlowSummary:
    """One unfinished flow as operators see it."""
    tracker = fiber.flow.progress_tracker
    step = tracker.current_step.label if tracker is not None else None
    return FlowSummary(
        fiber.run_id,
        class_name(type(fiber.flow)),
        fiber.status.value,
        step,
        describe_wait(fiber.waiting) if fiber.waiting is not None else None,
    )
