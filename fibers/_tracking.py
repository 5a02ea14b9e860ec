"""Feeds derived from a flow's progress tracker for ``FlowProgressHandle``."""

from __future__ import annotations

from fibers._progress import Change, Position, ProgressTracker
from fibers._stream import Stream


def label_stream(tracker: ProgressTracker) -> Stream[str]:
    """A stream of the label of every step ``tracker`` or any of its children moves to, in
    order, ending when the tracker ends (with its error, if it failed)."""
    labels: Stream[str] = Stream()

    def on_change(change: Change) -> None:
        if isinstance(change, Position):
            labels.publish(change.new_step.label)

    tracker.changes.subscribe(on_change, labels.fail, labels.complete)
    return labels
