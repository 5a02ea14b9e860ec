"""``NodeOps``: every operation the shell performs on a node, as values in and values out.

The shell talks to a node through this class only. Arguments are strings and plain values,
results are frozen values (or JSON-ready dicts), and live information arrives through feeds
(``*_feed``/``*_track`` methods taking a callback and returning a :class:`FeedSubscription`),
so that a later RPC client can offer the same surface for a node in another process.

Run ids are given as text: the full id or a unique prefix of it (like git's abbreviated
hashes), matched against the node's running and hospitalised flows and the flows this
``NodeOps`` saw finish recently.

Threading: like the node, a ``NodeOps`` belongs to the thread that drives the node's
scheduler. In the embedded network that is the shell's own thread: nothing moves unless
:meth:`NodeOps.pump` (or an operation such as starting a flow) runs the scheduler loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cli._convert_flows import (
    NodeContext,
    build_flow,
    find_flow,
    parameter_specs,
    signature_text,
    startable_flows,
    state_type_names,
)
from cli._ops_feeds import (
    FeedSubscription,
    NetworkDriver,
    TrackedStart,
)
from cli._ops_flows import FlowBook, hospital_rows
from cli._ops_values import (
    FlowClassInfo,
    FlowOutcome,
    HospitalRow,
    NodeSummary,
    PartyRow,
    ProgressSnapshot,
    RunIdResult,
    StateMachine,
    StateMachineUpdate,
    VaultChange,
    VaultRow,
    vault_row,
)
from fibers import FlowLogic, Node, StateMachineRunId
from ledger import ContractState, LedgerServiceHub, StateAndRef

__all__ = [
    "FeedSubscription",
    "NetworkDriver",
    "NodeDownError",
    "NodeOps",
    "RunIdError",
    "TrackedStart",
]


class NodeDownError(RuntimeError):
    """The node is stopped (crashed); it must be restarted before it can be operated."""


class RunIdError(LookupError):
    """No flow, or more than one, matches the run id (or prefix) that was given."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NodeOps:
    """Operations on one node. ``node`` is the node, or a function returning the current node
    object (an embedded node that was restarted is a new object); ``driver`` moves the network
    for :meth:`pump` (None: the node moves by itself and ``pump`` does nothing); ``flows``
    lists the flow classes that may be started (default: every imported ``@startable_by_rpc``
    flow); ``history`` bounds how many finished flows are remembered."""

    def __init__(
        self,
        node: Node[LedgerServiceHub] | Callable[[], Node[LedgerServiceHub]],
        *,
        driver: NetworkDriver | None = None,
        flows: Callable[[], list[type[FlowLogic[Any]]]] = startable_flows,
        history: int = 200,
    ) -> None:
        self._node_source: Callable[[], Node[LedgerServiceHub]] = (
            node if callable(node) else (lambda: node))
        self._driver = driver
        self._flows = flows
        self._book = FlowBook(history)

    # ----- the node ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's legal name (known even while it is down)."""
        return self._node_source().party.name

    @property
    def is_up(self) -> bool:
        """Whether the node is running."""
        return not self._node_source().stopped

    def _node(self) -> Node[LedgerServiceHub]:
        node = self._node_source()
        if node.stopped:
            raise NodeDownError(f"node {node.party.name} is down")
        self._book.see(node)
        return node

    def _sync(self) -> None:
        node = self._node_source()
        if not node.stopped:
            self._book.see(node)
            self._book.sync(node)

    def refresh(self) -> None:
        """Look at the node now, so feeds report what changed since the last look (a node on
        its own thread moves between operations; the RPC server calls this periodically)."""
        self._sync()

    def node_info(self) -> NodeSummary:
        """Who the node is and what it holds."""
        node = self._node()
        counts: dict[str, int] = {}
        # mypy refuses an abstract class for type[T] (python/mypy#4717); every state is one.
        every: type[ContractState] = ContractState  # type: ignore[type-abstract]
        for sar in node.services.vault.query(every):
            kind = type(sar.state.data).__qualname__
            counts[kind] = counts.get(kind, 0) + 1
        return NodeSummary(
            name=node.party.name,
            key=node.party.owning_key.hex(),
            notary=node.services.is_notary,
            flows=len(node.flows()),
            hospitalised=len(node.hospital()),
            draining=node.is_draining,
            drained=node.is_drained,
            vault=tuple(sorted(counts.items())),
        )

    def network_map(self) -> list[PartyRow]:
        """Every party the node knows, by name."""
        node = self._node()
        notaries = {p.name for p in node.services.notary_identities()}
        return [PartyRow(p.name, p.owning_key.hex(), p.name in notaries, p == node.party)
                for p in node.network_map.all_parties()]

    def set_draining(self, draining: bool) -> None:
        """Refuse (or again accept) new flow starts and inbound sessions."""
        self._node().set_flows_draining_mode(draining)

    # ----- starting flows ------------------------------------------------------------------------

    def startable_flows(self) -> list[FlowClassInfo]:
        """The flows that may be started, with their signatures."""
        return [FlowClassInfo(cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}",
                              signature_text(cls), tuple(parameter_specs(cls)))
                for cls in self._flows()]

    def flow_class_info(self, flow_name: str) -> FlowClassInfo:
        """The startable flow called ``flow_name``; ``UnknownNameError`` otherwise."""
        cls = find_flow(flow_name, self._flows())
        return FlowClassInfo(cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}",
                             signature_text(cls), tuple(parameter_specs(cls)))

    def start_flow(self, flow_name: str, args: dict[str, str]) -> RunIdResult:
        """Start the startable flow called ``flow_name`` (short or qualified) with ``args``
        (parameter name -> text, converted by annotated type: see ``cli._convert``). Runs the
        flow to its first suspension. Raises ``UnknownNameError`` for an unknown flow,
        ``FlowArgumentError`` naming the signature for bad arguments, and the node's error
        when it refuses the start (e.g. draining)."""
        node = self._node()
        cls = find_flow(flow_name, self._flows())
        flow = build_flow(cls, args, NodeContext(node))
        handle = node.start_flow(flow)
        run_id = str(handle.id)
        self._book.attach(node, run_id, cls.__qualname__, handle.result, flow.progress_tracker)
        self._sync()
        return RunIdResult(run_id, cls.__qualname__)

    def start_tracked_flow(
        self,
        flow_name: str,
        args: dict[str, str],
        on_progress: Callable[[ProgressSnapshot], object],
    ) -> TrackedStart:
        """:meth:`start_flow`, subscribed to the flow's progress (see :meth:`progress_feed`)."""
        started = self.start_flow(flow_name, args)
        return TrackedStart(started.run_id, started.flow_class,
                            self.progress_feed(started.run_id, on_progress))

    # ----- flows ---------------------------------------------------------------------------------

    def state_machines(self) -> list[StateMachine]:
        """The node's unfinished flows (hospitalised ones are in :meth:`hospital`)."""
        self._sync()
        return self._book.running()

    def state_machines_feed(
        self, on_update: Callable[[StateMachineUpdate], object]
    ) -> FeedSubscription:
        """Flows added, changed (status, step, wait) and removed (with their outcome) from now
        on; :meth:`state_machines` is the snapshot."""
        self._sync()
        return self._book.machines.add(on_update)

    def recent_outcomes(self) -> list[FlowOutcome]:
        """How the flows this ``NodeOps`` saw finish ended, oldest first."""
        return self._book.outcomes()

    def progress_feed(
        self, run_id: str, on_progress: Callable[[ProgressSnapshot], object]
    ) -> FeedSubscription:
        """The flow's progress tree now, then after each change, then with its outcome (last).
        A finished flow delivers its final snapshot at once."""
        return self._book.progress_feed(self.resolve_run_id(run_id), on_progress)

    def resolve_run_id(self, text: str) -> str:
        """The full run id that ``text`` (a full id or a unique prefix) names; ``RunIdError``
        naming the candidates otherwise."""
        self._sync()
        wanted = text.strip().lower()
        candidates = self._book.candidates(self._hospital_rows())
        if wanted in candidates:
            return wanted
        compact = wanted.replace("-", "")
        matches = [rid for rid in candidates if rid.replace("-", "").startswith(compact)]
        if compact and len(matches) == 1:
            return matches[0]
        if not compact or not matches:
            raise RunIdError(f"no flow on {self.name} has a run id starting {text.strip()!r}")
        listed = ", ".join(f"{m[:8]} ({candidates[m]})" for m in sorted(matches))
        raise RunIdError(f"run id {text.strip()!r} is ambiguous: it starts {listed}")

    def outcome(self, run_id: str) -> FlowOutcome | None:
        """How the flow ended, if this ``NodeOps`` saw it end."""
        snapshot = self._book.finished(self.resolve_run_id(run_id))
        return snapshot.outcome if snapshot is not None else None

    def inspect_flow(self, run_id: str) -> dict[str, Any]:
        """The flow's suspended stack (locals as reprs), sessions, progress step and what it
        waits for; for a flow seen to finish, its outcome."""
        rid = self.resolve_run_id(run_id)
        try:
            return self._node().inspect_flow(StateMachineRunId.parse(rid))
        except KeyError:
            outcome = self.outcome(rid)
            if outcome is None:
                raise RunIdError(f"flow {rid} is not on {self.name} any more") from None
            return {"run_id": rid, "flow_class": outcome.flow_class, "status": outcome.status,
                    "result": outcome.result, "error": outcome.error, "stack": []}

    def kill_flow(self, run_id: str) -> bool:
        """End the flow with ``KilledFlowException`` (a hospitalised one too); False when it
        is not running."""
        killed = self._node().kill_flow(StateMachineRunId.parse(self.resolve_run_id(run_id)))
        self._sync()
        return killed

    def hospital(self) -> list[HospitalRow]:
        """Hospitalised flows with their diagnosis."""
        return self._hospital_rows()

    def _hospital_rows(self) -> list[HospitalRow]:
        rows = hospital_rows(self._node())
        self._book.note_hospital(rows)
        return rows

    def retry(self, run_id: str) -> bool:
        """Run a hospitalised flow again from its checkpoint; False when it is not there."""
        rid = self.resolve_run_id(run_id)
        retried = self._node().retry_flow(StateMachineRunId.parse(rid))
        self._sync()
        return retried

    def hospital_kill(self, run_id: str) -> bool:
        """Kill a hospitalised flow; False when it is not in the hospital."""
        rid = self.resolve_run_id(run_id)
        if rid not in {row.run_id for row in self._hospital_rows()}:
            return False
        return self.kill_flow(rid)

    def checkpoints_dump(self) -> list[dict[str, Any]]:
        """Every stored checkpoint as a JSON-ready dict."""
        return self._node().dump_checkpoints()

    # ----- the vault -----------------------------------------------------------------------------

    def state_types(self) -> list[str]:
        """The names of the state classes ``vault_query`` accepts."""
        return state_type_names()

    def vault_query(self, state_type: str | None = None) -> list[VaultRow]:
        """The node's unconsumed states (of ``state_type``, by name, when given)."""
        node = self._node()
        kind: type[ContractState] = (
            NodeContext(node).state_type(state_type) if state_type else ContractState)
        vault = node.services.vault
        free = {sar.ref for sar in vault.query(kind, include_soft_locked=False)}
        return [vault_row(sar, sar.ref not in free) for sar in vault.query(kind)]

    def vault_track(
        self, on_change: Callable[[VaultChange], object], state_type: str | None = None
    ) -> tuple[list[VaultRow], FeedSubscription]:
        """The vault now (as :meth:`vault_query`) and a feed of what each recorded transaction
        consumed and produced from now on. The feed ends when the node stops."""
        node = self._node()
        kind: type[ContractState] = (
            NodeContext(node).state_type(state_type) if state_type else ContractState)
        stream = node.services.vault.track(kind)
        already = len(stream.values)
        seen = 0

        def forward(update: Any) -> None:
            nonlocal seen
            seen += 1
            if seen > already:  # the stream replays its history first: that is the snapshot
                on_change(VaultChange(tuple(vault_row(s, False) for s in update.consumed),
                                      tuple(vault_row(s, False) for s in update.produced)))

        subscription = stream.subscribe(forward)
        return self.vault_query(state_type), FeedSubscription(subscription.unsubscribe)

    def state_and_ref(self, text: str) -> StateAndRef[Any]:
        """The unconsumed state at ``text`` (``hash(index)``, hash maybe abbreviated)."""
        return NodeContext(self._node()).state_and_ref(text)

    # ----- moving the network --------------------------------------------------------------------

    def pump(
        self,
        until: Callable[[], bool] | None = None,
        *,
        max_events: int | None = None,
        time_budget: float = 2.0,
    ) -> bool:
        """Run the network's scheduler loop until ``until()``, ``max_events`` deliveries, or
        ``time_budget`` seconds; returns True when it stopped because nothing can move any
        more (every flow waits for something outside: an operator, a node that is down).
        Without a driver the node moves by itself: returns False at once."""
        if self._driver is None:
            return False
        deadline, events = time.monotonic() + time_budget, 0
        while max_events is None or events < max_events:
            if until is not None and until():
                return False
            if not self._driver.step():
                self._sync()
                return True
            events += 1
            self._sync()
            if time.monotonic() > deadline:
                break
        return False
