"""The node RPC: HTTPS with JSON bodies, HTTP Basic users with scrypt-hashed passwords and
permissions, operations run on the node thread, feeds as server-sent events, an OpenAPI
document at ``/openapi.json``. See docs/rpc.md.

This package is generic: it knows nothing of the ledger. The operations a node offers are
registered by whoever starts the server (``cli.rpc_node.serve_node`` for a Fibers node)."""

from fibers.rpc._auth import ALL, FailureBackoff, User, hash_password, verify_password
from fibers.rpc._client import (
    RpcAuthenticationError,
    RpcClient,
    RpcConnectionError,
    RpcError,
    RpcPermissionError,
    RpcRequestRefused,
    Subscription,
    connect,
)
from fibers.rpc._gate import ConnectionLimits
from fibers.rpc._openapi import OPENAPI_PATH
from fibers.rpc._operations import Feed, Operation, Param, RpcRequestError
from fibers.rpc._server import RpcServer

__all__ = [
    "ALL",
    "OPENAPI_PATH",
    "ConnectionLimits",
    "FailureBackoff",
    "Feed",
    "Operation",
    "Param",
    "RpcAuthenticationError",
    "RpcClient",
    "RpcConnectionError",
    "RpcError",
    "RpcPermissionError",
    "RpcRequestError",
    "RpcRequestRefused",
    "RpcServer",
    "Subscription",
    "User",
    "connect",
    "hash_password",
    "verify_password",
]
