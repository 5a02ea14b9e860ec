"""A network of ``fibers node run`` child processes in one run directory, for
``fibers demo --processes``, its tests and the ``trade`` benchmark on processes (see
docs/transport-and-runtime.md, "Node processes").

Contract: ``ProcessNetwork(directory, notary, nodes)`` bootstraps the network under
``directory/network`` on free localhost ports; ``start(name)`` starts that node's process and
returns once it printed its ``ready`` line (``NodeProcessError`` with its output otherwise);
``kill(name)`` sends SIGKILL and reaps it; ``client(name)`` is an operator RPC client of the
node; ``close()`` stops every child still running (SIGTERM, then SIGKILL after a grace period),
so no child outlives the network, on errors and Ctrl-C too (use it as a context manager).
Should this process die without cleaning up (SIGKILL, SIGHUP of its terminal), each child is
sent SIGTERM by the kernel (Linux's parent-death signal) and stops cleanly; so call ``start``
from a thread that lives as long as the network (the signal follows the starting thread).
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from cli._bootstrap import BootstrapPlan, bootstrap
from cli.rpc_node import client_settings
from fibers.rpc import RpcClient, connect

__all__ = ["NodeProcessError", "ProcessNetwork", "free_base_port"]

READY_TIMEOUT: Final = 60.0
"""Seconds a node process may take to print ``ready`` (a loaded 2-core machine is slow)."""
_STOP_GRACE: Final = 10.0
_WITH_PARENT: Final = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG, kept across exec
except (OSError, AttributeError):
    pass  # not Linux: the parent's close() is the only clean-up
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the signal was arranged
os.execv(sys.executable, [sys.executable, "-m", "cli", "node", "run", sys.argv[2]])
"""
"""Runs as the child: arrange SIGTERM on the parent's death, then become ``fibers node run``."""


class NodeProcessError(RuntimeError):
    """A node process did not start, or ended unexpectedly; the message has its output."""


def free_base_port(count: int, host: str = "127.0.0.1") -> int:
    """A port ``p`` such that ``p .. p+count-1`` could all be bound on ``host`` just now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise NodeProcessError(f"found no {count} free consecutive ports on {host}")


class ProcessNetwork:
    """A notary and nodes, each a ``fibers node run`` child process (module docstring)."""

    def __init__(self, directory: Path, notary: str, nodes: tuple[str, ...],
                 *, validating: bool = True) -> None:
        self.root = directory / "network"
        names = (notary, *nodes)
        bootstrap(BootstrapPlan(self.root, notary, validating, nodes,
                                base_port=free_base_port(2 * len(names))))
        self.notary = notary
        self.names = names
        # Invariant: a name is in _children exactly while its process may be running.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._clients: dict[str, RpcClient] = {}

    def __enter__(self) -> ProcessNetwork:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def node_dir(self, name: str) -> Path:
        """The node directory of ``name`` (``fibers node run`` takes it)."""
        return self.root / name

    def is_up(self, name: str) -> bool:
        """Whether the process of ``name`` runs."""
        child = self._children.get(name)
        return child is not None and child.poll() is None

    def pid(self, name: str) -> int:
        """The process id of the running node ``name``."""
        return self._children[name].pid

    def start_all(self) -> None:
        """Start every node that is not running, each once the previous one is ready."""
        for name in self.names:
            if not self.is_up(name):
                self.start(name)

    def start(self, name: str) -> str:
        """Start the node ``name`` from its directory; returns its ``ready`` line."""
        if self.is_up(name):
            raise NodeProcessError(f"the node {name} runs already (pid {self.pid(name)})")
        child = subprocess.Popen(
            [sys.executable, "-c", _WITH_PARENT, str(os.getpid()), str(self.node_dir(name))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True)  # a Ctrl-C in the terminal reaches only us: we stop them
        self._children[name] = child
        try:
            return self._await_ready(name, child)
        except BaseException:
            self._stop(name, signal.SIGKILL)
            raise

    def _await_ready(self, name: str, child: subprocess.Popen[bytes]) -> str:
        assert child.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        seen: list[str] = []
        while time.monotonic() < deadline:
            readable, _, _ = select.select([child.stdout], [], [], 0.5)
            if not readable:
                if child.poll() is not None:
                    break
                continue
            raw = child.stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            seen.append(line)
            if " ready: " in line:
                return line
        output = "\n".join(seen[-20:]) or "(no output)"
        raise NodeProcessError(f"the node {name} did not get ready (exit status "
                               f"{child.poll()}):\n{output}")

    def kill(self, name: str) -> None:
        """SIGKILL the process of ``name`` (a crash) and reap it."""
        self._stop(name, signal.SIGKILL)

    def _stop(self, name: str, how: signal.Signals) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            client.close()
        child = self._children.pop(name, None)
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(how)
            try:
                child.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def client(self, name: str) -> RpcClient:
        """An operator RPC client of ``name`` (kept until the node stops)."""
        client = self._clients.get(name)
        if client is None:
            settings = client_settings(self.node_dir(name))
            client = connect(settings.url, user=settings.user, password=settings.password,
                             ca=settings.ca)
            self._clients[name] = client
        return client

    def close(self) -> None:
        """Stop every child still running. Idempotent."""
        for name in list(self._children):
            self._stop(name, signal.SIGTERM)
