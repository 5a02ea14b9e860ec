"""The OpenAPI 3.1 description of an RPC server's operations and feeds (docs/rpc.md)."""

from __future__ import annotations

from typing import Any

from fibers.rpc._operations import Feed, Operation, Param

__all__ = ["OPENAPI_PATH", "openapi_document"]

OPENAPI_PATH = "/openapi.json"
_ERROR = {"$ref": "#/components/schemas/Error"}


def _body(params: tuple[Param, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: p.schema() for p in params},
        "additionalProperties": False,
    }
    required = [p.name for p in params if p.required]
    if required:
        schema["required"] = required
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    described = {"400": "malformed request: bad JSON, a missing, unknown or mistyped argument, "
                        "or an argument the operation cannot use",
                 "401": "no or wrong credentials", "403": "the user lacks the permission",
                 "404": "no such operation", "409": "the node refuses now (e.g. draining)",
                 "500": "the operation failed", "503": "the node is stopped"}
    return {code: {"description": text,
                   "content": {"application/json": {"schema": {
                       "type": "object", "properties": {"error": _ERROR},
                       "required": ["error"]}}}}
            for code, text in described.items()}


def _operation(op: Operation) -> dict[str, Any]:
    return {"post": {
        "operationId": op.name,
        "summary": op.summary,
        "requestBody": _body(op.params),
        "responses": {"200": {"description": "the result", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"result": op.result or {}},
                       "required": ["result"]}}}}, **_errors()},
    }}


def _feed(feed: Feed) -> dict[str, Any]:
    return {"post": {
        "operationId": f"feed_{feed.name}",
        "summary": feed.summary,
        "description": "Server-sent events, one JSON object per `data:` line: first "
                       "`{\"subscription\": id, \"event\": first}`, then `{\"event\": ...}` "
                       "per change, and `{\"end\": reason}` last.",
        "requestBody": _body(feed.params),
        "responses": {"200": {"description": "the event stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **_errors()},
    }}


def openapi_document(title: str, operations: dict[str, Operation],
                     feeds: dict[str, Feed]) -> dict[str, Any]:
    """The OpenAPI document of a server offering ``operations`` and ``feeds``."""
    paths: dict[str, Any] = {f"/api/v1/ops/{name}": _operation(op)
                             for name, op in sorted(operations.items())}
    paths.update({f"/api/v1/feeds/{name}": _feed(feed) for name, feed in sorted(feeds.items())})
    paths["/api/v1/subscriptions/{subscription}"] = {"delete": {
        "operationId": "close_subscription",
        "summary": "End one of your feed subscriptions (its stream then ends)",
        "parameters": [{"name": "subscription", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "closed (or already ended)"}, **_errors()},
    }}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1",
                 "description": "Fibers node RPC: HTTP Basic authentication, JSON bodies. "
                                "Permissions: ALL, StartFlow.<class>, InvokeRpc.<operation>."},
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": {"type": "object", "properties": {
                "status": {"type": "integer"}, "type": {"type": "string"},
                "message": {"type": "string"}}, "required": ["status", "type", "message"]}},
        },
        "security": [{"basic": []}],
    }
