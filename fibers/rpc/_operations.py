"""What an RPC server offers: operations (request -> JSON result) and feeds (a snapshot, then
pushed events), each with typed parameters that are checked before anything runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Feed", "Operation", "Param", "RpcRequestError", "check_arguments"]

_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number",
                                bool: "boolean", dict: "object", list: "array"}


class RpcRequestError(ValueError):
    """The request was malformed: bad JSON, a missing or unknown argument, a wrong type. The
    server answers 400 with this message."""


@dataclass(frozen=True)
class Param:
    """One named argument of an operation: its JSON type (``str``, ``int``, ``float``,
    ``bool``, ``dict``, ``list``) and, for a ``dict``, the type of its values."""

    name: str
    kind: type
    required: bool = True
    description: str = ""
    values: type | None = None

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the argument."""
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.kind]}
        if self.values is not None:
            schema["additionalProperties"] = {"type": _JSON_TYPES[self.values]}
        if self.description:
            schema["description"] = self.description
        return schema


Permissions = Callable[[dict[str, Any]], list[str]]
"""The permissions (beyond ``ALL``) any one of which allows a call with these arguments; it
runs before the call, off the node thread, and raises ``LookupError`` when it cannot tell
(e.g. an unknown flow class)."""


@dataclass(frozen=True)
class Operation:
    """``run(arguments)`` runs on the node thread and returns a JSON-ready value.
    ``permissions`` defaults to ``["InvokeRpc.<name>"]``."""

    name: str
    summary: str
    run: Callable[[dict[str, Any]], Any]
    params: tuple[Param, ...] = ()
    permissions: Permissions | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def accepted(self, arguments: dict[str, Any]) -> list[str]:
        """The permissions that allow this call."""
        if self.permissions is not None:
            return self.permissions(arguments)
        return [f"InvokeRpc.{self.name}"]


Emit = Callable[[Any], None]


@dataclass(frozen=True)
class Feed:
    """``open(arguments, emit)`` runs on the node thread: it returns the first event (a
    snapshot, or what was started) and a function that ends the subscription (also called on
    the node thread); ``emit(event)`` may then be called on the node thread with each JSON-ready
    event. A feed whose source ended emits ``None`` (the stream then ends)."""

    name: str
    summary: str
    open: Callable[[dict[str, Any], Emit], tuple[Any, Callable[[], None]]]
    params: tuple[Param, ...] = ()
    permissions: Permissions | None = None

    def accepted(self, arguments: dict[str, Any]) -> list[str]:
        """The permissions that allow this subscription."""
        if self.permissions is not None:
            return self.permissions(arguments)
        return [f"InvokeRpc.{self.name}"]


def check_arguments(params: tuple[Param, ...], body: object) -> dict[str, Any]:
    """``body`` checked against ``params``: a JSON object with every required argument, no
    unknown one, each of its type. ``RpcRequestError`` names what is wrong."""
    if not isinstance(body, dict):
        raise RpcRequestError(f"the request body must be a JSON object, got "
                              f"{_json_name(body)}")
    known = {p.name: p for p in params}
    unknown = sorted(set(body) - set(known))
    if unknown:
        expected = ", ".join(known) or "none"
        raise RpcRequestError(f"unknown argument(s) {', '.join(unknown)} (expected: {expected})")
    arguments: dict[str, Any] = {}
    for param in params:
        if param.name not in body or body[param.name] is None:
            if param.required:
                raise RpcRequestError(f"missing argument {param.name!r} "
                                      f"({_JSON_TYPES[param.kind]})")
            continue
        value = body[param.name]
        _check_type(param.name, value, param.kind)
        if param.values is not None:
            for key, item in value.items():
                _check_type(f"{param.name}.{key}", item, param.values)
        arguments[param.name] = value
    return arguments


def _check_type(name: str, value: object, wanted: type) -> None:
    ok = isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool))
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise RpcRequestError(f"argument {name!r} must be {_JSON_TYPES[wanted]}, got "
                              f"{_json_name(value)}")


def _json_name(value: object) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (int, "integer"),
                       (float, "number"), (dict, "object"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
