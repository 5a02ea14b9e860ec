"""The greenlet switch protocol of one state machine, and nothing else.

Contract (docs/checkpoint-format.md, "The switch protocol"):

* The node's scheduler runs in an ordinary greenlet (the node thread's main greenlet, or a
  test's). ``resume()`` records the calling greenlet as the *resumer*, makes it the flow
  greenlet's parent and switches into the flow greenlet.
* The flow runs plain Python until a request needs something that is not there yet. It then
  calls ``suspend()``, which switches back to the resumer: the scheduler's ``resume()`` returns
  and the step is over. The next ``resume()`` makes ``suspend()`` return inside the flow.
* ``leave()`` is ``suspend()`` for a flow that must never run again (parked for the hospital,
  ended by a kill it caught): the scheduler does not resume it, it only ``unwind()``s it.
* When the flow's body returns or raises, its greenlet ends and control goes to its parent,
  the resumer, so ``resume()`` returns for the last time.
* ``unwind()`` (scheduler side) throws ``GreenletExit`` into a started, unfinished greenlet so
  that its frames (and ``finally:`` blocks) run to their end and are freed: a suspended
  greenlet caught in a reference cycle is never collected.

Only the state machine that owns a ``Switch`` calls it; ``owner_of_current()`` finds that
state machine from inside its greenlet (a journaled service uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

from greenlet import GreenletExit, getcurrent, greenlet  # type: ignore[import-untyped]

from fibers._errors import FlowConfigurationError

# The attribute of a flow greenlet naming the state machine that owns it.
_OWNER = "state_machine"


class _FlowGreenlet(greenlet):  # type: ignore[misc]
    """A flow's greenlet, naming its owner in a slot: setting an attribute on a plain
    greenlet gives it a ``__dict__`` (about 300 bytes per parked flow)."""

    __slots__ = (_OWNER,)


def owner_of_current() -> object | None:
    """The owner given to the ``Switch`` whose greenlet is running, or None outside flows."""
    return getattr(getcurrent(), _OWNER, None)


class Switch:
    """The greenlet of one flow run and the greenlet that resumed it last."""

    __slots__ = ("_greenlet", "_resumer")

    def __init__(self, body: Callable[[], None], owner: object) -> None:
        self._greenlet = _FlowGreenlet(body)
        setattr(self._greenlet, _OWNER, owner)
        # Invariant: None until the first resume(); then the greenlet that last resumed the
        # flow, which is also the flow greenlet's parent (where it returns when it ends).
        self._resumer: greenlet | None = None

    @property
    def greenlet(self) -> greenlet:
        """The flow's greenlet (to tell, as ``check_inside`` does, whether it is running)."""
        return self._greenlet

    @property
    def started(self) -> bool:
        """Whether the flow's greenlet has begun running (it may have ended since)."""
        return bool(self._greenlet) or self._greenlet.dead

    @property
    def suspended_frame(self) -> FrameType | None:
        """The innermost frame of the suspended flow (its stack can be read from there to its
        bottom), or None when it never ran, runs or ended."""
        running = self._greenlet
        frame: FrameType | None = running.gr_frame if running else None
        return frame

    def resume(self, throw: BaseException | None = None) -> None:
        """Run the flow until it suspends, leaves or ends (scheduler side). ``throw`` raises an
        exception at the flow's suspension point instead of returning from ``suspend()``."""
        resumer = getcurrent()
        if resumer is not self._resumer:  # (setting a parent checks for cycles: not each time)
            self._resumer = resumer
            self._greenlet.parent = resumer
        if throw is None:
            self._greenlet.switch()
        else:
            self._greenlet.throw(throw)

    def suspend(self) -> None:
        """Give control back to the resumer until it resumes this flow (flow side)."""
        self.check_inside("suspended")
        assert self._resumer is not None
        self._resumer.switch()

    def suspend_checked(self) -> None:
        """``suspend()`` for a caller that has checked (``check_inside``) in this same request
        that it runs in the flow's greenlet: a message's receive costs one check, not two."""
        resumer = self._resumer
        assert resumer is not None
        resumer.switch()

    def leave(self) -> None:
        """Give control back for good (flow side): the caller is parked or ended and is only
        ever unwound, so this returns only by raising ``GreenletExit`` from ``unwind()``."""
        self.suspend()
        raise AssertionError("a flow that left was resumed")  # pragma: no cover

    def unwind(self) -> None:
        """End a started greenlet from outside, running its ``finally:`` blocks; a no-op when it
        never started, already ended, or when called from inside it."""
        running = self._greenlet
        if running and getcurrent() is not running:  # started, not dead, not ourselves
            self._resumer = running.parent = getcurrent()
            running.throw(GreenletExit)

    def check_inside(self, what: str) -> None:
        """Refuse flow IO from anywhere but the flow's own greenlet, naming the likely cause."""
        if self._resumer is None or getcurrent() is not self._greenlet:
            raise FlowConfigurationError(
                f"a flow {what} outside its own greenlet: was IO attempted from a thread, a "
                "callback or another flow instead of from the flow's call() (or functions it "
                "calls) while the flow runs in its node?"
            )
