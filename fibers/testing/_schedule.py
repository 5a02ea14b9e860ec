"""Schedules of the simulation explorer: the choices they are made of, their text form, and the
labelled in-memory network the choices name messages on (see ``fibers.testing._explore``).

A choice is one event of a simulated run, written as text so that a schedule can be printed and
replayed:

=======================  ======================================================================
``A>B#3``                deliver the fourth frame A sent to B (counted over every frame A ever
                         sent B, re-sent ones included)
``dup A>B#3``            deliver that (already delivered) frame to B once more: right after
                         the original, or once the network is quiet
``timers``               move the clock to the earliest deadline of any node (sleeps, retries,
                         re-sending of unacknowledged messages) and fire what is due
``... !B<1``             ... and crash B just before its commit number 1 of this event
``... !B>1``             ... and crash B just after that commit (stored, nothing sent or acked)
``... !B~4``             ... and fail B's storage write number 4 of this event
``... !B<1 r>0``         ... crash, then crash again just after commit 0 of B's restore
=======================  ======================================================================

Acknowledgements are not choices: they are delivered as soon as they are sent. An
acknowledgement only lets its recipient forget a message; a late or lost one makes the sender
send the message again, which the duplicates and the crashes (before a commit, or after it and
before its acknowledgements leave) already cover, and making them choices would multiply the
orders to explore for nothing.

Commits and writes are numbered from 0 within the event (a node restarted after a crash numbers
its restore's commits from 0 again). A crashed node is restarted at once from its storage, so
every choice touches only the node(s) it names: a delivery or duplicate its recipient, ``timers``
every node. That is the independence relation the explorer's partial-order reduction uses.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from fibers._errors import SerializationError
from fibers._messages import Ack, InitialSessionMessage, decode_message
from fibers.transport import InFlightMessage, InMemoryNetwork

__all__ = ["ALL", "Choice", "Fault", "LabelledNetwork", "ScheduleError", "format_schedule",
           "parse_schedule"]

ALL = "*"
"""The node set of an event that touches every node (``timers``, the end of a run)."""


class ScheduleError(ValueError):
    """A schedule's text is malformed, or names an event that never becomes possible."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Where a choice crashes a node or fails one of its writes (see the module docstring)."""

    node: str
    point: str  # "<" before a commit, ">" after it, "~" a storage write failing
    index: int
    restore: tuple[str, int] | None = None  # a crash during the restart: ("<" | ">", commit)

    def __str__(self) -> str:
        text = f"!{self.node}{self.point}{self.index}"
        if self.restore is not None:
            text += f" r{self.restore[0]}{self.restore[1]}"
        return text

    @property
    def is_crash(self) -> bool:
        return self.point in "<>"


@dataclass(frozen=True, slots=True)
class Choice:
    """One event of a schedule: ``kind`` is "deliver", "dup", "timers" or "end" (the run stops
    and the invariant is checked: only chosen while duplicates could still be made)."""

    kind: str
    sender: str = ""
    recipient: str = ""
    number: int = 0
    fault: Fault | None = None

    @property
    def base(self) -> Choice:
        """This choice without its fault."""
        return Choice(self.kind, self.sender, self.recipient, self.number)

    @property
    def nodes(self) -> frozenset[str]:
        """The nodes this event may change (``ALL``: every node)."""
        if self.kind in ("deliver", "dup"):
            return frozenset((self.recipient,))
        return frozenset((ALL,))

    def independent_of(self, other: Choice) -> bool:
        """Whether running the two in either order ends in the same state."""
        mine, theirs = self.nodes, other.nodes
        return ALL not in mine and ALL not in theirs and not mine & theirs

    def with_fault(self, fault: Fault | None) -> Choice:
        return Choice(self.kind, self.sender, self.recipient, self.number, fault)

    def __str__(self) -> str:
        if self.kind in ("timers", "end"):
            text = self.kind
        else:
            text = f"{self.sender}>{self.recipient}#{self.number}"
            if self.kind == "dup":
                text = "dup " + text
        return text if self.fault is None else f"{text} {self.fault}"


