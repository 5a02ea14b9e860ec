"""The step record's payload: one step's journal entries and the frame snapshot it suspended in.

Encoded with the wire codec as ``(journal_start, entries, snapshot)``, the snapshot as
``(call_chain, lines, waiting, frames)`` or None; the checkpoint store seals it under the key
``run id + journal_start`` (database ``steps``). docs/checkpoint-format.md ("Step records")
describes it; tests/fibers/golden pins it byte for byte.
"""

from __future__ import annotations

from typing import Any

from fibers import _wire
from fibers._journal import JournalEntry, Snapshot


def encode_step(journal_start: int, journal: list[JournalEntry],
                snapshot: Snapshot | None) -> bytes:
    """The payload of a step record: ``(journal_start, entries, snapshot)``, wire-encoded;
    ``snapshot`` as ``(call_chain, lines, waiting, frames)`` or None."""
    value = (journal_start, tuple(journal), None if snapshot is None else (
        snapshot.call_chain, snapshot.lines, snapshot.waiting, snapshot.frames))
    # What _wire.encode builds for ``value``, built here without its recursion (same bytes).
    mark, plain = _wire.TUPLE_MARK, _wire.PLAIN.issuperset
    entries: list[Any] = [mark]
    for entry in journal:
        if type(entry) is not tuple or not plain(map(type, entry)):
            return _wire.encode(value)
        entries.append([mark, *entry])
    built = None
    if snapshot is not None:
        chain, lines = snapshot.call_chain, snapshot.lines
        if not (type(chain) is tuple and type(lines) is tuple and plain(map(type, chain))
                and plain(map(type, lines)) and type(snapshot.waiting) is str
                and type(snapshot.frames) is bytes and type(journal_start) is int):
            return _wire.encode(value)
        built = [mark, [mark, *chain], [mark, *lines], snapshot.waiting, snapshot.frames]
    return _wire.encode_built([mark, journal_start, entries, built], value)


def decode_step(data: bytes) -> tuple[int, list[JournalEntry], Snapshot | None]:
    """A step record's ``(journal_start, entries, snapshot)`` (see ``encode_step``)."""
    values = _wire.decode(data)
    if not (isinstance(values, tuple) and len(values) == 3 and isinstance(values[0], int)
            and isinstance(values[1], tuple)):
        raise ValueError("the stored step is not (journal start, entries, snapshot)")
    start, entries, snapshot = values
    journal = [_checked_entry(entry) for entry in entries]
    return start, journal, None if snapshot is None else _snapshot_of(snapshot)


def _checked_entry(entry: object) -> JournalEntry:
    if not isinstance(entry, tuple) or not entry or not isinstance(entry[0], str):
        raise ValueError(f"not a journal entry: {type(entry).__qualname__}")
    return entry


def _snapshot_of(values: object) -> Snapshot:
    if not (isinstance(values, tuple) and len(values) == 4):
        raise ValueError("the stored snapshot is not (call chain, lines, waiting, frames)")
    chain, lines, waiting, frames = values
    if not (isinstance(chain, tuple) and isinstance(lines, tuple) and isinstance(waiting, str)
            and isinstance(frames, bytes)):
        raise ValueError("the stored snapshot is not (call chain, lines, waiting, frames)")
    return Snapshot(chain, lines, waiting, frames)
