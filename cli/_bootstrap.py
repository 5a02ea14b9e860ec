"""``fibers network bootstrap``: make a network's node directories (see
docs/transport-and-runtime.md, "Node directories").

The whole network is built in a temporary sibling directory and renamed into place, so an
interrupted bootstrap leaves nothing half made; an existing non-empty directory is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cli._node_config import NAME_PATTERN, NetworkEntry
from fibers.storage import NodeStorage, stored_identity
from fibers.tls import IssuedCert, issue_node_cert, make_root_ca, write_cert, write_private_key

__all__ = ["DEFAULT_BASE_PORT", "BootstrapError", "BootstrapPlan", "bootstrap", "hash_password"]

DEFAULT_BASE_PORT: Final = 10000
"""Node i (the notary first, then the ``--node``s in order) gets p2p port base + 2i and RPC
port base + 2i + 1."""

_SCRYPT: Final = (16384, 8, 1)


class BootstrapError(Exception):
    """The bootstrap cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class BootstrapPlan:
    """What ``fibers network bootstrap`` was asked for."""

    directory: Path
    notary: str
    validating: bool
    nodes: tuple[str, ...]
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT

    def names(self) -> list[str]:
        """Every node, the notary first; raises ``BootstrapError`` for a bad or repeated name
        or ports out of range."""
        names = [self.notary, *self.nodes]
        for name in names:
            if not NAME_PATTERN.fullmatch(name):
                raise BootstrapError(f"{name!r} is not a valid node name: use a letter, then "
                                     "letters, digits, '_', '.' or '-' (at most 64)")
        if len(set(names)) != len(names):
            raise BootstrapError(f"node names must be unique, got {', '.join(names)}")
        if not 1 <= self.base_port <= 65535 - 2 * len(names):
            raise BootstrapError(f"--base-port {self.base_port} leaves no room for "
                                 f"{2 * len(names)} ports below 65536")
        return names


def hash_password(password: str) -> str:
    """The ``scrypt$N$r$p$salt$hash`` form of ``password`` kept in node.toml."""
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def bootstrap(plan: BootstrapPlan) -> list[NetworkEntry]:
    """Make the network ``plan`` describes under ``plan.directory``; returns its map."""
    names = plan.names()
    target = plan.directory
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BootstrapError(f"{target} already exists and is not empty: a network is never "
                             "overwritten; give a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(f".{target.name}.bootstrap-{secrets.token_hex(4)}")
    work.mkdir(mode=0o700)
    try:
        entries = _build(plan, names, work)
        os.replace(work, target)  # onto a missing or empty directory: atomic
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return entries


def _build(plan: BootstrapPlan, names: list[str], work: Path) -> list[NetworkEntry]:
    ca = make_root_ca(f"Fibers network root CA ({plan.directory.name})")
    (work / "ca").mkdir(mode=0o700)
    write_private_key(ca.key, work / "ca" / "ca.key")
    write_cert(ca.cert, work / "ca" / "ca.crt")
    entries = []
    for i, name in enumerate(names):
        directory = work / name
        directory.mkdir(mode=0o700)
        storage = NodeStorage.open(directory / "storage", sync=True)
        try:
            party = stored_identity(storage, name).party
        finally:
            storage.close()
        notary = name == plan.notary
        entries.append(NetworkEntry(name, party.owning_key,
                                    f"{plan.host}:{plan.base_port + 2 * i}", notary,
                                    notary and plan.validating))
    network = json.dumps({"nodes": [e.to_json() for e in entries]}, indent=2) + "\n"
    (work / "network.json").write_text(network)
    for i, entry in enumerate(entries):
        _node_files(work / entry.name, entry, ca, plan, plan.base_port + 2 * i + 1)
        (work / entry.name / "network.json").write_text(network)
    return entries


def _node_files(directory: Path, entry: NetworkEntry, ca: IssuedCert, plan: BootstrapPlan,
                rpc_port: int) -> None:
    tls = directory / "tls"
    tls.mkdir(mode=0o700)
    issued = issue_node_cert(ca, entry.party, plan.host)
    write_private_key(issued.key, tls / "node.key")
    write_cert(issued.cert, tls / "node.crt")
    write_cert(ca.cert, tls / "ca.crt")
    password = secrets.token_urlsafe(18)
    with open(directory / "operator.password", "x", opener=_private) as f:
        f.write(password + "\n")
    p2p_port = int(entry.p2p.rpartition(":")[2])
    q = json.dumps  # a JSON string of plain text is a valid TOML basic string
    lines = [
        f"name = {q(entry.name)}",
        f"notary = {str(entry.notary).lower()}",
        *([f"validating = {str(entry.validating).lower()}"] if entry.notary else []),
        "",
        "[p2p]",
        f"host = {q(plan.host)}",
        f"port = {p2p_port}",
        "",
        "[rpc]",
        f"host = {q(plan.host)}",
        f"port = {rpc_port}",
        "",
        "[[rpc.users]]",
        'username = "operator"',
        f"password_hash = {q(hash_password(password))}",
        'permissions = ["ALL"]',
    ]
    (directory / "node.toml").write_text("\n".join(lines) + "\n")


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
