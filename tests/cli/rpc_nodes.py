"""Test fixtures for the RPC: a notary and two banks, each on its own thread (threaded
``NodeRuntime``) on one in-memory network, and BankA's RPC server (``serve_node``) on a free
localhost port with a test CA and certificate made for the test."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from fibers import (
    FlowLogic,
    HospitalizeFlowException,
    NetworkMap,
    Node,
    NodeIdentity,
    startable_by_rpc,
    suspendable,
)
from fibers.rpc import RpcClient, RpcServer, connect, hash_password
from fibers.runtime import NodeRuntime
from fibers.storage import NodeStorage
from fibers.transport import InMemoryNetwork, Transport
from ledger import LedgerServiceHub, install_ledger_services
from tests.fibers._tls import write_tls

PASSWORDS = {"operator": "op-secret", "cashier": "cash-secret", "viewer": "view-secret"}
PERMISSIONS = {
    "operator": ["ALL"],
    "cashier": ["StartFlow.CashIssueFlow", "InvokeRpc.vault_query"],
    "viewer": ["InvokeRpc.node_info"],
}
TIMEOUT = 30.0


@startable_by_rpc
class Parked(FlowLogic[str]):
    """Sleeps an hour: it stays in the node's storage while the test looks."""

    def __init__(self, label: str) -> None:
        self.label = label

    @suspendable
    def call(self) -> str:
        self.sleep(3600)
        return self.label


@startable_by_rpc
class Ailing(FlowLogic[str]):
    """Hospitalised until the operator has ``healed`` it."""

    healed: ClassVar[bool] = False

    def __init__(self, label: str) -> None:
        self.label = label

    @suspendable
    def call(self) -> str:
        if not Ailing.healed:
            raise HospitalizeFlowException(f"{self.label} needs an operator")
        return self.label


def write_node_config(node_dir: Path, port: int = 0) -> Path:
    """node.toml with the three test users, and tls/ (see docs/rpc.md)."""
    write_tls(node_dir / "tls")
    lines = ['name = "BankA"', "[rpc]", 'host = "127.0.0.1"', f"port = {port}"]
    for user, password in PASSWORDS.items():
        permissions = ", ".join(f'"{p}"' for p in PERMISSIONS[user])
        lines += ["[[rpc.users]]", f'username = "{user}"',
                  f'password_hash = "{hash_password(password, n=1024)}"',
                  f"permissions = [{permissions}]"]
    (node_dir / "node.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (node_dir / "operator.password").write_text(PASSWORDS["operator"], encoding="utf-8")
    return node_dir


class RpcNodes:
    """Notary, BankA and BankB on their own threads; BankA served over RPC."""

    def __init__(self, base: Path, *, node_dir: Path | None = None,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        from cli.rpc_node import serve_node

        self.network = InMemoryNetwork(immediate=True)
        self.network_map = NetworkMap()
        identities = [NodeIdentity(name) for name in ("Notary", "BankA", "BankB")]
        for identity in identities:
            self.network_map.add(identity.party)
        self.runtimes = {i.party.name: self._start(base, i) for i in identities}
        self.node_dir = node_dir or write_node_config(base / "BankA-config")
        self.shutdown_asked = threading.Event()

        def shutdown() -> None:
            self.shutdown_asked.set()
            if on_shutdown is not None:
                on_shutdown()

        self.server: RpcServer = serve_node(self.runtimes["BankA"], self.node_dir,
                                            on_shutdown=shutdown)
        Ailing.healed = False

    def _start(self, base: Path, identity: NodeIdentity) -> NodeRuntime:
        name = identity.party.name
        setup = functools.partial(install_ledger_services, notary=name == "Notary")

        def build(transport: Transport) -> Node:
            return Node(identity, transport, network_map=self.network_map, setup=setup,
                        hub=LedgerServiceHub,
                        storage=NodeStorage.open(base / name, sync=False))

        runtime = NodeRuntime(self.network.endpoint(identity.party), build)
        runtime.start()
        return runtime

    def client(self, user: str = "operator", password: str | None = None,
               ca: Path | None = None) -> RpcClient:
        return connect(self.server.url, user=user,
                       password=PASSWORDS[user] if password is None else password,
                       ca=ca or self.node_dir / "tls" / "ca.crt")

    def on_bank_a(self, fn: Any) -> Any:
        return self.runtimes["BankA"].call(fn).result(TIMEOUT)

    def close(self) -> None:
        self.server.stop()
        for runtime in self.runtimes.values():
            runtime.stop()
