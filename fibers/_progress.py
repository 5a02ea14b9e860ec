"""Progress tracking: where a flow has got to, as a tree of steps that observers can render.

A :class:`ProgressTracker` walks ``[UNSTARTED, STARTING, *user steps, DONE]``; any step may
carry a child tracker, which makes a tree. A tracker publishes its own events and those of all
its descendants on ``changes``, so observers subscribe to the top tracker only.

The flattened tree (``steps_tree``, ``all_steps``) lists the top tracker's steps without
UNSTARTED, each followed by its child's steps (depth + 1, recursively) without the child's
UNSTARTED, STARTING and DONE. ``steps_tree_index`` is the position there of the deepest current
step that is listed (-1 while the top tracker is UNSTARTED). Its stream,
``steps_tree_index_changes``, starts at 0 (a tracker that has not started is about to enter
row 0, STARTING), so that, as in Corda, a subscriber always first receives a current index.

Threading: one thread (the scheduler's) drives a tracker; its streams deliver in that thread.

Checkpoints: a tracker pickles with its position, error and children; its streams are transient
and a restored tracker's start from its current state (a Position unless UNSTARTED, the tree,
the index, then the end if it had ended).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from rich.tree import Tree

from fibers._progress_view import render_tracker
from fibers._stream import Stream

__all__ = ["Change", "Position", "ProgressTracker", "Rendering", "Step", "Structural"]

_ENDED = "cannot rewind a progress tracker once it has ended"


class Step:
    """One stage of a piece of work, shown to humans by its :attr:`label`.

    Usually class-level constants of a flow class, shared by all its instances. Identity is
    ``(type, id)``, ``id`` being the initial label unless given, so a restored step equals the
    one pickled. A class attribute pickles by reference (restored as the very same object);
    other steps pickle by value.
    """

    # The sentinels are shared by every tracker in the process: relabelling one is refused.
    _relabelable: ClassVar[bool] = True

    def __init__(self, label: str, *, id: str | None = None) -> None:
        if not isinstance(label, str):
            raise TypeError(f"a step label must be a str, got {label!r}")
        self._label = label
        self._id = label if id is None else id
        self._home: tuple[type, str] | None = None

    @property
    def id(self) -> str:
        """The stable identity of this step within its type (the initial label by default)."""
        return self._id

    @property
    def label(self) -> str:
        """The text shown for this step.

        Setting a new label publishes ``Rendering(tracker, step)`` through every live tracker
        that contains this step (and their ancestors), synchronously in the calling thread: so
        relabel only steps whose trackers all run on that thread (per-flow steps, or constants
        of flows run by one node).
        """
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        if not self._relabelable:
            raise AttributeError(f"the sentinel step {self._label!r} cannot be relabelled")
        if value == self._label:
            return
        for tracker in list(self._trackers()):
            tracker._ready()
        self._label = value
        for tracker in list(self._trackers()):
            tracker._emit(Rendering(tracker, self))

    def child_tracker(self) -> ProgressTracker | None:
        """A fresh tracker to attach as this step's child when the step becomes current.

        Override in subclasses to pre-declare a sub-task's steps. Called each time the step
        becomes current without a child, so return a new tracker on each call.
        """
        return None

    def _trackers(self) -> weakref.WeakSet[ProgressTracker]:
        # Created lazily: a step can be asked for it while a checkpoint is still being loaded.
        trackers: weakref.WeakSet[ProgressTracker] | None = self.__dict__.get("_tracker_set")
        if trackers is None:
            trackers = self.__dict__["_tracker_set"] = weakref.WeakSet()
        return trackers

    def __set_name__(self, owner: type, name: str) -> None:
        if self._home is None:
            self._home = (owner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        home = _importable_home(self)
        if home is not None:
            return (getattr, home)
        state = {k: v for k, v in self.__dict__.items() if k not in ("_tracker_set", "_home")}
        return (_new_step, (type(self),), state)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_home", None)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Step):
            return NotImplemented
        return type(self) is type(other) and self._id == other._id

    def __hash__(self) -> int:
        # Equal steps have equal ids, so hashing the id alone is consistent with __eq__; a str
        # caches its own hash, which makes this cheap in the trackers' dict lookups.
        return hash(self._id)

    def __repr__(self) -> str:
        id_part = "" if self._id == self._label else f", id={self._id!r}"
        return f"{type(self).__name__}({self._label!r}{id_part})"


def _new_step(cls: type[Step]) -> Step:
    return cls.__new__(cls)


def _importable_home(step: Step) -> tuple[type, str] | None:
    """The class attribute ``step`` can be pickled as, if unpickling will find it there."""
    if step._home is None:
        return None
    owner, name = step._home
    # dill pickles __main__ and local classes by value, which would recurse through the step.
    if owner.__module__ == "__main__":
        return None
    target: object = sys.modules.get(owner.__module__)
    for part in owner.__qualname__.split("."):
        target = getattr(target, part, None)
    if target is owner and owner.__dict__.get(name) is step:
        return step._home
    return None


class _SentinelStep(Step):
    _relabelable = False

    def __repr__(self) -> str:
        return f"ProgressTracker.{self.label.upper()}"


@dataclass(frozen=True)
class Change:
    """A change in ``tracker`` or one of its descendants, as published on ``changes``."""

    tracker: ProgressTracker


@dataclass(frozen=True)
class Position(Change):
    """``tracker`` moved to ``new_step``."""

    new_step: Step


@dataclass(frozen=True)
class Structural(Change):
    """A child tracker was attached to or removed from ``parent``, a step of ``tracker``."""

    parent: Step


@dataclass(frozen=True)
class Rendering(Change):
    """``step`` of ``tracker`` must be redrawn: it was relabelled, or ``tracker`` failed there."""

    step: Step


class _Streams:
    """A tracker's transient feeds and the last tree/index values they published."""

    def __init__(self) -> None:
        self.changes: Stream[Change] = Stream()
        self.tree: Stream[list[tuple[int, str]]] = Stream()
        self.index: Stream[int] = Stream()
        self.last_tree: list[tuple[int, str]] | None = None
        self.last_index = -1
        # The tracker's _Flat that last_tree was compared against: while the tracker still holds
        # that very object, its tree cannot have changed and the comparison is skipped.
        self.seen_flat: _Flat | None = None

    def end(self, error: BaseException | None) -> None:
        for stream in (self.changes, self.tree, self.index):
            stream.complete() if error is None else stream.fail(error)


