"""Replay: how a restored flow finds its way back to its checkpoint.

A restored flow re-runs its code from the start. Each request it makes is answered from its
journal (``fibers._journal``) instead of being performed, until the journal is used up; then
the next request must be the checkpoint's *pending* request, the one its frame snapshot was
taken in. ``Replay`` holds the journal cursor and that expected snapshot, and words what went
wrong when the code does something else. ``FlowJournal`` is the journal part of one state
machine: the records of the current step (live) and the ``Replay`` of a restored flow; on a
divergence it calls the state machine back, which parks the flow (see docs/checkpoint-format.md,
"Journal records" and "Replay").

Replay is complete: ending, failing, or making any request other than the recorded ones and
then the pending one is a divergence, detected before anything the flow produced can leave the
node (replayed messages are never emitted again; a new one is refused before it is recorded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from fibers._journal import JournalEntry, Snapshot, describe_entry


class Replay:
    """The journal cursor and expected checkpoint of one restored flow."""

    __slots__ = ("_entries", "_position", "expected")

    def __init__(self, journal: list[JournalEntry], expected: Snapshot | None) -> None:
        # Invariant: 0 <= _position <= len(_entries); entries before _position were answered.
        self._entries = journal
        self._position = 0
        # Invariant: set until the flow reaches the checkpoint's pending request (None for a
        # flow whose checkpoint has no snapshot: only its start record).
        self.expected = expected

    @property
    def replaying(self) -> bool:
        """Whether journal records remain to be answered."""
        return self._position < len(self._entries)

    @property
    def done(self) -> bool:
        """Whether the flow is past its checkpoint: journal used up, pending request reached."""
        return not self.replaying and self.expected is None

    def peek(self) -> JournalEntry | None:
        """The next journal record, or None when the journal is used up."""
        return self._entries[self._position] if self.replaying else None

    def advance(self) -> None:
        """The next record was answered."""
        self._position += 1

    def divergence(self, what: str, journal_length: int) -> str:
        """Where the code went astray, in words: the record it should have matched (index,
        kind and what it says, or the checkpoint's pending request) and ``what`` it did."""
        entry = self.peek()
        if entry is not None:
            return (f"journal record {self._position} ({entry[0]}): the journal says "
                    f"{describe_entry(entry)}, but {what}")
        expected = self.expected
        assert expected is not None
        return (f"journal record {journal_length} (the checkpoint's pending request): the "
                f"checkpoint waits for {expected.waiting} in "
                f"{' > '.join(expected.call_chain) or 'call'}, but {what}")

    @staticmethod
    def misplaced(expected: Snapshot, actual: Snapshot, journal_length: int) -> str | None:
        """Why the flow did not reach its checkpoint's pending request where the checkpoint
        says (call chain and what it waits for), or None when it did. Moved lines are
        allowed: a compatible edit."""
        if expected.call_chain == actual.call_chain and expected.waiting == actual.waiting:
            return None
        return (
            f"it resumed at a different place than its checkpoint (journal record "
            f"{journal_length}, the checkpoint's pending request): the checkpoint was "
            f"suspended in {' > '.join(expected.call_chain)} waiting for {expected.waiting}; "
            f"the code now suspends in {' > '.join(actual.call_chain)} waiting for "
            f"{actual.waiting}"
        )


class FlowJournal:
    """The journal of one state machine: what its requests recorded in the current step, and
    while it is restored, the way back to its checkpoint.

    ``diverge(where)`` is called (and does not return) when the code does not do what the
    records say; ``where`` names the record and what the code did instead."""

    __slots__ = ("_diverge", "_replay", "journaling", "length", "new_entries", "restoring")

    def __init__(self, journaling: bool, diverge: Callable[[str], NoReturn]) -> None:
        self.journaling = journaling
        self._diverge = diverge
        # Invariant: length counts every record the flow made, committed or in new_entries
        # (so a step's records are stored at indexes length - len(new_entries) onwards).
        self.length = 0
        self.new_entries: list[JournalEntry] = []
        # None while live: the replay ends when the restored flow reaches its checkpoint.
        self._replay: Replay | None = None
        # Invariant: restoring is (_replay is not None): a field, so that a live request
        # (nearly all of them) learns it has nothing to replay without a call.
        self.restoring = False

    def start_replay(self, journal: list[JournalEntry], expected: Snapshot | None) -> None:
        """Answer the next requests from ``journal`` (a restore), then expect ``expected``."""
        self._replay = Replay(journal, expected) if journal or expected is not None else None
        self.restoring = self._replay is not None
        self.length = len(journal)

    @property
    def replaying(self) -> bool:
        """Whether the flow is re-running requests answered from its journal."""
        return self._replay is not None and self._replay.replaying

    def peek(self) -> JournalEntry | None:
        """The next record to replay, or None when live or the journal is used up."""
        return self._replay.peek() if self._replay is not None else None

    def replayed(self, *key: object) -> JournalEntry | None:
        """In replay: the next record, checked to start with ``key`` (else a divergence); None
        when the journal is used up or there is none."""
        replay = self._replay
        entry = replay.peek() if replay is not None else None
        if entry is None:
            return None
        assert replay is not None
        if entry[: len(key)] != key:
            self.diverged(f"the code now did {describe_entry(key)}")
        replay.advance()
        return entry

    def record(self, entry: JournalEntry) -> None:
        """Record a completed live request (refused while the checkpoint is not reached)."""
        self.check_live(entry)
        if self.journaling:
            self.new_entries.append(entry)
            self.length += 1

    def check_live(self, key: tuple[object, ...]) -> None:
        """A request the journal does not hold is refused until the restored flow has reached
        its checkpoint's pending request: a new request there would be new output."""
        if self._replay is not None and self._replay.expected is not None:
            self.diverged(f"the code now did {describe_entry(key)} first")

    def check_done(self, outcome: str) -> None:
        """A restored flow may only end once past its checkpoint; ``outcome`` is how it
        ended ("returned", "raised ...")."""
        if self._replay is not None and not self._replay.done:
            self.diverged(f"the code now {outcome}")

    def take_expected(self) -> Snapshot | None:
        """The checkpoint a restored flow that used up its journal must now be at (None when
        there is none to check); the replay is over after this."""
        replay = self._replay
        if replay is None or replay.replaying:
            return None
        self._replay = None
        self.restoring = False
        return replay.expected

    def misplaced(self, expected: Snapshot, actual: Snapshot) -> str | None:
        """Why the flow is not where its checkpoint says (see ``Replay.misplaced``)."""
        return Replay.misplaced(expected, actual, self.length)

    def diverged(self, what: str) -> NoReturn:
        """Report that the code did ``what`` where the records say otherwise."""
        assert self._replay is not None
        self._diverge(self._replay.divergence(what, self.length))
