"""One simulated run of the explorer: a fresh ``MockNetwork`` moved one chosen event at a time
(see ``fibers.testing._schedule`` for the events and ``fibers.testing._explore`` for how they
are chosen).

Determinism: the network lives in a fresh directory, its clock is a ``TestClock``, frames are
named by ``LabelledNetwork``, and every node draws its run and session ids from ``SeededIds``
seeded with the explorer's seed, its name and how often it was started (``Node.ids``). Keys and
signatures stay random: a run never depends on their values unless a flow orders by them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibers._errors import SerializationError
from fibers._ids import SeededIds
from fibers._messages import Data, ExistingSessionMessage, InitialSessionMessage, decode_message
from fibers._node import Node
from fibers._storage_faults import FaultPlan
from fibers.runtime import ManualDriver
from fibers.testing._mock_network import MockNetwork
from fibers.testing._schedule import Choice, Fault, LabelledNetwork, ScheduleError
from fibers.transport import InFlightMessage

__all__ = ["END", "TIMERS", "Options", "SimulatedCrash", "Simulation"]

# Any: networks of every hub class alike (MockNetwork[LedgerServiceHub], ...).
Scenario = Callable[[MockNetwork[Any]], object]
Invariant = Callable[[MockNetwork[Any]], object]

TIMERS = Choice("timers")
END = Choice("end")
_POINTS = {"before": "<", "after": ">"}


class SimulatedCrash(BaseException):
    """Raised at a node's commit hook to crash it there (a BaseException, so that no handler
    of the engine takes it for an error of a flow)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


@dataclass(frozen=True)
class Options:
    """What the explorer may do to a run (see ``fibers.testing.explore``)."""

    crashes: bool = True
    reorder: bool = True
    duplicates: bool = True
    storage_faults: bool = False
    max_crashes: int = 1
    max_duplicates: int = 1
    max_faults: int = 1
    max_events: int = 1000
    seed: int = 0
    network: Callable[[Path], MockNetwork[Any]] = MockNetwork
    shrink: bool = True


@dataclass
class Observed:
    """What one event did, from which the explorer learns the faults it could inject there."""

    commits: dict[str, int]  # commits per node during the event (before any crash)
    writes: dict[str, int]  # storage writes per node (with storage faults only)
    restore_commits: int  # commits of the restore after the event's crash