class _Flat:
    """A tracker's flattened tree, cached until a Structural or Rendering passes through it.

    ``entries`` are the ``(depth, step, tracker)`` rows of the tree, ``tree`` their
    ``(depth, label)`` pairs; ``positions`` maps ``(id(tracker), index of the step in
    tracker._steps)`` to the row listing it (keyed by tracker identity: the same Step may appear
    in a parent and in its child).
    """

    __slots__ = ("entries", "positions", "tree")

    def __init__(self, rows: list[tuple[int, int, ProgressTracker]]) -> None:
        self.entries = [(depth, tracker._steps[i], tracker) for depth, i, tracker in rows]
        self.tree = [(depth, step.label) for depth, step, _ in self.entries]
        self.positions = {(id(tracker), i): row for row, (_, i, tracker) in enumerate(rows)}


class ProgressTracker:
    """The progress of one piece of work through a fixed list of steps, with child trackers.

    Starts at UNSTARTED; step ids must be unique. The framework sets STARTING, DONE and the
    error; the flow sets the steps in between, in any order, until the tracker has ended.
    """

    Change: TypeAlias = Change
    Position: TypeAlias = Position
    Structural: TypeAlias = Structural
    Rendering: TypeAlias = Rendering

    UNSTARTED: ClassVar[Step] = _SentinelStep("Unstarted")
    STARTING: ClassVar[Step] = _SentinelStep("Starting")
    DONE: ClassVar[Step] = _SentinelStep("Done")

    def __init__(self, *steps: Step) -> None:
        for step in steps:
            if not isinstance(step, Step):
                raise TypeError(f"ProgressTracker takes Step objects, got {step!r}")
        all_steps = [self.UNSTARTED, self.STARTING, *steps, self.DONE]
        ids = [step.id for step in all_steps]
        if duplicates := [i for n, i in enumerate(ids) if i in ids[:n]]:
            raise ValueError(
                f"duplicate step {duplicates[0]!r} in progress tracker: step ids must be unique"
                " within a tracker ('Unstarted', 'Starting' and 'Done' are reserved);"
                " give one of them a different label or id="
            )
        self._steps = all_steps
        # Invariant: 0 <= _index < len(_steps); _steps[_index] is the current step.
        self._index = 0
        self._children: dict[Step, ProgressTracker] = {}
        self._parent: ProgressTracker | None = None
        self._error: BaseException | None = None
        self._streams: _Streams | None = _Streams()
        self._flat: _Flat | None = None
        self._register_with_steps()
        self._refresh()

    # -- position ---------------------------------------------------------------------------

    @property
    def steps(self) -> list[Step]:
        """All steps, sentinels included: ``[UNSTARTED, STARTING, *user steps, DONE]``."""
        return list(self._steps)

    @property
    def step_index(self) -> int:
        """The index of the current step in :attr:`steps`."""
        return self._index

    @property
    def current_step(self) -> Step:
        """The current step.

        Setting the same step is a no-op; a step not in this tracker, or any other step once
        the tracker has ended, raises ValueError. Moving backwards removes the children of every
        step rolled back through, the new step included (their sub-tasks will be redone). Moving
        onto a step without a child attaches ``step.child_tracker()`` if it returns one
        (Structural is published before Position).
        """
        return self._steps[self._index]

    @current_step.setter
    def current_step(self, step: Step) -> None:
        index = self._index_of(step)
        if index == self._index and self._error is None:
            return
        if self.has_ended:
            raise ValueError(_ENDED)
        self._move_to(index)

    def next_step(self) -> Step:
        """Advance to the following step and return it; raises ValueError once ended."""
        if self.has_ended:
            raise ValueError(_ENDED)
        self.current_step = self._steps[self._index + 1]
        return self.current_step

    @property
    def has_ended(self) -> bool:
        """True once the tracker is at DONE or :meth:`end_with_error` was called."""
        return self._error is not None or self._index == len(self._steps) - 1

    @property
    def error(self) -> BaseException | None:
        """The exception passed to :meth:`end_with_error`, or None."""
        return self._error

    def end_with_error(self, exc: BaseException) -> None:
        """End the tracker at its current step with ``exc``: its three streams fail with it.

        Ancestors stay open (a parent flow may catch a sub-flow's exception and carry on) and
        receive ``Rendering(self, current_step)``. ValueError if the tracker has already ended.
        """
        if self.has_ended:
            how = f"with {self._error!r}" if self._error is not None else "at Done"
            raise ValueError(f"progress tracker has already ended {how}")
        self._ready()
        self._error = exc
        self._live_streams().end(exc)
        if self._parent is not None:
            self._parent._emit(Rendering(self, self.current_step))

    def _index_of(self, step: Step) -> int:
        if not isinstance(step, Step):
            raise TypeError(f"expected a Step, got {step!r} ({type(step).__name__})")
        try:
            index = self._steps.index(step)
        except ValueError:
            labels = ", ".join(repr(s.label) for s in self._steps)
            raise ValueError(
                f"step {step.label!r} is not in this progress tracker; its steps are: {labels}"
            ) from None
        return index

    def _move_to(self, index: int) -> None:
        # The tree and index streams are refreshed once, with the Position: a rewind that drops
        # children must not publish the intermediate trees and indexes on its way.
        self._ready()
        if index < self._index:
            for rolled_back in reversed(self._steps[index : self._index + 1]):
                self._detach_child(rolled_back, refresh=False)
        step = self._steps[index]
        if step not in self._children and (declared := step.child_tracker()) is not None:
            self._attach_child(step, declared, refresh=False)
        self._index = index
        self._emit(Position(self, step))
        if step == self.DONE:
            self._live_streams().end(None)

    # -- children ---------------------------------------------------------------------------

    @property
    def parent(self) -> ProgressTracker | None:
        """The tracker this one is a child of, or None."""
        return self._parent

    @property
    def top_level_tracker(self) -> ProgressTracker:
        """The root of the tree this tracker belongs to."""
        tracker = self
        while tracker._parent is not None:
            tracker = tracker._parent
        return tracker

    def get_child_tracker(self, step: Step) -> ProgressTracker | None:
        """The child tracker of ``step`` (a step of this tracker), or None."""
        return self._children.get(self._steps[self._index_of(step)])

    def set_child_tracker(self, step: Step, tracker: ProgressTracker) -> None:
        """Make ``tracker`` the child of ``step``, replacing any previous child.

        Publishes ``Structural(self, step)``; from then on the child's events bubble up to this
        tracker's ``changes``. A ``tracker`` attached elsewhere is moved here (a Structural on
        its old parent too): a sub-flow's tracker follows the step that runs it. Raises
        ValueError if ``step`` is not in this tracker, this tracker has ended, or ``tracker`` is
        this tracker or one of its ancestors.
        """
        own = self._steps[self._index_of(step)]
        if self._children.get(own) is tracker:
            return
        self._check_structure_mutable()
        self._attach_child(own, tracker)

    def remove_child_tracker(self, step: Step) -> ProgressTracker | None:
        """Detach and return the child of ``step`` (None if it has none).

        Publishes ``Structural(self, step)`` if a child was removed. Raises ValueError if this
        tracker has ended.
        """
        own = self._steps[self._index_of(step)]
        self._check_structure_mutable()
        return self._detach_child(own)

    def _check_structure_mutable(self) -> None:
        if self.has_ended:
            raise ValueError("cannot change the children of a progress tracker once it has ended")

    def _attach_child(self, step: Step, tracker: ProgressTracker, *, refresh: bool = True) -> None:
        self._ready()
        ancestor: ProgressTracker | None = self
        while ancestor is not None:
            if ancestor is tracker:
                raise ValueError("a progress tracker cannot be its own descendant")
            ancestor = ancestor._parent
        if (old := tracker._parent) is not None:
            old._detach_child(next(s for s, c in old._children.items() if c is tracker))
        previous = self._children.pop(step, None)
        if previous is not None:
            previous._parent = None
        self._children[step] = tracker
        tracker._parent = self
        self._emit(Structural(self, step), refresh=refresh)

    def _detach_child(self, step: Step, *, refresh: bool = True) -> ProgressTracker | None:
        self._ready()
        child = self._children.pop(step, None)
        if child is not None:
            child._parent = None
            self._emit(Structural(self, step), refresh=refresh)
        return child

    # -- flattened tree and streams ---------------------------------------------------------

    @property
    def changes(self) -> Stream[Change]:
        """Every Position, Structural and Rendering of this tracker and its descendants.

        Completes when this tracker reaches DONE; fails with the error of
        :meth:`end_with_error`. A child's end does not end its parent's stream.
        """
        return self._live_streams().changes

    @property
    def steps_tree_changes(self) -> Stream[list[tuple[int, str]]]:
        """The flattened ``(depth, label)`` tree: its value at creation, then each new value."""
        return self._live_streams().tree

    @property
    def steps_tree_index_changes(self) -> Stream[int]:
        """The index of the current row, then each new one: :attr:`steps_tree_index`, except
        that a tracker that has not started publishes 0 (the row it starts at), not -1. A new
        subscriber first receives every value published so far, the current one last."""
        return self._live_streams().index

    @property
    def all_steps(self) -> list[tuple[int, Step]]:
        """The flattened tree as ``(depth, step)`` pairs (see the module docstring)."""
        return [(depth, step) for depth, step, _ in self._flattened().entries]

    @property
    def steps_tree(self) -> list[tuple[int, str]]:
        """The flattened tree as ``(depth, label)`` pairs."""
        return list(self._flattened().tree)

    @property
    def steps_tree_index(self) -> int:
        """Position in :attr:`all_steps` of the deepest current step listed there, or -1."""
        return self._tree_index(self._flattened())

    def _flatten(self, depth: int = 0) -> Iterator[tuple[int, int, ProgressTracker]]:
        """The rows of the flattened tree as ``(depth, index in tracker._steps, tracker)``."""
        for i, step in enumerate(self._steps):
            if step == self.UNSTARTED or (depth > 0 and step in (self.STARTING, self.DONE)):
                continue
            yield depth, i, self
            child = self._children.get(step)
            if child is not None:
                yield from child._flatten(depth + 1)

    def _flattened(self) -> _Flat:
        """The flattened tree, recomputed only after a Structural or Rendering invalidated it."""
        flat = self._flat
        if flat is None:
            flat = self._flat = _Flat(list(self._flatten()))
        return flat

    def _tree_index(self, flat: _Flat) -> int:
        """The row of the deepest current step listed in ``flat`` (this tracker's), or -1."""
        positions = flat.positions
        index = -1
        tracker: ProgressTracker | None = self
        while tracker is not None:
            index = positions.get((id(tracker), tracker._index), index)
            tracker = (
                tracker._children.get(tracker._steps[tracker._index]) if tracker._children else None
            )
        return index

    def _live_streams(self) -> _Streams:
        if self._streams is None:  # restored from a checkpoint: seed from the current state
            self._streams = _Streams()
            if self._index != 0:
                self._streams.changes.publish(Position(self, self.current_step))
            self._refresh()
            if self.has_ended:
                self._streams.end(self._error)
        return self._streams

    def _ready(self) -> None:
        """Create the streams of this tracker and its ancestors before changing state: a restored
        tracker creates them lazily, seeded from the state it is in."""
        tracker: ProgressTracker | None = self
        while tracker is not None:
            tracker._live_streams()
            tracker = tracker._parent

    def _emit(self, change: Change, *, refresh: bool = True) -> None:
        """Publish ``change`` on this tracker and every ancestor, refreshing their trees."""
        structural = not isinstance(change, Position)
        tracker: ProgressTracker | None = self
        while tracker is not None:
            if structural:  # children or labels changed: this tree and every ancestor's
                tracker._flat = None
            streams = tracker._live_streams()
            if not streams.changes.has_ended:
                streams.changes.publish(change)
            if refresh:
                tracker._refresh()
            tracker = tracker._parent

    def _refresh(self) -> None:
        streams = self._live_streams()
        if streams.tree.has_ended:
            return
        flat = self._flattened()
        if flat is not streams.seen_flat:
            streams.seen_flat = flat
            if flat.tree != streams.last_tree:
                tree = list(flat.tree)
                streams.last_tree = tree
                streams.tree.publish(tree)
        index = max(self._tree_index(flat), 0)  # unstarted: about to enter row 0 (STARTING)
        if index != streams.last_index:
            streams.last_index = index
            streams.index.publish(index)

    # -- pickling ---------------------------------------------------------------------------

    def _register_with_steps(self) -> None:
        for step in self._steps:
            if step._relabelable:
                step._trackers().add(self)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_streams"] = None
        state.pop("_flat", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._flat = None
        self._register_with_steps()

    # -- rendering --------------------------------------------------------------------------

    def __rich__(self) -> Tree:
        """A static :class:`rich.tree.Tree` of this tracker, without a title.

        See :func:`fibers._progress_view.render_tracker` for the layout and for titled or
        animated trees.
        """
        return render_tracker(self)

    def __repr__(self) -> str:
        failed = " failed" if self._error is not None else ""
        return f"<ProgressTracker at {self.current_step.label!r} ({self._index}){failed}>"
