"""The IO request handlers: the one place every request of a flow is performed, journaled and,
on replay, answered again from the journal.

``perform(machine, request)`` runs one ``fibers._io`` request for the state machine that made
it. Each handler follows the same pattern: while the restored flow replays, the next journal
record must match the request (else the flow is parked, see ``fibers._replay``) and its
recorded result is the answer; live, the request is performed, waiting (``machine.suspend``)
as long as its condition does not hold, and its result recorded. The session records a
request implies (``open`` on first contact, ``recv_end`` when the peer ended) are written by
the session table (``fibers._sessions``) on the handler's behalf, within the same request. The
records are listed in docs/checkpoint-format.md ("Journal records").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fibers import _io, _wire
from fibers._errors import UnexpectedFlowEndException
from fibers._flow_logic import FlowBinding, FlowInfo, binding_of
from fibers._identity import Party
from fibers._journal import (
    decode_error,
    digest,
    replay_datetime,
    replay_flow_info,
    replay_payload,
    replay_random,
    replay_seq,
)
from fibers._messages import Data
from fibers._session import FlowSession

if TYPE_CHECKING:
    from fibers._state_machine import FlowStateMachine

# Requests that may suspend the flow: the @suspendable check runs whether or not they actually
# wait, so the error does not depend on message timing.
# (A receive, which may suspend too, is not a request object: see ``receive``.)
SUSPENDING_REQUESTS = frozenset({_io.GetFlowInfo, _io.Sleep, _io.WaitForEvent})


def perform(machine: FlowStateMachine, request: _io.IORequest) -> Any:
    """Perform ``request`` for ``machine`` and return its result."""
    return _HANDLERS[type(request)](machine, request)


# ``send`` and ``receive`` are a flow's hot path: the flow's binding and arguments come
# straight from ``FlowLogic`` through the state machine, with no request object per message.


def send(machine: FlowStateMachine, binding: FlowBinding, party: Party, payload: object) -> None:
    """Send ``payload`` to ``party`` in the session of ``binding``'s session owner. (It is
    ``FlowStateMachine.send`` itself: one call less per message.)"""
    if machine.kill is not None or machine.finished:
        machine.end_killed()
    data = _wire.encode(payload)  # before touching the session: fail cleanly
    table, journal = machine.session_table, machine.journal
    session = table.open.get((binding.owner_index, party.name)) if type(party) is Party \
        else table.find(binding, party)  # (find refuses what is not a Party)
    if session is None:
        session = table.start(binding, party, first_payload=data)
    else:
        table.post(session, Data(data))
    if journal.journaling:
        key = ("send", session.owner_index, session.peer.name, digest(data))
        if journal.replayed(*key) is None:
            journal.record(key)


def receive(machine: FlowStateMachine, binding: FlowBinding, party: Party,
            expected_type: type, deadline: datetime | None) -> object:
    """Wait for the next payload from ``party`` (until ``deadline``, if given) in the session
    of ``binding``'s session owner, and check it is an ``expected_type``."""
    table, journal = machine.session_table, machine.journal
    session = table.open.get((binding.owner_index, party.name)) if type(party) is Party \
        else table.find(binding, party)  # (find refuses what is not a Party)
    if session is None:
        session = table.start(binding, party, None)
    peer, owner = session.peer.name, session.owner_index
    entry = None
    if journal.restoring:
        _replay_peer_end(machine, owner, peer)
        entry = journal.replayed("recv", owner, peer)
    if entry is not None:
        payload = replay_payload(entry)
        session.next_recv_seq = max(session.next_recv_seq, replay_seq(entry) + 1)
    else:
        if deadline is not None and not session.inbound:
            machine.node.schedule_wakeup(machine, deadline)
            machine.wake_deadline = deadline  # for the wake index (fibers._hibernation)
            try:
                _wait_for_data(machine, session, deadline)
            finally:
                machine.wake_deadline = None
        while not session.inbound:
            if session.peer_error is not None or session.rejected is not None \
                    or session.peer_ended:
                table.raise_if_peer_gone(session)
            machine.suspend(session)
        seq, payload = session.inbound.pop(0)
        if journal.journaling:
            machine.consumed.append((*session.inbox_key(), seq))
            journal.record(("recv", owner, peer, payload, seq))
    value = _wire.decode(payload)
    if type(value) is expected_type:  # the common case, without a call
        return value
    return _check_received_type(value, expected_type, session.peer)