_CHOICE = re.compile(
    r"^(?:(?P<timers>timers)|(?P<end>end)|(?P<dup>dup )?(?P<sender>[^>#!,]+)>"
    r"(?P<recipient>[^>#!,]+)#(?P<number>\d+))"
    r"(?: !(?P<node>[^<>~!,]+)(?P<point>[<>~])(?P<index>\d+)"
    r"(?: r(?P<rpoint>[<>])(?P<rindex>\d+))?)?$"
)


def parse_choice(text: str) -> Choice:
    """The choice written as ``text`` (the module docstring lists the forms)."""
    match = _CHOICE.match(text.strip())
    if match is None:
        raise ScheduleError(f"{text!r} is not a schedule choice: expected e.g. 'A>B#0', "
                            "'dup A>B#0', 'timers' or 'A>B#0 !B<0'")
    fault = None
    if match["node"] is not None:
        restore = None
        if match["rpoint"] is not None:
            if match["point"] == "~":
                raise ScheduleError(f"{text!r}: only a crash is followed by a restore crash")
            restore = (match["rpoint"], int(match["rindex"]))
        fault = Fault(match["node"], match["point"], int(match["index"]), restore)
    if match["timers"] or match["end"]:
        return Choice("timers" if match["timers"] else "end", fault=fault)
    kind = "dup" if match["dup"] else "deliver"
    return Choice(kind, match["sender"], match["recipient"], int(match["number"]), fault)


def parse_schedule(text: str) -> list[Choice]:
    """The choices of a schedule written as ``format_schedule`` writes it."""
    return [parse_choice(part) for part in text.split(",") if part.strip()]


def format_schedule(choices: list[Choice]) -> str:
    """The text of a schedule: its choices separated by commas (``end`` left out)."""
    return ", ".join(str(c) for c in choices if c.kind != "end")


def channel_of(frame: bytes) -> object:
    """Which ordered stream ``frame`` belongs to between its two parties: its session and
    direction, or the acknowledgements (malformed frames each stand alone)."""
    try:
        message = decode_message(frame)
    except SerializationError:
        return ("malformed", id(frame))
    if isinstance(message, Ack):
        return "ack"
    if isinstance(message, InitialSessionMessage):
        return (message.initiator_session_id, False)
    return (message.session_id, message.to_initiator)


class LabelledNetwork(InMemoryNetwork):
    """An ``InMemoryNetwork`` numbering the frames each party sends each other party, so that a
    schedule can name them (``A>B#3``) the same way in every run, whatever happened elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self._sent: dict[tuple[str, str], int] = defaultdict(int)
        # Invariant: every frame in `queue` has its number here (by identity; removed when
        # the frame leaves the queue).
        self.numbers: dict[int, int] = {}
        self._channels: dict[int, object] = {}  # channel_of each queued frame, by identity

    def post(self, message: InFlightMessage) -> None:
        pair = (message.sender.name, message.recipient.name)
        with self._lock:
            self.numbers[id(message)] = self._sent[pair]
            self._channels[id(message)] = channel_of(message.frame)
            self._sent[pair] += 1
            self.queue.append(message)

    def candidates(self) -> list[tuple[Choice, InFlightMessage]]:
        """The frames that may be delivered next, in queue order: of each stream between two
        started parties (see ``channel_of``), the oldest."""
        seen: set[tuple[str, str, object]] = set()
        found = []
        with self._lock:
            for message in self.queue:
                if message.recipient.name not in self._receivers:
                    continue
                key = (message.sender.name, message.recipient.name,
                       self._channels[id(message)])
                if key in seen:
                    continue
                seen.add(key)
                found.append((Choice("deliver", message.sender.name, message.recipient.name,
                                     self.numbers[id(message)]), message))
        return found

    def acknowledgements(self) -> list[InFlightMessage]:
        """The queued acknowledgements to started parties, in queue order."""
        with self._lock:
            return [m for m in self.queue if m.recipient.name in self._receivers
                    and self._channels[id(m)] == "ack"]

    def hand_over(self, message: InFlightMessage) -> None:
        """Take this very frame (not an equal one) out of the queue and give it to its
        recipient's deliver callback."""
        with self._lock:
            for i, queued in enumerate(self.queue):
                if queued is message:
                    del self.queue[i]
                    break
            else:
                raise ScheduleError(f"{message.sender}>{message.recipient}: not queued")
            del self.numbers[id(message)], self._channels[id(message)]
            deliver = self._receivers[message.recipient.name]
        deliver(message.sender, [message.frame])
