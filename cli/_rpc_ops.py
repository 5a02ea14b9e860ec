"""The shell's operations (``NodeOps``) as RPC operations and feeds (docs/rpc.md): what a
Fibers node's RPC server offers. Each runs on the node thread; values go out as JSON objects
(the fields of the frozen values of ``cli._ops_values``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from cli._convert import FlowArgumentError, UnknownNameError
from cli._convert_flows import find_flow, startable_flows
from cli._ops import NodeDownError, NodeOps, RunIdError
from cli._ops_feeds import FeedSubscription
from fibers import FlowConfigurationError, FlowLogic
from fibers.rpc import Feed, Operation, Param

__all__ = ["error_status", "node_feeds", "node_operations", "start_permissions"]

_RUN_ID = Param("run_id", str, description="a run id or a unique prefix of it")
_FLOW = Param("flow", str, description="the flow class: short or qualified name")
_ARGS = Param("args", dict, required=False, values=str,
              description="parameter name -> value as text, converted as the shell converts it")
_STATE_TYPE = Param("state_type", str, required=False, description="a state class name")


def jsonable(value: Any) -> Any:
    """``value`` (frozen values, lists, dicts) as plain JSON data."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def start_permissions(
    flows: Callable[[], list[type[FlowLogic[Any]]]],
) -> Callable[[dict[str, Any]], list[str]]:
    """The permissions that allow starting the flow named in the arguments:
    ``StartFlow.<module:qualname>``, ``StartFlow.<module.qualname>`` or
    ``StartFlow.<qualname>``. ``LookupError`` for an unknown flow."""

    def accepted(arguments: dict[str, Any]) -> list[str]:
        cls = find_flow(arguments["flow"], flows())
        module, name = cls.__module__, cls.__qualname__
        return [f"StartFlow.{module}:{name}", f"StartFlow.{module}.{name}", f"StartFlow.{name}"]

    return accepted


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of an operation's error (None: 500)."""
    if isinstance(exc, UnknownNameError | FlowArgumentError | RunIdError):
        return 400
    if isinstance(exc, NodeDownError):
        return 503
    if isinstance(exc, FlowConfigurationError):
        return 409
    return None


def _args(arguments: dict[str, Any]) -> dict[str, str]:
    return dict(arguments.get("args") or {})


def node_operations(
    ops: NodeOps, flows: Callable[[], list[type[FlowLogic[Any]]]] = startable_flows
) -> list[Operation]:
    """The operations of the node ``ops`` operates (``flows``: the startable classes)."""
    starts = start_permissions(flows)

    def op(name: str, summary: str, run: Callable[[dict[str, Any]], Any],
           *params: Param) -> Operation:
        return Operation(name, summary, lambda a: jsonable(run(a)), params)

    return [
        op("node_info", "Who the node is and what it holds", lambda a: ops.node_info()),
        op("network_map", "Every party the node knows", lambda a: ops.network_map()),
        op("set_draining", "Refuse (or accept again) new flows and inbound sessions",
           lambda a: ops.set_draining(a["draining"]), Param("draining", bool)),
        op("startable_flows", "The flows that may be started, with their parameters",
           lambda a: ops.startable_flows()),
        op("flow_class_info", "One startable flow and its parameters",
           lambda a: ops.flow_class_info(a["flow"]), _FLOW),
        Operation("start_flow", "Start a flow; returns once its first step is committed",
                  lambda a: jsonable(ops.start_flow(a["flow"], _args(a))), (_FLOW, _ARGS),
                  permissions=starts),
        op("state_machines", "The unfinished flows", lambda a: ops.state_machines()),
        op("recent_outcomes", "How the flows seen to finish ended",
           lambda a: ops.recent_outcomes()),
        op("resolve_run_id", "The full run id a prefix names",
           lambda a: ops.resolve_run_id(a["run_id"]), _RUN_ID),
        op("outcome", "How a flow ended (null: not seen to end)",
           lambda a: ops.outcome(a["run_id"]), _RUN_ID),
        op("inspect_flow", "A flow's suspended stack, sessions and wait",
           lambda a: ops.inspect_flow(a["run_id"]), _RUN_ID),
        op("kill_flow", "Kill a flow (false: not running)",
           lambda a: ops.kill_flow(a["run_id"]), _RUN_ID),
        op("hospital", "The hospitalised flows and their diagnosis", lambda a: ops.hospital()),
        op("retry", "Retry a hospitalised flow from its checkpoint",
           lambda a: ops.retry(a["run_id"]), _RUN_ID),
        op("hospital_kill", "Kill a hospitalised flow",
           lambda a: ops.hospital_kill(a["run_id"]), _RUN_ID),
        op("checkpoints_dump", "Every stored checkpoint", lambda a: ops.checkpoints_dump()),
        op("state_types", "The state class names vault_query accepts",
           lambda a: ops.state_types()),
        op("vault_query", "The unconsumed states (of one type)",
           lambda a: ops.vault_query(a.get("state_type")), _STATE_TYPE),
    ]


