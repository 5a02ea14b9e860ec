"""``NodeRuntime``: the one thread that runs a node (see docs/transport-and-runtime.md).

A node's flows are greenlets, and a greenlet can only be switched to on the thread that made
it; the node's services and its write transaction are single-threaded too. So everything
that touches a node runs on one thread, its *node thread*, and the runtime owns it:

* an inbound queue, filled by the node's ``Transport`` from any thread (``deliver``) and
  handed to the node in batches (one scheduler round, one group commit per batch);
* the node's timers: flows sleeping and retries waiting, fired once ``node.next_deadline()``
  is reached on the node's clock, and the re-sending of unacknowledged messages
  (``node.redelivery_due``);
* ``call(fn)``: run ``fn(node)`` on the node thread (start a flow, kill one, query) from any
  other thread, with its outcome in a ``Future``.

One code path, two ways to drive it:

* **threaded** (``start()``/``stop()``): the runtime's own thread builds the node, starts its
  transport and then waits for frames, calls and deadlines (the real clock), for a node
  process and for nodes that share a process but not a thread;
* **manual** (``start(threaded=False)``, then ``pump()``/``run_until_quiet()``): the calling
  thread is the node thread and nothing moves until it pumps, for deterministic tests
  (``MockNetwork``), simulations, and the embedded demo and shell, whose views read the
  nodes between steps. ``ManualDriver`` moves a set of such runtimes on an
  ``InMemoryNetwork`` one event at a time.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime
from itertools import repeat
from typing import Any, Final, Generic, TypeVar

from fibers._gc import ParkedFlowsGc
from fibers._identity import Party
from fibers._node import Node
from fibers._service_hub import HubT
from fibers.transport import InFlightMessage, InMemoryNetwork, Transport

__all__ = ["ManualDriver", "NodeRuntime", "NodeStoppedError"]

T = TypeVar("T")
log = logging.getLogger("fibers.runtime")

_LONGEST_WAIT: Final = 1.0
"""Seconds the node thread waits at most before it reads the clock again: a deadline is met
even if the wall clock jumped, or an injected clock moved without ``wake()``."""


class NodeStoppedError(RuntimeError):
    """The node's runtime is stopped (or was never started): start it (or build a new one on
    the node's storage) before asking it to do anything."""


