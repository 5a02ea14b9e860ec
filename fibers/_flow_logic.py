"""``FlowLogic``: the base class of every flow, and the small value types flows see.

A flow's methods never touch the network or storage themselves: each IO operation becomes a
request object (``fibers._io``) handed to its state machine's ``execute``, which performs it in
``fibers._requests``, the one place where requests are performed, journaled and, after a
restart, answered again from the journal.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from fibers import _io
from fibers._errors import FlowConfigurationError
from fibers._identity import Party
from fibers._service_hub import HubT_co
from fibers._wire import serializable

if TYPE_CHECKING:
    from fibers._progress import ProgressTracker
    from fibers._state_machine import FlowStateMachine
    from fibers._stream import Stream

T = TypeVar("T")
R = TypeVar("R")


@serializable
@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What a counterparty runs: the version of the flow pair and the app it comes from."""

    flow_version: int
    app_name: str


@serializable
@dataclass(frozen=True, slots=True, order=True)
class StateMachineRunId:
    """The permanent identifier of one flow run. Made by the engine; parse one with ``parse``."""

    uuid: uuid.UUID

    @classmethod
    def _new(cls) -> StateMachineRunId:
        return cls(uuid.uuid4())

    @classmethod
    def parse(cls, text: str) -> StateMachineRunId:
        """Parse the string form of a run id, e.g. as typed by an operator."""
        try:
            return cls(uuid.UUID(text.strip()))
        except ValueError:
            raise ValueError(f"{text!r} is not a flow run id (expected a UUID)") from None

    def __str__(self) -> str:
        return str(self.uuid)

    @property
    def short(self) -> str:
        """The first 8 hex digits, enough to tell flows apart on a screen."""
        return self.uuid.hex[:8]


class UntrustworthyData(Generic[T]):
    """Data received from a counterparty, to be checked before use.

    The only way to get at the data is ``unwrap(validator)``, which returns ``validator(data)``.
    A ``FlowException`` raised by the validator propagates to the counterparty like any other.
    """

    __slots__ = ("_data",)

    def __init__(self, data: T) -> None:
        self._data = data

    def unwrap(self, validator: Callable[[T], R]) -> R:
        """Validate the data and return what ``validator`` returns."""
        return validator(self._data)

    def __repr__(self) -> str:
        return f"UntrustworthyData({type(self._data).__qualname__})"


_OUTCOME_LOCK = threading.Lock()  # outcomes settle on the node thread, are read anywhere


class FlowOutcome(Generic[T]):
    """Where a flow run's result lands: its value or error once the flow ended, and the
    ``Future`` handed out for it, made only when someone asks (``future``). A parked flow
    whose result nobody asked for costs this small object, not a Future with its lock and
    condition (about 1.4 KB each, with 100,000 flows parked)."""

    __slots__ = ("_future", "_settled")

    def __init__(self) -> None:
        self._future: Future[T] | None = None
        # Invariant: None until settled, then (value, error) for good.
        self._settled: tuple[object, BaseException | None] | None = None

    @property
    def future(self) -> Future[T]:
        """The future of the result (the same one every time; done if the flow has ended)."""
        with _OUTCOME_LOCK:
            future = self._future
            if future is None:
                future = self._future = Future()
                if self._settled is not None:  # nobody else has it yet: no callback runs
                    _complete(future, *self._settled)
            return future

    @property
    def asked(self) -> bool:
        """Whether the future was made (someone asked for it)."""
        return self._future is not None

    @property
    def settled(self) -> bool:
        """Whether the flow's result (or error) is in."""
        return self._settled is not None

    def settle(self, value: object, error: BaseException | None) -> None:
        """The flow ended with ``value`` or ``error`` (the first call wins)."""
        with _OUTCOME_LOCK:
            if self._settled is not None:
                return
            self._settled = (value, error)
            future = self._future
        if future is not None:  # outside the lock: callbacks run here
            # Its holder may have cancelled it, at any time, on any thread: it stays so.
            with contextlib.suppress(InvalidStateError):
                _complete(future, value, error)


def _complete(future: Future[Any], value: object, error: BaseException | None) -> None:
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


@dataclass(frozen=True)
class FlowHandle(Generic[T]):
    """A started flow: its run id and a future of its result (``result``, made when first
    asked for). Made by ``Node.start_flow``."""

    id: StateMachineRunId
    outcome: FlowOutcome[T] = field(repr=False)

    @property
    def result(self) -> Future[T]:
        """The future of the flow's result."""
        return self.outcome.future