def _collecting(
    subscribe: Callable[[Callable[[Any], object]], Any], emit: Callable[[Any], None]
) -> tuple[list[Any], Any]:
    """Subscribe; what the feed delivers during the subscription itself is returned (it goes
    out as the first event), what comes later is emitted."""
    early: list[Any] = []
    opened = False

    def deliver(value: Any) -> None:
        if opened:
            emit(jsonable(value))
        else:
            early.append(jsonable(value))

    result = subscribe(deliver)
    opened = True
    return early, result


def node_feeds(
    ops: NodeOps, flows: Callable[[], list[type[FlowLogic[Any]]]] = startable_flows
) -> list[Feed]:
    """The feeds of the node ``ops`` operates."""

    def machines(arguments: dict[str, Any], emit: Callable[[Any], None]) -> Any:
        snapshot = jsonable(ops.state_machines())
        feed = ops.state_machines_feed(lambda update: emit(jsonable(update)))
        return snapshot, feed.unsubscribe

    def progress(arguments: dict[str, Any], emit: Callable[[Any], None]) -> Any:
        early, feed = _collecting(lambda cb: ops.progress_feed(arguments["run_id"], cb),
                                  _ends_with_outcome(emit))
        return early, _ending(feed, early, emit)

    def tracked(arguments: dict[str, Any], emit: Callable[[Any], None]) -> Any:
        early, started = _collecting(
            lambda cb: ops.start_tracked_flow(arguments["flow"], _args(arguments), cb),
            _ends_with_outcome(emit))
        first = {"run_id": started.run_id, "flow_class": started.flow_class, "progress": early}
        return first, _ending(started.feed, early, emit)

    def vault(arguments: dict[str, Any], emit: Callable[[Any], None]) -> Any:
        rows, feed = ops.vault_track(lambda change: emit(jsonable(change)),
                                     arguments.get("state_type"))
        return jsonable(rows), feed.unsubscribe

    return [
        Feed("state_machines_feed", "The unfinished flows now, then each change", machines),
        Feed("progress_feed", "A flow's progress now, after each change, and with its outcome",
             progress, (_RUN_ID,)),
        Feed("start_tracked_flow", "Start a flow (durably) and push its progress", tracked,
             (_FLOW, _ARGS), permissions=start_permissions(flows)),
        Feed("vault_track", "The vault now, then what each transaction consumed and produced",
             vault, (_STATE_TYPE,)),
    ]


def _ending(feed: FeedSubscription, early: list[Any], emit: Callable[[Any], None]
            ) -> Callable[[], None]:
    """A progress feed ends with the flow's outcome: the stream then ends too."""
    if early and early[-1].get("outcome") is not None:
        emit(None)
    return feed.unsubscribe


def _ends_with_outcome(emit: Callable[[Any], None]) -> Callable[[Any], None]:
    def forward(snapshot: Any) -> None:
        emit(snapshot)
        if snapshot.get("outcome") is not None:
            emit(None)

    return forward
