"""One walk over a flow's stack, for both the ``@suspendable`` check and the frame snapshot;
the only module that reads a flow's frames (``flows_on_stack`` serves inspection).

At each request that may suspend, the state machine walks the flow greenlet's stack once
(``walk``): every frame from the request's caller to the bottom of the greenlet (whose
outermost frame has no ``f_back``). The walk sorts the frames into

* *unmarked* ones: user functions not marked ``@suspendable`` (refused or warned about, see
  ``unmarked_message``), and
* *suspendable* ones: the ``@suspendable`` frames, outermost first, whose locals the frame
  snapshot captures (docs/checkpoint-format.md, "Frame snapshots").

Framework frames (files of this package) and comprehension frames are neither: the former are
rebuilt by replay, the latter belong to the function containing them, which is itself checked.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

from fibers._annotations import SUSPENDABLE_CODES
from fibers._flow_logic import FlowLogic

_FRAMEWORK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Comprehensions run in frames of their own on Python 3.11 but belong to the function that
# contains them; replay re-runs them like any other code.
_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
# Verdicts of _may_be_on_stack by code object: the walk runs at every potential suspension.
_ALLOWED_ON_STACK: dict[types.CodeType, bool] = {}
# Whether a code object is the framework's own (a file of this package), by code object.
_FRAMEWORK_CODES: dict[types.CodeType, bool] = {}
# Code flags of frames that outlive a yield: resumed, their caller may be another function.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


@dataclass(frozen=True, slots=True)
class FlowStack:
    """A flow's stack at one request: the unmarked user frames (code, line; innermost first)
    and the ``@suspendable`` frames (outermost first)."""

    # Tuples: a parked flow keeps its last stack (an empty tuple is shared, a list is not).
    unmarked: tuple[tuple[types.CodeType, int], ...]
    suspendable: tuple[types.FrameType, ...]

    @property
    def call_chain(self) -> tuple[str, ...]:
        """The qualnames of the ``@suspendable`` frames, outermost first."""
        return tuple(f.f_code.co_qualname for f in self.suspendable)

    @property
    def lines(self) -> tuple[int, ...]:
        """The current lines of the ``@suspendable`` frames, outermost first."""
        return tuple(f.f_lineno for f in self.suspendable)


def walk(depth: int = 1) -> FlowStack:
    """The stack of the caller's caller (``depth`` frames above this call) down to the bottom of
    the running greenlet."""
    return _walk_from(sys._getframe(depth + 1))


def walk_again(previous: FlowStack | None, depth: int = 1) -> FlowStack:
    """The stack of a request made by the flow's code through a ``FlowLogic`` method, down to
    the bottom of the running greenlet, reusing ``previous`` (the stack of this flow's last
    walk) when the call chain is unchanged.

    ``depth`` counts the frames above this call to the state machine's method performing the
    request (1: its caller). Contract: that method is called only by a ``FlowLogic`` method
    (``tests/fibers/test_live_path.py`` pins it), so the frame above it is the framework's,
    and the one above that is the code that made the request. Starting there creates no frame
    object for the two framework frames (each about 230 bytes, alive for as long as the flow
    is parked in them).

    Unchanged means: the first frame above the framework's own (the user code that made the
    request) is the very frame object that was the innermost ``@suspendable`` frame of
    ``previous``, and ``previous`` found no unmarked frame. A frame's callers are fixed
    while it runs, and the callers of a frame that is still running are suspended in their
    calls, so every frame below it and their lines are what ``previous`` found (all of them
    marked or the framework's); only the lines of the ``@suspendable``
    frames may have moved, and ``FlowStack`` reads those from the frames when asked. (Holding
    ``previous`` holds that frame object, so its identity cannot be reused by a new frame.)
    A generator's or coroutine's frame is the exception (its callers change each time it is
    resumed) and is always walked again. Any other first user frame (an unmarked function, a
    new call, a comprehension) gets a full walk, so the ``@suspendable`` check sees it."""
    frame: types.FrameType | None = sys._getframe(depth + 2)
    # A previous walk that found unmarked frames is never reused: they may have been above
    # its innermost @suspendable frame, and gone since.
    if previous is None or previous.unmarked or not previous.suspendable \
            or previous.suspendable[-1].f_code.co_flags & _RESUMABLE:
        previous = None
    elif previous.suspendable[-1] is frame:
        return previous  # the common case: straight from the same @suspendable frame
    framework, suspendable = _FRAMEWORK_CODES, SUSPENDABLE_CODES
    while frame is not None:  # past framework helpers (e.g. wait_for_ledger_commit)
        code = frame.f_code
        inside = framework.get(code)
        if inside is None:
            inside = framework[code] = code.co_filename.startswith(_FRAMEWORK_DIR)
        if not inside or code in suspendable:  # a @suspendable flow of this package is user code
            break
        frame = frame.f_back
    if previous is not None and previous.suspendable[-1] is frame:
        return previous
    return _walk_from(frame)


def _walk_from(frame: types.FrameType | None) -> FlowStack:
    unmarked: list[tuple[types.CodeType, int]] = []
    marked: list[types.FrameType] = []
    allowed, suspendable = _ALLOWED_ON_STACK, SUSPENDABLE_CODES
    while frame is not None:
        code = frame.f_code
        if code in suspendable:  # is_suspendable(code), without a call per frame
            marked.append(frame)
        else:
            ok = allowed.get(code)
            if ok is None:
                ok = allowed[code] = _may_be_on_stack(code)
            if not ok:
                unmarked.append((code, frame.f_lineno))
        frame = frame.f_back
    marked.reverse()
    return FlowStack(tuple(unmarked), tuple(marked))


def suspendable_on_stack(frame: types.FrameType | None) -> FlowStack:
    """The ``@suspendable`` frames on the stack from ``frame`` (a suspended flow's innermost)
    down, as a ``FlowStack`` without unmarked frames: what a capture of its locals reads."""
    marked: list[types.FrameType] = []
    while frame is not None:
        if frame.f_code in SUSPENDABLE_CODES:
            marked.append(frame)
        frame = frame.f_back
    marked.reverse()
    return FlowStack((), tuple(marked))


def suspendable_in_traceback(tb: types.TracebackType | None) -> FlowStack:
    """The ``@suspendable`` frames an exception went through, outermost first: a flow that
    raised out of its code still has them (and their locals) in the traceback."""
    marked: list[types.FrameType] = []
    while tb is not None:
        if tb.tb_frame.f_code in SUSPENDABLE_CODES:
            marked.append(tb.tb_frame)
        tb = tb.tb_next
    return FlowStack((), tuple(marked))


def flows_on_stack(frame: types.FrameType | None) -> list[FlowLogic[Any]]:
    """The flow objects (``self`` of the frames: a flow and its sub-flows) on the stack from
    ``frame`` down, innermost first, each once; for inspecting a suspended flow."""
    found: list[FlowLogic[Any]] = []
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, FlowLogic) and all(owner is not f for f in found):
            found.append(owner)
        frame = frame.f_back
    return found


def unmarked_message(flow_name: str, request: str, stack: FlowStack) -> str:
    """The error (or warning) for a suspension with unmarked user functions on the stack."""
    lines = "\n".join(f"  - {c.co_qualname} ({c.co_filename}:{line})"
                      for c, line in stack.unmarked)
    return (
        f"{flow_name} suspended in {request}() with functions that are not marked "
        f"@suspendable on its stack:\n{lines}\nMark each of them with @suspendable "
        "(from fibers import suspendable): every function on a flow's stack when it waits "
        "must be marked so that its frame is checkpointed and restored."
    )


def _may_be_on_stack(code: types.CodeType) -> bool:
    return code.co_filename.startswith(_FRAMEWORK_DIR) or code.co_name in _COMPREHENSIONS