@dataclass(frozen=True)
class FlowProgressHandle(FlowHandle[T]):
    """A started flow with its progress: ``progress`` streams the labels of the steps the flow
    moves through; ``steps_tree`` and ``steps_tree_index`` stream the flattened tree of steps
    (sub-flows included) and the position in it. Made by ``Node.start_tracked_flow``."""

    progress: Stream[str] = field(repr=False)
    steps_tree: Stream[list[tuple[int, str]]] = field(repr=False)
    steps_tree_index: Stream[int] = field(repr=False)


class FlowLogic(Generic[T, HubT_co]):
    """Base class of flows. Subclasses implement ``call`` (marked ``@suspendable``) as plain
    sequential code and talk to counterparties with ``send``/``receive``/``send_and_receive``.

    The engine attaches the running state machine before ``call`` starts; the IO methods may only
    be used from inside ``call`` (or functions it calls) while the flow runs in its node.

    The second type parameter is the service hub the flow needs (``ServiceHub`` if unsaid): a
    ledger flow is a ``FlowLogic[R, LedgerServiceHub]``, so ``self.service_hub.vault`` is typed.
    """

    # The engine's hook (see ``bind``); None while the flow object is merely constructed.
    _binding: FlowBinding | None = None

    def call(self) -> T:
        """The flow's body. Override and mark with ``@suspendable``."""
        raise FlowConfigurationError(f"{type(self).__qualname__} does not implement call()")

    # ----- communication ------------------------------------------------------------------

    def send(self, party: Party, payload: object) -> None:
        """Send ``payload`` to ``party``, opening a session with it if this is the first contact.

        Does not wait; the message leaves the node when the flow next suspends.
        """
        binding = self._binding
        if binding is None:
            raise _not_running(self)
        binding.machine.send(binding, party, payload)

    def receive(
        self, party: Party, expected_type: type[R], *, deadline: datetime | None = None
    ) -> UntrustworthyData[R]:
        """Wait for the next message from ``party`` and check it is an ``expected_type``.

        Raises the counterparty's ``FlowException`` if it failed with one, and
        ``UnexpectedFlowEndException`` if it ended, failed otherwise or sent another type. With
        a ``deadline`` (timezone-aware, on the node's clock; e.g. ``self.now() + timedelta``)
        it raises ``UnexpectedFlowEndException`` (a ``ReceiveTimeoutException``) once the clock
        passes the deadline with nothing received; the deadline survives a restart.
        """
        if deadline is not None and (not isinstance(deadline, datetime)
                                     or deadline.utcoffset() is None):
            raise ValueError(f"a receive deadline is a timezone-aware datetime, got "
                             f"{deadline!r:.60} (use e.g. self.now() + timedelta(minutes=5))")
        binding = self._binding
        if binding is None:
            raise _not_running(self)
        return UntrustworthyData(binding.machine.receive(binding, party, expected_type,
                                                         deadline))

    def send_and_receive(
        self, party: Party, payload: object, expected_type: type[R]
    ) -> UntrustworthyData[R]:
        """``send(party, payload)`` then ``receive(party, expected_type)``."""
        binding = self._binding
        if binding is None:
            raise _not_running(self)
        machine = binding.machine
        machine.send(binding, party, payload)
        return UntrustworthyData(machine.receive(binding, party, expected_type, None))

    def get_flow_info(self, party: Party) -> FlowInfo:
        """The flow version and app name the counterparty runs (waits for its confirmation)."""
        info = self._state_machine.execute(_io.GetFlowInfo(self, party))
        assert isinstance(info, FlowInfo)
        return info

    def sub_flow(self, flow: FlowLogic[R]) -> R:
        """Run ``flow`` inline and return its result. Its progress tracker becomes a child of
        this flow's current step. Without ``@initiating_flow`` it shares this flow's sessions."""
        return self._state_machine.run_sub_flow(self, flow)

    # ----- time ----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The node's current time (timezone-aware UTC), recorded so a replay sees the same."""
        value = self._state_machine.execute(_io.Now())
        assert isinstance(value, datetime)
        return value

    def sleep(self, seconds: float) -> None:
        """Suspend the flow for ``seconds``; the deadline survives a node restart."""
        if seconds < 0:
            raise ValueError(f"cannot sleep for a negative duration ({seconds} s)")
        self._state_machine.execute(_io.Sleep(seconds))

    def random_bytes(self, count: int) -> bytes:
        """``count`` cryptographically random bytes, recorded so that a flow restored after a
        restart draws the same bytes (use this, not ``os.urandom``, inside flows)."""
        if count < 0:
            raise ValueError(f"cannot draw a negative number of bytes ({count})")
        value = self._state_machine.execute(_io.RandomBytes(count))
        assert isinstance(value, bytes)
        return value

    def wait_for_event(self, key: str, check: Callable[[], R | None]) -> R:
        """Suspend until ``check()`` returns a value (not None) and return it. Node services
        call ``node.signal(key)`` when what ``check`` looks for may have changed; ``check``
        must read only durable node state, as it runs again when the flow is restored."""
        value = self._state_machine.execute(_io.WaitForEvent(key, check))
        return value  # type: ignore[no-any-return]

    def wait_for_ledger_commit(self, tx_id: object) -> Any:
        """Wait until the transaction ``tx_id`` is recorded in this node's validated
        transaction storage, and return it (ledger nodes only)."""
        storage = getattr(self.service_hub, "validated_transactions", None)
        if storage is None:
            raise FlowConfigurationError(
                "wait_for_ledger_commit needs a ledger node (its service hub has no "
                "validated_transactions); use ledger.testing.MockNetwork"
            )
        return self.wait_for_event(f"tx:{tx_id}", lambda: storage.get(tx_id))

    # ----- context -------------------------------------------------------------------------

    @property
    def progress_tracker(self) -> ProgressTracker | None:
        """This flow's progress tracker, or None. Override (or set in ``__init__``) to report
        progress."""
        return self.__dict__.get("_progress_tracker")

    @progress_tracker.setter
    def progress_tracker(self, tracker: ProgressTracker | None) -> None:
        self.__dict__["_progress_tracker"] = tracker

    @property
    def run_id(self) -> StateMachineRunId:
        """The id of the flow run this flow (or sub-flow) belongs to."""
        return self._state_machine.run_id

    @property
    def our_identity(self) -> Party:
        """The legal identity of the node running this flow."""
        return self._state_machine.node.info.legal_identity

    @property
    def service_hub(self) -> HubT_co:
        """The node's services: its ``ServiceHub``, of the class the flow's second type
        parameter names (a node runs the flows its hub class serves)."""
        return cast("HubT_co", self._state_machine.node.services)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags each record with the flow's run id."""
        name = f"fibers.flow.{type(self).__module__}.{type(self).__qualname__}"
        return logging.LoggerAdapter(logging.getLogger(name), {"run_id": str(self.run_id)})

    @property
    def _state_machine(self) -> FlowStateMachine:
        binding = self._binding
        if binding is None:
            raise _not_running(self)
        return binding.machine

    def __getstate__(self) -> dict[str, Any]:
        # The engine's binding is rebuilt on restore; the checkpoint keeps only user state.
        state = self.__dict__.copy()
        state.pop("_binding", None)
        return state


def _not_running(flow: FlowLogic[Any]) -> FlowConfigurationError:
    return FlowConfigurationError(
        f"{type(flow).__qualname__} is not running: start it with node.start_flow(...) "
        "or self.sub_flow(...) instead of calling call() directly"
    )


@dataclass(frozen=True, slots=True)
class FlowBinding:
    """How the engine attached a flow (or sub-flow) to the state machine running it.

    ``index`` numbers the flow within its run (0 for the top-level flow, then sub-flows in the
    order they start); ``session_owner`` is the flow whose sessions it uses: itself when it is
    a top-level or ``@initiating_flow`` flow, its parent's session owner when it is an inlined
    sub-flow; ``owner_index`` is the session owner's ``index`` (the sessions it uses are keyed
    by it)."""

    machine: FlowStateMachine
    index: int
    session_owner: FlowLogic[Any]
    owner_index: int


def bind(flow: FlowLogic[Any], binding: FlowBinding) -> None:
    """Attach ``flow`` to the state machine running it (engine only, once per flow object)."""
    flow._binding = binding


def binding_of(flow: FlowLogic[Any]) -> FlowBinding | None:
    """The engine's binding of ``flow``, or None when it has not been started."""
    return flow._binding
