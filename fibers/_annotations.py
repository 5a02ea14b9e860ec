"""Markers on flow classes and functions: ``@suspendable``, ``@initiating_flow``, ``@initiated_by``,
``@startable_by_rpc`` and ``@schedulable_flow``.

Markers are plain attributes stored in the marked class's own ``__dict__`` so that inheritance rules
can be checked precisely (an annotation on a superclass is not an annotation on the subclass).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from fibers._errors import FlowConfigurationError

if TYPE_CHECKING:
    from fibers._flow_logic import FlowLogic

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

# Code objects of every @suspendable function. The suspension check compares frames' code
# objects against this set, so marking costs nothing at call time (no wrapper frame).
SUSPENDABLE_CODES: set[types.CodeType] = set()

_INITIATING = "__fibers_initiating_version__"
_INITIATED_BY = "__fibers_initiated_by__"
_STARTABLE = "__fibers_startable_by_rpc__"
_SCHEDULABLE = "__fibers_schedulable__"

# Responder classes declared with @initiated_by, keyed by the name the initiating class travels
# under in session inits ("module:qualname"), with the version the responder reports.
# Invariant: each responder's constructor takes exactly one argument, the counterparty Party.
DECLARED_RESPONDERS: dict[str, tuple[Callable[..., Any], int]] = {}


def suspendable(fn: F) -> F:
    """Mark ``fn`` as allowed to be on a flow's stack when the flow suspends.

    Returns ``fn`` itself: no wrapper frame, no per-call cost. Works on functions and methods,
    including ``staticmethod``/``classmethod`` objects.
    """
    target = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    code = getattr(target, "__code__", None)
    if not isinstance(code, types.CodeType):
        raise TypeError(f"@suspendable needs a Python function, got {fn!r}")
    SUSPENDABLE_CODES.add(code)
    return fn


def is_suspendable(code: types.CodeType) -> bool:
    """Whether a frame running ``code`` may be on a flow's stack at a suspension."""
    return code in SUSPENDABLE_CODES


def check_restorable(cls: type, what: str) -> None:
    """Refuse a flow class that a restarted node could not find by its name: one defined
    inside a function (``<locals>`` in its qualified name). ``what`` says what was attempted."""
    if "<locals>" in cls.__qualname__:
        raise FlowConfigurationError(
            f"cannot {what} {cls.__module__}.{cls.__qualname__}: it is defined inside a "
            "function, so a node restarting from its checkpoints could not find the class by "
            "its name. Move the class to module level (a test's flows too) and use it from "
            "there."
        )


@overload
def initiating_flow(cls: C, /) -> C: ...
@overload
def initiating_flow(*, version: int = 1) -> Callable[[C], C]: ...
def initiating_flow(cls: C | None = None, /, *, version: int = 1) -> C | Callable[[C], C]:
    """Mark a flow class as one that opens sessions with counterparties.

    Usable bare (``@initiating_flow``) or with a version (``@initiating_flow(version=2)``). The
    counterparty learns the version through ``get_flow_info``. A subclass without its own
    annotation opens sessions under this class's name, so it reuses this class's responder.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FlowConfigurationError(f"flow version must be an int >= 1, got {version!r}")

    def mark(flow_cls: C) -> C:
        setattr(flow_cls, _INITIATING, version)
        return flow_cls

    return mark(cls) if cls is not None else mark


def initiated_by(
    initiator: type[FlowLogic[Any]], *, version: int | None = None
) -> Callable[[C], C]:
    """Declare the decorated class as the responder every node runs when ``initiator`` opens a
    session with it. The class's constructor must take the counterparty ``Party``.

    ``version`` is the version of the flow pair this responder implements, reported to the
    initiator; by default it is the initiator's own version.
    """

    def mark(responder: C) -> C:
        if initiating_class_of(initiator) is not initiator:
            raise FlowConfigurationError(
                f"@initiated_by({initiator.__qualname__}) on {responder.__qualname__}: "
                f"{initiator.__qualname__} is not annotated @initiating_flow"
            )
        setattr(responder, _INITIATED_BY, initiator)
        name = f"{initiator.__module__}:{initiator.__qualname__}"
        DECLARED_RESPONDERS[name] = (responder, version or flow_version_of(initiator))
        return responder

    return mark


def startable_by_rpc(cls: C) -> C:
    """Allow operators to start this flow by name from RPC and the shell."""
    setattr(cls, _STARTABLE, True)
    return cls


def schedulable_flow(cls: C) -> C:
    """Allow this flow to be started by the node's scheduler for scheduled states."""
    setattr(cls, _SCHEDULABLE, True)
    return cls


def is_startable_by_rpc(cls: type) -> bool:
    """Whether ``cls`` itself is marked ``@startable_by_rpc``."""
    return bool(cls.__dict__.get(_STARTABLE, False))


def is_schedulable(cls: type) -> bool:
    """Whether ``cls`` itself is marked ``@schedulable_flow``."""
    return bool(cls.__dict__.get(_SCHEDULABLE, False))


def initiating_class_of(cls: type) -> type | None:
    """The nearest class in ``cls``'s MRO annotated ``@initiating_flow``, or None."""
    for klass in cls.__mro__:
        if _INITIATING in klass.__dict__:
            return klass
    return None


def flow_version_of(cls: type) -> int:
    """The version of the initiating flow ``cls`` belongs to (1 when not initiating)."""
    initiating = initiating_class_of(cls)
    return int(initiating.__dict__[_INITIATING]) if initiating is not None else 1


def check_initiating_annotation(cls: type) -> None:
    """Refuse a flow class that re-annotates ``@initiating_flow`` below an initiating ancestor.

    Such a subclass would silently stop reaching its parent's responder; subclassing without the
    annotation is the supported way to customise an initiating flow.
    """
    annotated = [k for k in cls.__mro__ if _INITIATING in k.__dict__]
    if len(annotated) > 1:
        raise FlowConfigurationError(
            f"{annotated[0].__qualname__} is annotated @initiating_flow but its superclass "
            f"{annotated[1].__qualname__} already is. Remove the annotation from "
            f"{annotated[0].__qualname__} to reuse {annotated[1].__qualname__}'s responder."
        )