def _wait_for_data(machine: FlowStateMachine, session: FlowSession, deadline: datetime) -> None:
    """Suspend until ``session`` has a message, raising its peer's end or the timeout."""
    table, clock = machine.session_table, machine.node.clock
    while not session.inbound:
        table.raise_if_peer_gone(session)
        if clock.now() >= deadline and not machine.handed_wake:
            machine.reach_checkpoint(session)  # restored (or woken) after its deadline
            table.time_out(session, deadline)
        machine.suspend(session)


def _get_flow_info(machine: FlowStateMachine, request: _io.GetFlowInfo) -> FlowInfo:
    table = machine.session_table
    binding = binding_of(request.flow)
    assert binding is not None, "requests come from running flows only"
    session = table.get(binding, request.party)
    peer, owner = session.peer.name, session.owner_index
    _replay_peer_end(machine, owner, peer)
    entry = machine.journal.replayed("info", owner, peer)
    if entry is not None:
        return replay_flow_info(entry)
    while session.peer_info is None:
        table.raise_if_peer_gone(session)
        machine.suspend(session)
    info = session.peer_info
    machine.journal.record(("info", owner, peer, info.flow_version, info.app_name))
    return info


def _replay_peer_end(machine: FlowStateMachine, owner: int, peer: str) -> None:
    """In replay, re-raise the counterparty's end where the journal recorded it."""
    entry = machine.journal.peek()
    if entry is not None and entry[:3] == ("recv_end", owner, peer):
        entry = machine.journal.replayed("recv_end", owner, peer)
        assert entry is not None
        error = decode_error(entry[3])
        machine.session_table.note_received(error)
        raise error


def _now(machine: FlowStateMachine, request: _io.Now) -> datetime:
    entry = machine.journal.replayed("now")
    if entry is not None:
        return replay_datetime(entry)
    now = machine.node.clock.now()
    machine.journal.record(("now", now))
    return now


def _service_call(machine: FlowStateMachine, request: _io.ServiceCall) -> object:
    journal = machine.journal
    key = ("service", request.operation, request.arguments)
    entry = journal.replayed(*key)
    if entry is not None:
        return machine.node.checkpoints_loads(entry[3])
    journal.check_live(key)  # before the effect, not only before its record
    result = request.perform()
    if journal.journaling:
        journal.record((*key, machine.node.checkpoints_dumps(result)))
    return result


def _random_bytes(machine: FlowStateMachine, request: _io.RandomBytes) -> bytes:
    entry = machine.journal.replayed("random", request.count)
    if entry is not None:
        return replay_random(entry)
    value = os.urandom(request.count)
    machine.journal.record(("random", request.count, value))
    return value


def _wait_for_event(machine: FlowStateMachine, request: _io.WaitForEvent) -> object:
    replayed = machine.journal.replayed("event", request.key) is not None
    value = request.check()
    if value is not None and not replayed:
        machine.reach_checkpoint(request)  # it happened while the node was down
    while value is None:
        if replayed:
            machine.journal.diverged(
                f"the event {request.key!r} it had seen is not there any more")
        machine.node.await_event(machine, request.key)
        machine.suspend(request)
        value = request.check()
    if not replayed:
        machine.journal.record(("event", request.key))
    return value


def _sleep(machine: FlowStateMachine, request: _io.Sleep) -> None:
    journal, clock = machine.journal, machine.node.clock
    entry = journal.replayed("sleep")
    if entry is not None:
        if journal.replaying:  # a sleep the flow had finished before its checkpoint
            return
        deadline = replay_datetime(entry)
    else:
        deadline = clock.now() + timedelta(seconds=request.seconds)
        journal.record(("sleep", deadline))
    if clock.now() >= deadline:
        machine.reach_checkpoint(deadline)  # restored after its deadline: wake and go on
        return
    machine.node.schedule_wakeup(machine, deadline)
    while clock.now() < deadline:
        machine.suspend(deadline)


_HANDLERS: dict[type, Callable[[FlowStateMachine, Any], Any]] = {
    _io.GetFlowInfo: _get_flow_info,
    _io.Now: _now,
    _io.Sleep: _sleep,
    _io.ServiceCall: _service_call,
    _io.RandomBytes: _random_bytes,
    _io.WaitForEvent: _wait_for_event,
}


def _check_received_type(value: object, expected: type, peer: Party) -> object:
    origin: Any = getattr(expected, "__origin__", None) or expected
    if isinstance(value, origin):
        return value
    raise UnexpectedFlowEndException(
        f"Expected to receive {_type_name(expected)} from {peer} but got "
        f"{type(value).__qualname__}: {_short_repr(value)}"
    )


def _type_name(expected: type) -> str:
    return getattr(expected, "__qualname__", None) or repr(expected)


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
