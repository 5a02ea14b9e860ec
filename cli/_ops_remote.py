"""``RemoteNodeOps``: the shell's operations (``NodeOps``) on a node in another process, over
its RPC (``fibers.rpc``; docs/rpc.md). The shell cannot tell it from an embedded node's.

Feed events arrive on the RPC client's reader threads; they are queued and handed to the
shell's callbacks by :meth:`RemoteNodeOps.pump`, on the shell's thread, as the embedded
network's events are. A remote node moves by itself, so ``pump`` only waits for events; it
calls the node idle ("nothing can move") when no event came for ``idle_after`` seconds.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cli._convert import FlowArgumentError, UnknownNameError
from cli._convert_flows import ParamSpec
from cli._ops import NodeDownError, NodeOps, RunIdError
from cli._ops_feeds import FeedSubscription, TrackedStart
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
)
from fibers.rpc import RpcClient, RpcConnectionError, RpcError
from ledger import StateAndRef

__all__ = ["RemoteNodeOps"]

_LOCAL_ERRORS: dict[str, Callable[[str], Exception]] = {
    "RunIdError": RunIdError, "UnknownNameError": UnknownNameError,
    "FlowArgumentError": FlowArgumentError, "NodeDownError": NodeDownError,
}


def _outcome(data: dict[str, Any] | None) -> FlowOutcome | None:
    return None if data is None else FlowOutcome(**data)


def _machine(data: dict[str, Any]) -> StateMachine:
    return StateMachine(**data)


def _progress(data: dict[str, Any]) -> ProgressSnapshot:
    return ProgressSnapshot(data["run_id"], data["flow_class"],
                            tuple((int(d), str(label)) for d, label in data["steps"]),
                            data["index"], data["error"], _outcome(data["outcome"]))


def _vault_row(data: dict[str, Any]) -> VaultRow:
    return VaultRow(data["ref"], data["state_type"], data["description"], data["notary"],
                    data["contract"], data["locked"],
                    tuple((str(k), str(v)) for k, v in data["fields"]))


def _class_info(data: dict[str, Any]) -> FlowClassInfo:
    return FlowClassInfo(data["name"], data["qualified_name"], data["signature"],
                         tuple(ParamSpec(**p) for p in data["params"]))


class RemoteNodeOps(NodeOps):
    """The operations of the node behind ``client``; every one is an RPC call (see the
    module docstring). Implements every public operation of ``NodeOps``."""

    def __init__(self, client: RpcClient, *, idle_after: float = 2.0) -> None:
        # NodeOps' own state (a node source, a flow book) lives in the server's process.
        self._client = client
        self._idle_after = idle_after
        self._events: queue.Queue[Callable[[], object]] = queue.Queue()
        self._last_event = time.monotonic()
        self._up = True
        self._name = str(self._call("node_info")["name"])

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Raise the shell's own errors for the server's (``NodeDownError`` when the node
        cannot be reached, which also marks it down)."""
        try:
            yield
        except RpcConnectionError as exc:
            self._up = False
            raise NodeDownError(f"node {getattr(self, '_name', self._client.url)} cannot be "
                                f"reached: {exc}") from None
        except RpcError as exc:
            local = _LOCAL_ERRORS.get(exc.type)
            if local is not None:
                raise local(exc.message) from None
            raise

    def _call(self, operation: str, **arguments: Any) -> Any:
        with self._translated():
            result = self._client.call(operation, **arguments)
        self._up = True
        return result

    def _subscribe(self, feed: str, deliver: Callable[[Any], object],
                   **arguments: Any) -> tuple[Any, FeedSubscription]:
        def queued(event: Any) -> None:
            self._events.put(lambda: deliver(event))

        with self._translated():
            first, subscription = self._client.subscribe(feed, queued, **arguments)
        self._last_event = time.monotonic()
        return first, FeedSubscription(subscription.unsubscribe)

    # ----- the node ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's legal name."""
        return self._name

    @property
    def is_up(self) -> bool:
        """False once the node could not be reached (until a call reaches it again)."""
        return self._up

    @property
    def client(self) -> RpcClient:
        """The RPC client this runs on."""
        return self._client

    def refresh(self) -> None:
        """Nothing to do here: the server looks at its node while feeds are open."""

    def node_info(self) -> NodeSummary:
        data = self._call("node_info")
        return NodeSummary(**{**data, "vault": tuple((str(k), int(n)) for k, n in data["vault"])})

    def network_map(self) -> list[PartyRow]:
        return [PartyRow(**row) for row in self._call("network_map")]

    def set_draining(self, draining: bool) -> None:
        self._call("set_draining", draining=draining)

    # ----- flows ---------------------------------------------------------------------------------

    def startable_flows(self) -> list[FlowClassInfo]:
        return [_class_info(row) for row in self._call("startable_flows")]

    def flow_class_info(self, flow_name: str) -> FlowClassInfo:
        return _class_info(self._call("flow_class_info", flow=flow_name))

    def start_flow(self, flow_name: str, args: dict[str, str]) -> RunIdResult:
        return RunIdResult(**self._call("start_flow", flow=flow_name, args=args))

    def start_tracked_flow(
        self,
        flow_name: str,
        args: dict[str, str],
        on_progress: Callable[[ProgressSnapshot], object],
    ) -> TrackedStart:
        first, feed = self._subscribe("start_tracked_flow", lambda e: on_progress(_progress(e)),
                                      flow=flow_name, args=args)
        for snapshot in first["progress"]:
            on_progress(_progress(snapshot))
        return TrackedStart(first["run_id"], first["flow_class"], feed)

    def state_machines(self) -> list[StateMachine]:
        return [_machine(row) for row in self._call("state_machines")]

    def state_machines_feed(
        self, on_update: Callable[[StateMachineUpdate], object]
    ) -> FeedSubscription:
        def deliver(data: dict[str, Any]) -> None:
            on_update(StateMachineUpdate(data["kind"], _machine(data["machine"]),
                                         _outcome(data["outcome"])))

        _snapshot, feed = self._subscribe("state_machines_feed", deliver)
        return feed

    def recent_outcomes(self) -> list[FlowOutcome]:
        return [FlowOutcome(**row) for row in self._call("recent_outcomes")]

    def progress_feed(
        self, run_id: str, on_progress: Callable[[ProgressSnapshot], object]
    ) -> FeedSubscription:
        first, feed = self._subscribe("progress_feed", lambda e: on_progress(_progress(e)),
                                      run_id=run_id)
        for snapshot in first:
            on_progress(_progress(snapshot))
        return feed

    def resolve_run_id(self, text: str) -> str:
        return str(self._call("resolve_run_id", run_id=text))

    def outcome(self, run_id: str) -> FlowOutcome | None:
        return _outcome(self._call("outcome", run_id=run_id))

    def inspect_flow(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("inspect_flow", run_id=run_id)
        return result

    def kill_flow(self, run_id: str) -> bool:
        return bool(self._call("kill_flow", run_id=run_id))

    def hospital(self) -> list[HospitalRow]:
        return [HospitalRow(**row) for row in self._call("hospital")]

    def retry(self, run_id: str) -> bool:
        return bool(self._call("retry", run_id=run_id))

    def hospital_kill(self, run_id: str) -> bool:
        return bool(self._call("hospital_kill", run_id=run_id))

    def checkpoints_dump(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("checkpoints_dump")
        return result

    # ----- the vault -----------------------------------------------------------------------------

    def state_types(self) -> list[str]:
        return [str(name) for name in self._call("state_types")]

    def vault_query(self, state_type: str | None = None) -> list[VaultRow]:
        return [_vault_row(row) for row in self._call("vault_query", state_type=state_type)]

    def vault_track(
        self, on_change: Callable[[VaultChange], object], state_type: str | None = None
    ) -> tuple[list[VaultRow], FeedSubscription]:
        def deliver(data: dict[str, Any]) -> None:
            on_change(VaultChange(tuple(_vault_row(r) for r in data["consumed"]),
                                  tuple(_vault_row(r) for r in data["produced"])))

        rows, feed = self._subscribe("vault_track", deliver, state_type=state_type)
        return [_vault_row(row) for row in rows], feed

    def state_and_ref(self, text: str) -> StateAndRef[Any]:
        """Not over RPC: states stay on the node (flow arguments naming a state are converted
        there)."""
        raise NodeDownError("state objects are not sent over the RPC; pass the state's "
                            "reference text as a flow argument instead")

    # ----- events --------------------------------------------------------------------------------

    def pump(
        self,
        until: Callable[[], bool] | None = None,
        *,
        max_events: int | None = None,
        time_budget: float = 2.0,
    ) -> bool:
        """Hand queued feed events to their callbacks until ``until()``, ``max_events``
        events, or ``time_budget`` seconds (without ``until``: at most 0.1 s of waiting).
        Returns True when no event came for ``idle_after`` seconds (nothing seems to move)."""
        deadline = time.monotonic() + (time_budget if until is not None else 0.1)
        events = 0
        while max_events is None or events < max_events:
            if until is not None and until():
                return False
            try:
                action = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return time.monotonic() - self._last_event >= self._idle_after
            action()
            events += 1
            self._last_event = time.monotonic()
        return False
