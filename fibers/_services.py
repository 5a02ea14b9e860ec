"""Journaled service operations: effects a flow causes through a node service, done once.

A method marked ``@journaled`` on a node service, when called from inside a flow, runs through
the flow's state machine: live, it runs and its result is recorded in the journal; when the flow
is replayed after a restart, the recorded result is returned and the method is not run again.
Replay checks the method and a digest of its arguments (``digest_arguments``): a call whose
arguments changed since the checkpoint parks the flow with a NondeterminismError instead of
answering it with the old result.
Called outside a flow it is an ordinary method call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from fibers import _io
from fibers._journal import digest_arguments
from fibers._state_machine import current_machine

F = TypeVar("F", bound=Callable[..., Any])


def journaled(method: F) -> F:
    """Mark a service method whose effect must happen once per flow, across restarts."""

    @functools.wraps(method)
    def wrapper(self: object, *args: Any, **kwargs: Any) -> Any:
        machine = current_machine()
        if machine is None:
            return method(self, *args, **kwargs)
        call = _io.ServiceCall(
            method.__qualname__,
            digest_arguments(args, kwargs),
            lambda: method(self, *args, **kwargs),
        )
        return machine.execute(call)

    return cast(F, wrapper)


def wake_on_restart() -> None:
    """Called from inside a flow: replay this flow as soon as its node restarts, rather than
    when something wakes it (restore is lazy: docs/architecture.md, "Hibernation and lazy
    restore"). For a service that keeps something for the flow in memory only and gets it
    back as the flow replays, e.g. the vault's soft locks. Outside flows, nothing."""
    machine = current_machine()
    if machine is not None:
        machine.wake_on_restart = True
