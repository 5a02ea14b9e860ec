"""Replay: how a restored flow finds its way back to its checkpoint.

A restored flow re-runs its code from the start. Each request it makes is answered from its
journal (``fibers._journal``) instead of being performed, until the journal is used up; then
the next request must be the checkpoint's *pending* request, the one its frame snapshot was
taken in. ``Replay`` holds the journal cursor and that expected snapshot, and words what went
wrong when the code does something else (the flow state machine parks the flow with it).

Replay is complete: ending, failing, or making any request other than the recorded ones and
then the pending one is a divergence, detected before anything the flow produced can leave the
node (replayed messages are never emitted again; a new one is refused before it is recorded).
"""

from __future__ import annotations

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
