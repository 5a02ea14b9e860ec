"""``ConnectionGate``: what one client may hold of the RPC port before it has asked for
anything (docs/rpc.md, "Connection limits").

uvicorn itself bounds neither the TLS handshake it leaves to asyncio (60 s) nor the wait for a
request's head, and it counts no connections per address: a client that opens connections and
sends nothing (slowloris) could hold every file descriptor of the node process. The gate takes
over from the moment a TCP connection is accepted:

* a connection is admitted only while its address holds fewer than ``max_per_host`` and the
  port fewer than ``max_total`` connections (open or in their handshake); else it is aborted at
  once and counted in ``refused``;
* the gate runs the TLS handshake itself (``loop.start_tls``) with ``handshake_timeout``;
* an HTTP connection must deliver a complete request head within ``request_head_timeout`` of
  its handshake and of each response completing; else it is closed and counted in
  ``timed_out``. A request being served (a long feed stream included) is never cut.

Contract: every method runs on the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["ConnectionGate", "ConnectionLimits"]

log = logging.getLogger("fibers.rpc")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on the connections of one RPC port (see the module docstring)."""

    handshake_timeout: float = 10.0
    request_head_timeout: float = 10.0
    max_per_host: int = 32
    max_total: int = 512

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "request_head_timeout", "max_per_host", "max_total"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ConnectionLimits.{name} must be positive, "
                                 f"not {getattr(self, name)!r}")


class ConnectionGate:
    """Admits, handshakes and times out the connections of one RPC server."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: ConnectionLimits) -> None:
        self._ssl = ssl_context
        self.limits = limits
        # Invariant: _open_by_host[host] counts the admitted connections from host that have
        # not closed yet, never 0 (the entry is removed instead); _open is their sum.
        self._open_by_host: dict[str, int] = {}
        self._open = 0
        self._handshaking: set[asyncio.Transport] = set()
        # The event loop keeps only weak references to tasks: these keep the handshakes alive.
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        """Connections aborted at accept: their address, or the port, held too many."""
        self.timed_out = 0
        """Connections closed for a TLS handshake or a request head that did not come."""

    @property
    def open_connections(self) -> int:
        """Admitted connections not closed yet (in their handshake or speaking HTTP)."""
        return self._open

    def protocol_class(self) -> type[asyncio.Protocol]:
        """The protocol class to give uvicorn (``Config(http=...)``): built per server, so
        that its connections report to this gate."""
        gate = self

        class GatedConnection(asyncio.Protocol):
            def __init__(self, config: Config, server_state: ServerState,
                         app_state: dict[str, Any],
                         _loop: asyncio.AbstractEventLoop | None = None) -> None:
                self._http = _GatedHttp(gate, config, server_state, app_state, _loop)

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                gate.admit(transport, self._http)

        return GatedConnection

    def abort_handshakes(self) -> None:
        """Abort the connections still in their TLS handshake (the server is stopping)."""
        for transport in list(self._handshaking):
            transport.abort()

    def admit(self, raw: asyncio.Transport, http: _GatedHttp) -> None:
        """A TCP connection was accepted: refuse it, or start its TLS handshake."""
        host = str((raw.get_extra_info("peername") or ("?",))[0])
        limits = self.limits
        if self._open >= limits.max_total or self._open_by_host.get(host, 0) >= limits.max_per_host:
            self.refused += 1
            log.warning("RPC refused a connection from %s: too many open connections (%d from "
                        "there, %d in all)", host, self._open_by_host.get(host, 0), self._open)
            raw.abort()
            return
        self._open_by_host[host] = self._open_by_host.get(host, 0) + 1
        self._open += 1
        http.host = host
        raw.pause_reading()  # the ClientHello is for the TLS layer, read by start_tls
        self._handshaking.add(raw)
        task = asyncio.get_running_loop().create_task(self._handshake(raw, http))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, raw: asyncio.Transport, http: _GatedHttp) -> None:
        loop = asyncio.get_running_loop()
        # start_tls does not call its protocol's connection_made, yet may hand it data before
        # it returns: a holder takes that data until the HTTP protocol is connected.
        early = _EarlyData()
        try:
            tls = await loop.start_tls(raw, early, self._ssl, server_side=True,
                                       ssl_handshake_timeout=self.limits.handshake_timeout)
            if tls is None or early.lost:
                raise ConnectionError("the connection closed during the TLS handshake")
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            # asyncio reports its handshake timeout as ConnectionAbortedError.
            if isinstance(exc, (TimeoutError, ConnectionAbortedError)):
                self.timed_out += 1
            log.info("RPC connection from %s ended in its TLS handshake: %s", http.host,
                     type(exc).__name__)
            raw.abort()
            http.release()
            return
        finally:
            self._handshaking.discard(raw)
        tls.set_protocol(http)
        http.connection_made(tls)
        for data in early.data:
            http.data_received(data)

    def release(self, host: str) -> None:
        """An admitted connection from ``host`` ended (call once per admitted one)."""
        left = self._open_by_host.pop(host) - 1
        if left:
            self._open_by_host[host] = left
        self._open -= 1


class _EarlyData(asyncio.Protocol):
    """Holds what a TLS connection delivers between its handshake and its HTTP protocol
    taking over."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class _GatedHttp(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose next request head does not
    arrive in time, and telling the gate when the connection ends."""

    def __init__(self, gate: ConnectionGate, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._gate = gate
        self.host = "?"
        self._head_timer: asyncio.TimerHandle | None = None
        self._armed_for: object = None
        self._released = False

    def release(self) -> None:
        """Give this connection's place back to the gate (once, however it ended)."""
        if not self._released:
            self._released = True
            self._gate.release(self.host)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)
        self.release()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        # A request head has arrived once uvicorn made a new request cycle.
        self._armed_for = self.cycle
        self._head_timer = self.loop.call_later(self._gate.limits.request_head_timeout,
                                                self._head_due)

    def _head_due(self) -> None:
        self._head_timer = None
        if self.cycle is self._armed_for and not self.transport.is_closing():
            self._gate.timed_out += 1
            log.info("RPC closed a connection from %s: no request within %.1f s", self.host,
                     self._gate.limits.request_head_timeout)
            self.transport.close()
