"""``fibers node run DIR/NAME``: one node in the foreground of its own process (see
docs/transport-and-runtime.md, "Node processes").

It loads the node directory (node.toml, network.json, the storage with its secret and the
identity stored in it, the TLS material), builds the node with the ledger's services and the
finance responders on a threaded ``NodeRuntime`` with a ``TlsTransport`` on the real clock,
starts its RPC server (``cli.rpc_node.serve_node``), and prints one line with ``ready``, ``p2p
HOST:PORT`` and the RPC URL once the node takes messages. SIGTERM or SIGINT stops it cleanly
(exit status 0); a SIGKILL is a crash: the next start restores the flows from storage and
re-sends what the peers never acknowledged.

The RPC server starts once the node runs and stops at shutdown before the node does; its
``shutdown`` operation stops the process as SIGTERM does.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO

from cli._node_config import (
    ConfigError,
    NodeConfig,
    load_network,
    load_node_config,
    network_map,
)
from cli._repl_embedded import ACCEPTABLE_PRICE
from cli.rpc_node import serve_node
from fibers import NetworkMap, Node, NodeIdentity, Party
from fibers.rpc import RpcServer
from fibers.runtime import NodeRuntime
from fibers.storage import SECRET_ENV, SECRET_FILE_ENV, NodeStorage, stored_identity
from fibers.tls import TlsFiles, TlsTransport
from fibers.transport import Transport
from finance import CommercialPaper, SellerStarter, TwoPartyTradeFlow
from ledger import LedgerServiceHub, install_ledger_services

__all__ = ["NodeProcess", "run_node"]


class NodeProcess:
    """A node built from its directory, on a threaded runtime with the TLS transport."""

    def __init__(self, directory: Path) -> None:
        self.config = load_node_config(directory)
        entries = load_network(directory / "network.json")
        self.network_map: NetworkMap = network_map(entries)
        self.notary: Party | None = next((e.party for e in entries if e.notary), None)
        tls = _tls_files(directory / "tls")
        with contextlib.ExitStack() as undo:  # on an error, release what was taken so far
            self._lock = _lock_node(directory)
            undo.callback(self._lock.close)
            _check_storage(directory / "storage")
            self.storage = NodeStorage.open(directory / "storage", sync=True)
            undo.callback(self.storage.close)
            self.identity = self._identity(self.storage, self.config, self.network_map)
            self.transport = TlsTransport(
                self.identity.party, self.network_map, tls,
                (self.config.p2p_host, self.config.p2p_port))
            undo.pop_all()
        self.runtime = NodeRuntime(self.transport, self._build)
        # A peer flooding frames is read no faster than the node handles them.
        self.transport.set_backlog(lambda: self.runtime.waiting)
        # Frames in flight on a broken connection may be lost: re-send what the peer has not
        # acknowledged, on the node thread, whenever the transport reconnects to it.
        self.transport.set_on_connected(
            lambda party: self.runtime.call(lambda node: node.resend_unacknowledged(party.name)))

    @staticmethod
    def _identity(storage: NodeStorage, config: NodeConfig, nmap: NetworkMap) -> NodeIdentity:
        identity = stored_identity(storage, config.name)
        try:
            listed = nmap.party(config.name)
        except KeyError:
            raise ConfigError(f"network.json in {config.directory} does not list "
                              f"{config.name!r}") from None
        if listed != identity.party:
            raise ConfigError(f"the identity stored in {config.directory / 'storage'} is not "
                              f"the one network.json lists for {config.name!r}")
        return identity

    def _build(self, transport: Transport) -> Node[LedgerServiceHub]:
        setup = functools.partial(install_ledger_services, notary=self.config.notary,
                                  validating=self.config.validating)
        node = Node(self.identity, transport, network_map=self.network_map, setup=setup,
                    hub=LedgerServiceHub, storage=self.storage,
                    snapshot_locals=self.config.snapshot_locals,
                    hibernate_after=self.config.hibernate_after,
                    max_live_parked=self.config.max_live_parked)
        notary = self.notary
        if notary is not None and not self.config.notary:
            node.register_initiated_flow(
                SellerStarter,
                lambda seller: TwoPartyTradeFlow.Buyer(seller, notary, ACCEPTABLE_PRICE,
                                                       CommercialPaper.State))
        return node

    def start(self) -> None:
        """Start the node (restoring its flows) and its transport."""
        try:
            self.runtime.start()
        except BaseException:
            self.storage.close()
            self._lock.close()
            raise

    def stop(self) -> None:
        """Stop the node (its storage closes with it) and release the directory.
        Idempotent."""
        self.runtime.stop()
        self.storage.close()
        self._lock.close()


def _tls_files(directory: Path) -> TlsFiles:
    """The node's TLS files, each present; ``ConfigError`` names the first one missing."""
    files = TlsFiles.in_dir(directory)
    for path in (files.key, files.cert, files.ca):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: copy it back from the directory "
                              "'fibers network bootstrap' made (or bootstrap again)")
    return files


def _check_storage(storage: Path) -> None:
    """Refuse a node directory whose storage or secret is gone: opening it would make a new
    identity (or a new secret no stored record unseals), not the node's own."""
    if not (storage / "node.lmdb").is_dir():
        raise ConfigError(f"{storage / 'node.lmdb'} does not exist: restore the node's "
                          "storage from a backup (starting afresh would give the node a new "
                          "identity that network.json does not list)")
    secret_elsewhere = SECRET_ENV in os.environ or SECRET_FILE_ENV in os.environ
    if not secret_elsewhere and not (storage / "node.secret").is_file():
        raise ConfigError(f"{storage / 'node.secret'} does not exist: restore it from a "
                          f"backup, or name it with {SECRET_ENV} or {SECRET_FILE_ENV} "
                          "(without it nothing the node stored can be read)")


def _lock_node(directory: Path) -> IO[bytes]:
    """Hold ``directory/node.lock`` exclusively while this process runs the node: two
    processes running one node's flows on one storage would send everything twice. The
    kernel releases it when the process ends, SIGKILL included."""
    lock = open(directory / "node.lock", "ab")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"another process runs the node in {directory}: stop it first "
                          "(its pid holds node.lock)") from None
    except BaseException:
        lock.close()
        raise
    return lock


def run_node(directory: Path) -> int:
    """Run the node of ``directory`` until SIGTERM or SIGINT; returns the exit status."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        process = NodeProcess(directory)
        process.start()
    except (ConfigError, OSError, ValueError) as exc:
        print(f"fibers: error: cannot start the node in {directory}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a damaged store (lmdb, tampering): one line, not a traceback
        print(f"fibers: error: cannot start the node in {directory}: {type(exc).__name__}: "
              f"{exc}", file=sys.stderr)
        return 1
    server: RpcServer | None = None
    try:
        try:
            server = serve_node(process.runtime, directory, on_shutdown=stop.set)
        except (ValueError, OSError) as exc:  # the [rpc] configuration, or its port taken
            print(f"fibers: error: cannot start the node in {directory}: its RPC: {exc}",
                  file=sys.stderr)
            return 1
        address = process.transport.address
        assert address is not None
        print(f"{process.config.name} ready: p2p {address[0]}:{address[1]}, rpc {server.url}",
              flush=True)
        while not stop.wait(1.0):
            if not process.runtime.is_running:
                print(f"fibers: error: the node {process.config.name} stopped unexpectedly",
                      file=sys.stderr)
                return 1
    finally:
        if server is not None:
            server.stop()
        process.stop()
    print(f"{process.config.name} stopped", flush=True)
    return 0