class NodeRuntime(Generic[HubT]):
    """Runs the node that ``build(transport)`` makes on one thread (see the module docstring).

    ``build`` runs on the node thread, because a node restores its flows (runs greenlets) as it
    is built; it must pass ``transport`` to the node it returns. ``max_batch`` bounds how many
    inbound frames one scheduler round takes, so calls and timers are not starved. With
    ``tune_gc`` (the default) the runtime keeps the cyclic garbage collector off the flows the
    node restored and off parked flows (``fibers._gc``: a freeze once the node is built, again
    after each batch of more live flows, a reclaim when most of them have finished, and a
    higher young-generation threshold for the process).
    """

    def __init__(
        self,
        transport: Transport,
        build: Callable[[Transport], Node[HubT]],
        *,
        max_batch: int = 512,
        tune_gc: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.transport = transport
        self.max_batch = max_batch
        self._build = build
        self._lock = threading.Lock()  # never taken twice by one thread
        self._cond = threading.Condition(self._lock)
        # Invariant: _inbound and _calls are only changed under _lock (the lock of _cond); the
        # node is only touched on _owner.
        self._inbound: deque[tuple[Party, bytes]] = deque()
        self._calls: deque[tuple[Callable[[Node[HubT]], Any], Future[Any]]] = deque()
        self._node: Node[HubT] | None = None
        self._owner: threading.Thread | None = None
        # Invariant: the ident of _owner (None with it): pump() compares it on every round.
        self._owner_ident: int | None = None
        self._thread: threading.Thread | None = None
        self._state = "new"  # new -> running -> stopped
        self._stopping = False
        self._woken = False
        self._tune_gc = tune_gc
        self._gc_policy = ParkedFlowsGc() if tune_gc else None
        self._gc_live = -1  # the live flow count _gc_policy last observed

    # ----- lifecycle ----------------------------------------------------------------------------

    @property
    def party(self) -> Party:
        """The party of the node this runtime runs."""
        return self.transport.party

    @property
    def node(self) -> Node[HubT]:
        """The node. Only its node thread may touch it: from elsewhere, use ``call``."""
        if self._node is None:
            raise NodeStoppedError(f"the runtime of {self.party} has not built its node yet: "
                                   "call start() first")
        return self._node

    @property
    def is_running(self) -> bool:
        """Started and not stopped."""
        return self._state == "running"

    def start(self, *, threaded: bool = True) -> Node[HubT]:
        """Build the node and start its transport: on a new node thread (``threaded``), or on
        the calling thread, which then moves it with ``pump`` (manual). Returns once the node
        is built; an error building it is raised here. Returns the node."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError(f"the runtime of {self.party} was already started; build a "
                                   "new NodeRuntime to start the node again")
            self._state = "starting"
        if not threaded:
            self._owner = threading.current_thread()
            self._owner_ident = self._owner.ident
            try:
                self._open()
            except BaseException:
                with self._cond:
                    self._state = "stopped"
                raise
            return self.node
        built: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(built,),
                                        name=f"fibers-node-{self.party.name}", daemon=True)
        self._owner = self._thread
        self._thread.start()
        self._owner_ident = self._thread.ident
        built.result()
        return self.node

    def stop(self) -> None:
        """Stop the node as a crash would (its flows stay in storage), then its transport;
        calls not yet run fail with ``NodeStoppedError``. In threaded mode this waits for the
        node thread to end (unless called on it). Idempotent."""
        with self._cond:
            if self._state in ("new", "stopped"):
                self._state = "stopped"
                # Calls queued before a start that will never come would wait forever.
                never_run = list(self._calls)
                self._calls.clear()
            else:
                never_run = None
                self._stopping = True
                self._cond.notify_all()
        if never_run is not None:
            _fail_stopped(never_run, self.party)
            return
        thread = self._thread
        if thread is None:  # manual: the node is this thread's to stop
            self._check_owner("stop")
            self._close()
        elif thread is not threading.current_thread():
            thread.join()

    def wake(self) -> None:
        """Make the node thread read its clock again now (after an injected clock moved)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    # ----- work from other threads --------------------------------------------------------------

    def deliver(self, sender: Party, frames: Iterable[bytes]) -> None:
        """The transport's inbound entry: queue ``frames`` from ``sender`` for the node thread.
        Thread-safe; never blocks on the node."""
        with self._lock:
            self._inbound.extend(zip(repeat(sender), frames))
            if self._thread is not None:  # manual mode: nobody waits on _cond
                self._cond.notify_all()

    def call(self, fn: Callable[[Node[HubT]], T]) -> Future[T]:
        """Run ``fn(node)`` on the node thread; its result or exception lands in the returned
        future. Called on the node thread itself it runs at once (waiting for it there would
        deadlock). A call on a stopped runtime fails with ``NodeStoppedError``."""
        future: Future[T] = Future()
        if threading.current_thread() is self._owner and self._node is not None:
            _run_call(fn, self._node, future)
            return future
        with self._cond:
            if self._state == "stopped" or self._stopping:
                future.set_exception(NodeStoppedError(f"the node of {self.party} is stopped"))
                return future
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    # ----- manual mode --------------------------------------------------------------------------

    def pump(self) -> int:
        """Manual mode: run the queued calls, fire the due timers, and hand the node one batch
        of inbound frames. Returns how much it did (0: nothing was waiting)."""
        if self._thread is not None:
            raise RuntimeError(f"the runtime of {self.party} runs on its own thread: use call()")
        if threading.get_ident() != self._owner_ident:
            self._check_owner("pump")
        if self._state != "running":
            return 0
        node = self._node
        assert node is not None
        # The common pump of a driver finds nothing waiting: it costs no round (no lock, no
        # clock read when no timer is pending). Queues peeked unlocked: see _step.
        if not (self._calls or self._inbound or node.timers_due()):
            return 0
        return self._step()

    def pump_frame(self, sender: Party, frame: bytes, *, fire_timers: bool = True) -> int:
        """Manual mode: ``deliver`` one frame from ``sender`` and ``pump`` (what the
        ``ManualDriver`` does for each frame it hands over), without queueing the frame when
        nothing else waits. Without ``fire_timers`` the node's due timers wait for a later
        pump (the caller fires them). Returns how much was done."""
        node = self._node
        if self._calls or self._inbound or node is None or self._state != "running" \
                or node.stopped or self._thread is not None \
                or threading.get_ident() != self._owner_ident:
            self.deliver(sender, (frame,))  # behind what waits; pump() refuses what it must
            return self.pump()
        done = node.fire_due_timers() if fire_timers else 0
        node.deliver_batch([(sender, frame)])
        if self._gc_policy is not None:
            self._observe_live(node)
        return done + 1

    def run_until_quiet(self, max_rounds: int | None = None) -> int:
        """Manual mode: ``pump`` until nothing is waiting (or ``max_rounds`` rounds). Returns
        how much was done in all."""
        done, rounds = 0, 0
        while max_rounds is None or rounds < max_rounds:
            moved = self.pump()
            if not moved:
                break
            done, rounds = done + moved, rounds + 1
        return done

    @property
    def waiting(self) -> int:
        """Inbound frames and calls queued for the node thread."""
        with self._cond:
            return len(self._inbound) + len(self._calls)

    # ----- the node thread ----------------------------------------------------------------------

    def _check_owner(self, what: str) -> None:
        if self._owner is not None and threading.get_ident() != self._owner_ident:
            raise RuntimeError(f"{what}() of the runtime of {self.party} must run on its node "
                               f"thread ({self._owner.name}), where the node was built")

    def _open(self) -> None:
        node = self._build(self.transport)
        if node.party != self.party:
            node.stop()
            raise ValueError(f"the runtime's transport speaks for {self.party} but the node "
                             f"built is {node.party}: pass the runtime's transport to the node")
        # The network map may change on any thread; the node handles it on this one.
        node.hand_network_map_changes_to(lambda fn: self.call(lambda _node: fn()))
        try:
            self.transport.start(self.deliver)
        except BaseException:
            node.stop()
            raise
        self._node = node
        with self._cond:
            self._state = "running"
        if self._tune_gc:
            ParkedFlowsGc.install()
            ParkedFlowsGc.started()

    def _main(self, built: Future[None]) -> None:
        try:
            self._open()
        except BaseException as exc:
            with self._cond:
                self._state = "stopped"
            built.set_exception(exc)
            return
        built.set_result(None)
        try:
            while self._wait_for_work():
                try:
                    self._step()
                except Exception:
                    log.exception("the node thread of %s hit an error; it carries on",
                                  self.party)
        finally:
            self._close()

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; False when the runtime is stopping."""
        node = self.node
        with self._cond:
            while not (self._inbound or self._calls or self._stopping or self._woken
                       or node.stopped):
                # Redelivery of unacknowledged messages wakes the thread too (the manual driver
                # leaves it out: simulated time is not moved on for it alone).
                due = [d for d in (node.next_deadline(), node.redelivery_due) if d is not None]
                deadline = min(due, default=None)
                if deadline is None:
                    self._cond.wait()
                    continue
                seconds = (deadline - node.clock.now()).total_seconds()
                if seconds <= 0:
                    break
                self._cond.wait(min(seconds, _LONGEST_WAIT))
            self._woken = False
            return not (self._stopping or node.stopped)

    def _step(self) -> int:
        """One round on the node thread: calls, due timers, one batch of frames."""
        node = self._node
        assert node is not None, "a round runs only once the node is built"
        calls: list[tuple[Callable[[Node[HubT]], Any], Future[Any]]] = []
        frames: list[tuple[Party, bytes]] = []
        # Unlocked peek: the common manual-mode round has nothing queued (deque truthiness is
        # atomic); something queued meanwhile is seen by the next round, which the queueing
        # thread's notify guarantees.
        if self._calls or self._inbound:
            with self._lock:
                calls = list(self._calls)
                self._calls.clear()
                inbound = self._inbound
                if len(inbound) <= self.max_batch:  # the common case: take them all
                    frames = list(inbound)
                    inbound.clear()
                else:
                    frames = [inbound.popleft() for _ in range(self.max_batch)]
        for fn, future in calls:
            _run_call(fn, node, future)
        if node.stopped:  # a call stopped it
            return len(calls)
        done = len(calls) + node.fire_due_timers()
        if frames:
            node.deliver_batch(frames)
        if self._gc_policy is not None:
            self._observe_live(node)
        return done + len(frames)

    def _observe_live(self, node: Node[HubT]) -> None:
        """Tell the GC policy the live flow count after a round, when it changed: observing
        an unchanged count changes nothing (``ParkedFlowsGc`` depends on it alone)."""
        assert self._gc_policy is not None
        live = len(node.live_flows)  # flows with a state machine, without a call
        if live != self._gc_live:
            self._gc_live = live
            self._gc_policy.observe(live)

    def _close(self) -> None:
        """On the node thread: stop the transport, hand the node the frames that had already
        arrived (so they are stored and acknowledged rather than lost), then stop the node as
        a crash would; fail the calls that still wait."""
        self.transport.stop()
        node = self._node
        with self._cond:
            frames = list(self._inbound)
            self._inbound.clear()
        if node is not None and frames and not node.stopped:
            try:
                node.deliver_batch(frames)
            except Exception:
                # Not acknowledged, so their senders send them again to the next start.
                log.exception("%s stopped before it could handle %d frame(s)", self.party,
                              len(frames))
        if node is not None:
            node.stop()
        with self._cond:
            self._state = "stopped"
            calls = list(self._calls)
            self._calls.clear()
        _fail_stopped(calls, self.party)

    def __repr__(self) -> str:
        return f"<NodeRuntime {self.party.name} {self._state}>"


def _fail_stopped(
    calls: list[tuple[Callable[[Node[HubT]], Any], Future[Any]]], party: Party
) -> None:
    for _, future in calls:
        if future.set_running_or_notify_cancel():
            future.set_exception(NodeStoppedError(f"the node of {party} stopped"))


def _run_call(fn: Callable[[Node[HubT]], T], node: Node[HubT], future: Future[T]) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while queued
    try:
        result = fn(node)
    except BaseException as exc:  # the caller's to see, through the future
        future.set_exception(exc)
    else:
        future.set_result(result)


# ----- driving manual-mode runtimes ---------------------------------------------------------------


class ManualDriver:
    """Moves the manual-mode ``NodeRuntime``s of the parties of ``network``.

    An event is a frame handed to its recipient (``deliver_next``: the oldest deliverable one)
    or the timers that are due (``fire_timers``). ``step`` does the next event and, when only
    timers are left, waits for the earliest of them through ``wait(seconds)``: move a test
    clock for simulated time, or sleep for real time. ``observe`` sees every frame
    ``deliver_next`` hands over, after its recipient handled it.
    """

    def __init__(
        self,
        network: InMemoryNetwork,
        *,
        observe: Callable[[InFlightMessage], object] | None = None,
    ) -> None:
        self.network = network
        self.observe = observe
        # Any: the driver moves nodes of every hub class alike.
        self._runtimes: dict[str, NodeRuntime[Any]] = {}

    def add(self, runtime: NodeRuntime[Any]) -> None:
        """Move ``runtime`` from now on (replacing the stopped runtime of the same party)."""
        current = self._runtimes.get(runtime.party.name)
        if current is not None and current.is_running and current is not runtime:
            raise ValueError(f"{runtime.party} already runs here: stop its runtime first")
        self._runtimes[runtime.party.name] = runtime

    def runtime(self, party: Party | str) -> NodeRuntime[Any]:
        """The runtime of ``party`` (or of the party of that name)."""
        name = party if isinstance(party, str) else party.name
        try:
            return self._runtimes[name]
        except KeyError:
            raise KeyError(f"no runtime for {name!r} on this network") from None

    @property
    def runtimes(self) -> list[NodeRuntime[Any]]:
        """Every runtime added, running or not, in the order their parties were added."""
        return list(self._runtimes.values())

    def pending(self) -> list[InFlightMessage]:
        """Frames waiting for a running recipient, in delivery order."""
        return self.network.pending()

    def deliver_next(self) -> InFlightMessage | None:
        """Hand the oldest deliverable frame to its recipient and let it handle it (after its
        due timers); None when there is none."""
        return self._deliver_next(fire_timers=True)

    def _deliver_next(self, *, fire_timers: bool) -> InFlightMessage | None:
        taken = self.network.take_next()
        if taken is None:
            return None
        message, deliver = taken
        runtime = self._runtimes[message.recipient.name]
        if deliver == runtime.deliver:  # the runtime's own endpoint: hand it the frame at once
            runtime.pump_frame(message.sender, message.frame, fire_timers=fire_timers)
        else:
            deliver(message.sender, [message.frame])
            runtime.pump()
        if self.observe is not None:
            self.observe(message)
        return message

    def deliver_all(self) -> int:
        """Hand every deliverable frame over, each recipient's as one batch, and let the
        recipients handle them (in the order their first frame was queued)."""
        order = list(dict.fromkeys(m.recipient.name for m in self.network.pending()))
        delivered = self.network.deliver_all()
        for name in order:
            self._runtimes[name].run_until_quiet()
        return delivered

    def fire_timers(self) -> int:
        """Let every running node fire its due timers (and run what else waits for it)."""
        done = 0
        for runtime in list(self._runtimes.values()):  # a call may add a runtime
            done += runtime.pump()  # 0 at once when not running, or with nothing due
        return done

    def next_deadline(self) -> datetime | None:
        """The earliest sleep or retry deadline of a running node."""
        deadlines = [d for runtime in self.runtimes if runtime.is_running
                     and (d := runtime.node.next_deadline()) is not None]
        return min(deadlines, default=None)

    def run(self, max_messages: int | None = None) -> int:
        """Deliver frames one at a time, oldest first, until none is left or ``max_messages``
        were delivered. Time does not move. Returns how many were delivered.

        Each delivery pumps its recipient only (which first runs its queued calls); every
        running node fires its due timers before the first delivery and whenever no frame is
        left, and what they send is delivered too. (Pumping every node before each delivery
        cost more than the delivery itself; with a clock that does not move during ``run``,
        nothing becomes due in between.)"""
        delivered = 0
        if max_messages is not None and max_messages <= 0:
            return 0  # (no delivery: no "before the first" either)
        self.fire_timers()
        while max_messages is None or delivered < max_messages:
            if self._deliver_next(fire_timers=False) is None:
                self.fire_timers()
                if self._deliver_next(fire_timers=False) is None:
                    break
            delivered += 1
        return delivered

    def step(
        self,
        now: Callable[[], datetime],
        wait: Callable[[float], object],
        *,
        max_wait: float | None = None,
    ) -> bool:
        """Do the next event: fire due timers, else deliver one frame, else ``wait`` until the
        earliest deadline (``now`` is the nodes' clock) and fire it. False when nothing can
        move: no frame, no deadline, or the deadline is more than ``max_wait`` seconds away."""
        if self.fire_timers():
            return True
        if self.deliver_next() is not None:
            return True
        deadline = self.next_deadline()
        if deadline is None:
            return False
        seconds = max((deadline - now()).total_seconds(), 0.0)
        if max_wait is not None and seconds > max_wait:
            return False
        wait(seconds)
        self.fire_timers()
        return True
