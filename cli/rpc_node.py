"""A Fibers node's RPC, from its node directory (docs/rpc.md, node layout in docs/rpc.md):
``serve_node`` starts the server the node process runs beside its node thread;
``client_settings`` reads what ``fibers shell --connect DIR/NAME`` needs to connect."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli._ops import NodeOps
from cli._rpc_ops import error_status, node_feeds, node_operations
from fibers.rpc import RpcServer, User
from fibers.runtime import NodeRuntime
from ledger import LedgerServiceHub

__all__ = ["ClientSettings", "NodeConfigError", "client_settings", "serve_node"]


class NodeConfigError(ValueError):
    """The node directory's RPC configuration is missing or malformed."""


def _config(node_dir: Path) -> dict[str, Any]:
    path = node_dir / "node.toml"
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise NodeConfigError(f"{path} does not exist: is {node_dir} a node directory "
                              "made by 'fibers network bootstrap'?") from None
    except tomllib.TOMLDecodeError as exc:
        raise NodeConfigError(f"{path} is not valid TOML: {exc}") from None


def _rpc_section(node_dir: Path) -> dict[str, Any]:
    rpc = _config(node_dir).get("rpc")
    if not isinstance(rpc, dict) or "port" not in rpc:
        raise NodeConfigError(f"{node_dir / 'node.toml'} has no [rpc] section with a port")
    return rpc


def _users(node_dir: Path, rpc: dict[str, Any]) -> list[User]:
    users = []
    for entry in rpc.get("users", []):
        try:
            users.append(User(str(entry["username"]), str(entry["password_hash"]),
                              frozenset(str(p) for p in entry.get("permissions", []))))
        except (KeyError, TypeError):
            raise NodeConfigError(f"{node_dir / 'node.toml'}: each [[rpc.users]] needs a "
                                  "username and a password_hash") from None
        except ValueError as exc:
            raise NodeConfigError(f"{node_dir / 'node.toml'}: {exc}") from None
    return users


def serve_node(
    runtime: NodeRuntime[LedgerServiceHub],
    node_dir: Path,
    *,
    on_shutdown: Callable[[], None] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> RpcServer:
    """Start the RPC of the node ``runtime`` runs (threaded, started), configured by
    ``node_dir``: ``[rpc]`` host, port and users in node.toml; tls/node.crt and tls/node.key
    serve HTTPS. ``on_shutdown`` is called (on the server's thread) by the ``shutdown``
    operation. ``host``/``port`` override the configuration (port 0: a free one). Returns
    the running server (``.url``, ``.stop()``)."""
    rpc = _rpc_section(node_dir)
    users = _users(node_dir, rpc)
    ops = NodeOps(lambda: runtime.node)
    server = RpcServer(
        runtime,
        users=users,
        operations=node_operations(ops),
        feeds=node_feeds(ops),
        certfile=str(node_dir / "tls" / "node.crt"),
        keyfile=str(node_dir / "tls" / "node.key"),
        host=host if host is not None else str(rpc.get("host", "127.0.0.1")),
        port=port if port is not None else int(rpc["port"]),
        title=f"Fibers node {runtime.party.name}",
        error_status=error_status,
        on_shutdown=on_shutdown,
        tick=ops.refresh,
    )
    return server.start()


@dataclass(frozen=True)
class ClientSettings:
    """Where a node's RPC is and how to log in as its operator."""

    url: str
    user: str
    password: str
    ca: Path


def client_settings(node_dir: Path, user: str = "operator") -> ClientSettings:
    """The RPC URL of the node in ``node_dir``, ``user`` and its password from
    ``<user>.password`` there, and the network's CA certificate (tls/ca.crt)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", user):
        # The name becomes a file name: "../x" or "/etc/x" would read outside the directory.
        raise NodeConfigError(f"{user!r} is not a user name of a node directory (letters, "
                              "digits, '_', '.', '-')")
    rpc = _rpc_section(node_dir)
    secret = node_dir / f"{user}.password"
    try:
        password = secret.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NodeConfigError(f"{secret} does not exist: give the URL with --user instead "
                              "and type the password") from None
    host = str(rpc.get("host", "127.0.0.1"))
    return ClientSettings(f"https://{host}:{int(rpc['port'])}", user, password,
                          node_dir / "tls" / "ca.crt")
