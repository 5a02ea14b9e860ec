"""A node directory's configuration: ``node.toml`` and ``network.json`` (the layout is in
docs/transport-and-runtime.md, "Node directories"), read into values a node process uses."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibers import NetworkMap, NodeInfo, Party
from fibers.storage import SnapshotLocals, check_snapshot_locals
from ledger import register_notary

__all__ = ["NAME_PATTERN", "ConfigError", "NetworkEntry", "NodeConfig", "load_network",
           "load_node_config", "network_map"]

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""A party name usable as a directory name and a certificate CN."""


class ConfigError(Exception):
    """A node directory's configuration is missing or wrong; the message says which file."""


@dataclass(frozen=True, slots=True)
class NetworkEntry:
    """One party of ``network.json``."""

    name: str
    identity_key: bytes
    p2p: str
    notary: bool = False
    validating: bool = False

    @property
    def party(self) -> Party:
        return Party(self.name, self.identity_key)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "identity_key": self.identity_key.hex(), "p2p": self.p2p,
                "notary": self.notary, "validating": self.validating}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``node.toml`` of the node directory ``directory``."""

    directory: Path
    name: str
    notary: bool
    validating: bool
    p2p_host: str
    p2p_port: int
    rpc_host: str
    rpc_port: int
    # When the node serialises its flows' locals (fibers._locals): optional top-level key.
    snapshot_locals: SnapshotLocals = "on_demand"
    # [flows]: hibernation (fibers.Node's hibernate_after, max_live_parked); absent: off.
    hibernate_after: float | None = None
    max_live_parked: int | None = None


def load_node_config(directory: Path) -> NodeConfig:
    """Read ``directory/node.toml``; ``ConfigError`` names what is missing or wrong."""
    path = directory / "node.toml"
    try:
        data = tomllib.loads(path.read_text())
        p2p, rpc = data["p2p"], data["rpc"]
        flows = data.get("flows", {})
        if not isinstance(flows, dict):
            raise ValueError("[flows] must be a table")
        return NodeConfig(directory=directory, name=str(data["name"]),
                          notary=bool(data.get("notary", False)),
                          validating=bool(data.get("validating", False)),
                          p2p_host=str(p2p["host"]), p2p_port=int(p2p["port"]),
                          rpc_host=str(rpc["host"]), rpc_port=int(rpc["port"]),
                          snapshot_locals=check_snapshot_locals(
                              data.get("snapshot_locals", "on_demand")),
                          hibernate_after=_optional(flows, "hibernate_after", float),
                          max_live_parked=_optional(flows, "max_live_parked", int))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: give a node directory made by "
                          "'fibers network bootstrap'") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a valid node configuration: {exc!r}") from None


def _optional(table: dict[str, Any], key: str, kind: type[float] | type[int]
              ) -> Any:
    """``table[key]`` as a non-negative ``kind`` (None when absent); ValueError names it."""
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
            or (kind is int and not isinstance(value, int)):
        raise ValueError(f"[flows] {key} must be a number >= 0"
                         f"{'' if kind is float else ' (whole)'}, got {value!r}")
    return kind(value)


def load_network(path: Path) -> list[NetworkEntry]:
    """Read a ``network.json``; ``ConfigError`` names what is wrong."""
    try:
        data = json.loads(path.read_text())
        return [NetworkEntry(name=str(e["name"]), identity_key=bytes.fromhex(e["identity_key"]),
                             p2p=str(e["p2p"]), notary=bool(e.get("notary", False)),
                             validating=bool(e.get("validating", False)))
                for e in data["nodes"]]
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a valid network map: {exc!r}") from None


def network_map(entries: list[NetworkEntry]) -> NetworkMap:
    """A network map of ``entries`` with their p2p addresses, notaries registered."""
    result = NetworkMap()
    for entry in entries:
        result.add(NodeInfo(entry.party, entry.p2p))
        if entry.notary:
            register_notary(result, entry.party)
    return result
