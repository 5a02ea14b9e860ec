"""Exceptions raised by the flow engine.

Hierarchy::

    Exception
    ├── FlowException                      a flow's business error; crosses to direct counterparties
    │   └── UnexpectedFlowEndException     the counterparty ended, failed or sent the wrong type
    │       └── ReceiveTimeoutException    nothing came by the deadline of a ``receive``
    ├── KilledFlowException                raised inside a flow killed by the operator
    ├── HospitalizeFlowException           a flow asks to be parked for an operator
    ├── NondeterminismError                replay of a restored flow diverged from its journal
    ├── SuspendableError                   a flow suspended with unmarked functions on its stack
    ├── FlowConfigurationError             a flow class is annotated or registered inconsistently
    └── SerializationError (ValueError)    a value cannot cross the wire (``fibers._wire``)
"""

from __future__ import annotations

from typing import Any

# The codec owns its error (it raises it); it is re-exported here with the engine's others.
from fibers._wire import SerializationError, serializable

__all__ = [
    "FlowConfigurationError", "FlowException", "HospitalizeFlowException", "KilledFlowException",
    "NondeterminismError", "ReceiveTimeoutException", "SerializationError", "SuspendableError",
    "UnexpectedFlowEndException",
]


class FlowException(Exception):
    """A business-level error that a flow deliberately raises to its counterparties.

    When a flow fails with a ``FlowException`` it raised itself, each counterparty it talks to
    directly re-raises an exception of the same type and message at its next ``receive``.
    Subclasses whose extra attributes are wire-serialisable arrive with those attributes intact.
    A flow that fails with a ``FlowException`` it *received* (and did not catch) does not pass it
    on: its own counterparties get ``UnexpectedFlowEndException``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every FlowException subclass may cross the wire to a counterparty: whitelist it.
        super().__init_subclass__(**kwargs)
        serializable(cls)

    def __init__(self, message: str | None = None, *args: object) -> None:
        super().__init__(*((message, *args) if message is not None else args))

    @property
    def message(self) -> str | None:
        """The message the exception was raised with, or None."""
        return str(self.args[0]) if self.args else None


# Its subclasses whitelist themselves in __init_subclass__; the base is one too.
serializable(FlowException)


class UnexpectedFlowEndException(FlowException):
    """The counterparty flow ended, failed without a ``FlowException``, rejected the session or
    sent data of the wrong type, so the data this flow waited for will never arrive."""


class ReceiveTimeoutException(UnexpectedFlowEndException):
    """``receive(..., deadline=...)`` found nothing from the counterparty by its deadline: the
    flow stopped waiting. Catch ``UnexpectedFlowEndException`` to handle it with the other ways
    the awaited data can fail to come."""


class KilledFlowException(Exception):
    """Raised inside a flow that an operator killed with ``node.kill_flow``."""


class HospitalizeFlowException(Exception):
    """Raise from a flow to park it in the hospital for an operator to retry or kill."""


class NondeterminismError(Exception):
    """The code of a restored flow did not replay its journal: the flow's code changed
    incompatibly since the checkpoint was written, or the flow depends on unrecorded inputs."""


class SuspendableError(Exception):
    """A flow suspended while functions not marked ``@suspendable`` were on its stack."""


class FlowConfigurationError(Exception):
    """A flow class is annotated or registered inconsistently (for example a session opened by a
    flow that is not ``@initiating_flow``)."""