def describe(frame: bytes) -> str:
    """One short line for a frame of a transcript."""
    try:
        message = decode_message(frame)
    except SerializationError as exc:
        return f"malformed frame ({exc})"
    if isinstance(message, InitialSessionMessage):
        text = f"open {message.flow_class.rpartition(':')[2]}"
        if message.first_payload is not None:
            text += f" with {message.first_payload!r}"
    elif isinstance(message, ExistingSessionMessage):
        body = message.body
        text = f"seq {message.seq} {type(body).__name__}"
        if isinstance(body, Data):
            text += f" {body.payload!r}"
    else:
        text = type(message).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class Simulation:
    """A fresh network with ``scenario`` run on it, then moved by ``execute``."""

    def __init__(self, scenario: Scenario, options: Options) -> None:
        self.options = options
        self._dir = Path(tempfile.mkdtemp(prefix="fibers-explore-"))
        self.net = options.network(self._dir / "network")
        self.labelled = LabelledNetwork()
        self.net.network = self.labelled
        self.net.driver = ManualDriver(self.labelled, observe=self.net._record_delivery)
        self.net.node_hooks.append(self._prepare)
        self._starts: dict[str, int] = defaultdict(int)
        self._plans: dict[str, FaultPlan] = {}
        self._building: dict[str, Node] = {}
        self._commits: dict[str, int] = defaultdict(int)
        self._armed: tuple[str, str, int] | None = None
        # Invariant: `delivered` holds every frame handed over so far, by its deliver choice;
        # `duplicated` those of them delivered again.
        self.delivered: dict[Choice, InFlightMessage] = {}
        self.duplicated: set[Choice] = set()
        self.crashes = self.duplicates = self.faults = 0
        self.trace: list[Choice] = []
        self.transcript: list[str] = []
        self.limited = True  # budgets apply (a replay lifts them: its schedule decides)
        scenario(self.net)

    # ----- the nodes' hooks ---------------------------------------------------------------------

    def _prepare(self, node: Node) -> None:
        name = node.party.name
        node.ids = SeededIds(f"{self.options.seed}:{name}:{self._starts[name]}")
        self._starts[name] += 1
        node.commit_hook = self._on_commit
        self._building[name] = node
        if self.options.storage_faults and node.storage is not None:
            plan = self._plans[name] = FaultPlan()
            node.storage.inject_faults(plan)

    def _on_commit(self, node: Node, point: str) -> None:
        name, mark = node.party.name, _POINTS[point]
        if mark == "<":
            index = self._commits[name]
            self._commits[name] += 1
        else:
            index = self._commits[name] - 1
        if self._armed == (name, mark, index):
            self._armed = None
            raise SimulatedCrash(name)

    # ----- what may happen next -----------------------------------------------------------------

    def enabled(self) -> list[Choice]:
        """The events possible now: deliveries (queue order), else ``timers`` when a deadline
        waits; then duplicates, with ``end`` before them when nothing else can move. Empty:
        the network is quiet and no duplicate may be made."""
        self._deliver_acknowledgements()
        deliveries = [choice for choice, _ in self.labelled.candidates()]
        if not self.options.reorder:
            deliveries = deliveries[:1]
        choices = deliveries
        if not deliveries and self.deadline() is not None:
            choices.append(TIMERS)
        dups: list[Choice] = []
        if self.options.duplicates and (
            not self.limited or self.duplicates < self.options.max_duplicates
        ):
            # Right after the original, or once quiet (see fibers.testing._schedule).
            last = self.trace[-1].base if self.trace else None
            dups = [Choice("dup", c.sender, c.recipient, c.number) for c in self.delivered
                    if c not in self.duplicated and (not choices or c == last)]
        if dups and not choices:
            choices.append(END)
        return choices + dups

    def _deliver_acknowledgements(self) -> None:
        while acks := self.labelled.acknowledgements():
            for ack in acks:
                self.labelled.hand_over(ack)
                self.net.driver.runtime(ack.recipient).pump()

    def deadline(self) -> object:
        """The earliest deadline of any node (sleep, retry, redelivery), or None."""
        dues = [due for node in self.net.nodes
                for due in (node.next_deadline(), node.redelivery_due) if due is not None]
        return min(dues, default=None)

    def may_crash(self) -> bool:
        return self.options.crashes and self.crashes < self.options.max_crashes

    def may_fail_writes(self) -> bool:
        return self.options.storage_faults and self.faults < self.options.max_faults

    # ----- moving ---------------------------------------------------------------------------------

    def execute(self, choice: Choice) -> tuple[Choice, Observed]:
        """Run ``choice``; returns it as it happened (without a fault that never came to pass)
        and what the event did."""
        self._commits.clear()
        writes = {name: plan.writes for name, plan in self._plans.items()}
        fault, restore_commits = choice.fault, 0
        failing = self._arm(fault, writes) if fault is not None else None
        try:
            self._run(choice)
        except SimulatedCrash as crash:
            crashed = True
            commits = dict(self._commits)
            restore_commits = self._restart(crash.node, fault.restore if fault else None)
        else:
            crashed = False
            commits = dict(self._commits)
        finally:
            self._armed = None
        if fault is not None and not fault.is_crash:
            crashed = self._disarm(fault, failing)
        if fault is not None and not crashed:
            choice = choice.base
        elif fault is not None and fault.is_crash:
            self.crashes += 1
        elif fault is not None:
            self.faults += 1
        if choice.kind == "dup":
            self.duplicates += 1
        self.trace.append(choice)
        written = {name: plan.writes - writes.get(name, 0) for name, plan in self._plans.items()}
        return choice, Observed(commits, written, restore_commits)

    def _arm(self, fault: Fault, writes: dict[str, int]) -> tuple[int, int] | None:
        """Arm ``fault`` for the coming event; for a write failure, (write number, failures
        injected so far)."""
        if fault.is_crash:
            self._armed = (fault.node, fault.point, fault.index)
            return None
        plan = self._plans.get(fault.node)
        if plan is None:
            raise ScheduleError(f"{fault}: storage faults are off or {fault.node} has no "
                                "storage")
        plan.fail_writes(writes[fault.node] + fault.index)
        return writes[fault.node] + fault.index, plan.injected

    def _disarm(self, fault: Fault, failing: tuple[int, int] | None) -> bool:
        """Whether the write failure ``fault`` happened; disarms it if it did not."""
        assert failing is not None
        plan = self._plans[fault.node]
        plan.disarm_write(failing[0])  # a write that never came must not fail later
        if plan.injected > failing[1]:
            self.transcript.append(f"  {fault.node}'s storage write {fault.index} failed")
            return True
        return False

    def _run(self, choice: Choice) -> None:
        if choice.kind == "deliver":
            found = [m for c, m in self.labelled.candidates() if c == choice.base]
            if not found:
                raise ScheduleError(f"{choice}: no such frame can be delivered now")
            candidate, message = choice.base, found[0]
            self.delivered[candidate] = message
            self._note(choice, message)
            self.labelled.hand_over(message)
            self.net.driver.runtime(message.recipient).pump()
            self.net._record_delivery(message)
        elif choice.kind == "dup":
            key = Choice("deliver", choice.sender, choice.recipient, choice.number)
            original = self.delivered.get(key)
            if original is None:
                raise ScheduleError(f"{choice}: that frame was not delivered before")
            self.duplicated.add(key)
            self._note(choice, original)
            runtime = self.net.driver.runtime(original.recipient)
            runtime.deliver(original.sender, [original.frame])
            runtime.pump()
        elif choice.kind == "timers":
            due = self.deadline()
            now = self.net.clock.now()
            self.transcript.append(f"{choice}: the clock moves to the next deadline")
            if due is not None and due > now:  # type: ignore[operator]
                self.net.clock.advance(due - now)  # type: ignore[operator]
            self.net.driver.fire_timers()

    def _note(self, choice: Choice, message: InFlightMessage) -> None:
        self.transcript.append(f"{choice}: {describe(message.frame)}")

    def _restart(self, name: str, restore: tuple[str, int] | None) -> int:
        """Restart the crashed node ``name`` from its storage (crashing it once more at its
        restore's commit ``restore`` when given); returns how many commits the restore made."""
        self.transcript.append(f"  {name} crashed; restarted from its storage")
        old = self.net.node(name)
        self._commits[name] = 0
        if restore is not None:
            self._armed = (name, restore[0], restore[1])
        try:
            self.net.restart_node(old)
        except SimulatedCrash:
            self._building[name].stop()  # the half-built node: closes its storage
            self.transcript.append(f"  {name} crashed while restoring; restarted again")
            self._armed = None
            self._commits[name] = 0
            self.net.restart_node(old)
        return self._commits[name]

    def check(self, invariant: Invariant) -> None:
        """Run ``invariant`` on the quiet network."""
        invariant(self.net)

    def close(self) -> None:
        try:
            self.net.stop_nodes()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
