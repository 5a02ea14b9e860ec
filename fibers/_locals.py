"""The frame snapshot policy, and a flow's locals captured outside its steps.

A node's ``snapshot_locals`` setting says when the locals of a flow's ``@suspendable`` frames
are serialised (docs/checkpoint-format.md, "Frame snapshots"):

* ``"on_demand"`` (the default): each step record holds the call chain, lines and what the flow
  waits for (restore verifies them), not the locals. They are captured only when someone needs
  them: the flow goes to the hospital while its frames exist, it is inspected (shown, not
  stored), or it hibernates. A capture that is stored goes to the ``locals`` database, one
  record per flow, overwritten by the next capture and deleted with the flow.
* ``"every_step"`` (an audit setting): the locals are also pickled into every step record that
  did IO, as before this setting existed.

Either way, large frozen values among the locals are stored once per flow by content
(``values`` database) and referenced (``fibers._frame_snapshots``, ``VALUE_THRESHOLD``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from fibers import _wire
from fibers._flow_logic import StateMachineRunId
from fibers._journal import Snapshot

__all__ = [
    "DEFAULT_SNAPSHOT_LOCALS",
    "CapturedLocals",
    "SnapshotLocals",
    "check_snapshot_locals",
    "decode_locals",
    "encode_locals",
]

SnapshotLocals = Literal["on_demand", "every_step"]
"""When a node serialises its flows' locals (see the module docstring)."""

DEFAULT_SNAPSHOT_LOCALS: Final[SnapshotLocals] = "on_demand"
_POLICIES: Final[tuple[str, ...]] = get_args(SnapshotLocals)


def check_snapshot_locals(value: object) -> SnapshotLocals:
    """``value`` as a ``SnapshotLocals`` setting; ``ValueError`` naming the choices if it is
    none of them."""
    if isinstance(value, str) and value in _POLICIES:
        return value  # type: ignore[return-value]  # one of the Literal's values
    raise ValueError(
        f"snapshot_locals must be 'on_demand' (the default: locals are captured when a flow "
        f"goes to the hospital, hibernates or is inspected) or 'every_step' (audit: locals in "
        f"every step record), not {value!r}")


@dataclass(frozen=True, slots=True)
class CapturedLocals:
    """A flow's locals serialised outside its steps (``FlowStateMachine.capture_locals``):
    where it stood (``snapshot``, with its frames' locals), after how many journal records, and
    the content-addressed values its frames reference that this capture must store, as
    ``(digest, checkpoint pickle)``. ``CheckpointStore.write_locals`` writes it."""

    run_id: StateMachineRunId
    journal_length: int
    snapshot: Snapshot
    values: tuple[tuple[bytes, bytes], ...]

    def value(self, digest: bytes) -> bytes | None:
        """The pickle of a value this capture carries, or None."""
        for known, pickled in self.values:
            if known == digest:
                return pickled
        return None


def encode_locals(captured: CapturedLocals) -> bytes:
    """The payload of a ``locals`` record: ``(journal_length, call_chain, lines, waiting,
    frames)``, wire-encoded."""
    s = captured.snapshot
    return _wire.encode((captured.journal_length, s.call_chain, s.lines, s.waiting, s.frames))


def decode_locals(data: bytes) -> tuple[int, Snapshot]:
    """A ``locals`` record's ``(journal_length, snapshot)``; ``ValueError`` if malformed."""
    values = _wire.decode(data)
    if isinstance(values, tuple) and len(values) == 5:
        length, chain, lines, waiting, frames = values
        if (isinstance(length, int) and isinstance(chain, tuple) and isinstance(lines, tuple)
                and isinstance(waiting, str) and isinstance(frames, bytes)):
            return length, Snapshot(chain, lines, waiting, frames)
    raise ValueError("the stored locals are not (journal length, call chain, lines, waiting, "
                     "frames)")
