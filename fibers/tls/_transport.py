"""``TlsTransport``: a node's endpoint on a TCP network with mutual TLS 1.3 (see
docs/transport-and-runtime.md, "The TLS transport").

IO runs on one asyncio event loop in a background thread of its own. asyncio rather than a
hand-written ``selectors`` loop because non-blocking TLS (handshakes, renegotiation-free reads
and writes that each may want the other direction) is subtle, and asyncio's SSL protocol
already handles it, with streams, timeouts and thread-safe wake-ups in the standard library.

Contracts:

* Inbound: a listener accepts TCP connections, performs the TLS handshake itself (so a failed
  handshake is counted and logged here), requires a client certificate of the network's CA and
  maps it to a party of the network map (``peer_party``: CN and identity key). Every frame on
  that connection is delivered as sent by that party, never by anything the frame says.
  A bad length, a frame cut short or a TLS error disconnects the peer (``stats.garbage``).
* Outbound: one connection per recipient, opened on demand, kept, re-opened with exponential
  backoff; the server's certificate must name the recipient with its identity key. Frames wait
  in a bounded queue per recipient (``max_queue_frames``/``max_queue_bytes``); a frame that
  does not fit is dropped and counted (``stats.dropped``): the node keeps every unacknowledged
  message in its outbox, and ``on_connected`` is called once the queue drains (and on every
  reconnection) so the node re-sends them (``Node.resend_unacknowledged``).
* Delivery is at-least-once and in order per connection; duplicates are the session layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fibers._identity import Party
from fibers._node_types import NetworkMap
from fibers.tls._certs import CertificateMismatch, peer_party
from fibers.tls._framing import MAX_FRAME, BadFrame, encode_frame, read_frame
from fibers.transport import Deliver

__all__ = ["TlsFiles", "TlsTransport", "TransportStats"]

log = logging.getLogger("fibers.tls")

_HANDSHAKE_TIMEOUT: Final = 10.0
_MAX_UNAUTHENTICATED: Final = 256
"""Inbound connections still in their TLS handshake, at most, from everywhere together."""
_MAX_UNAUTHENTICATED_PER_HOST: Final = 16
"""... and from one address: a host that opens connections and sends nothing (slowloris)
holds this many slots for ``handshake_timeout`` seconds each, never all of them."""
_BACKLOG_POLL: Final = 0.005
"""Seconds between looks at the node's inbound backlog while a connection is paused."""
_BATCH: Final = 256
"""Frames written to a connection before waiting for it to drain."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A node's TLS material: its key and certificate, and the network's root CA (PEM)."""

    key: Path
    cert: Path
    ca: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """``node.key``, ``node.crt`` and ``ca.crt`` in ``directory`` (a node's ``tls/``)."""
        return cls(directory / "node.key", directory / "node.crt", directory / "ca.crt")

    def context(self, side: ssl._SSLMethod) -> ssl.SSLContext:
        """A TLS 1.3-only context for ``side`` (server or client) that presents this node's
        certificate and requires the peer's to be issued by the network's CA. Host names are
        not checked: the peer's party is (``peer_party``). ``ValueError`` names the file that
        is missing or not PEM."""
        ctx = ssl.SSLContext(side)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if side == ssl.PROTOCOL_TLS_CLIENT:
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{self.ca} is not a readable PEM CA certificate: {exc}") from None
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{self.cert} and {self.key} are not a readable PEM certificate "
                             f"and its private key: {exc}") from None
        return ctx


@dataclass(slots=True)
class TransportStats:
    """What the transport refused or dropped since it was made (counters only grow)."""

    refused: int = 0
    """Inbound connections refused: failed TLS handshake, no or a foreign certificate, a
    certificate that does not match the network map."""
    garbage: int = 0
    """Peers disconnected for sending bytes that are not frames."""
    dropped: int = 0
    """Outbound frames dropped because their recipient's queue was full."""
    connects: int = 0
    """Outbound connections established."""


class _Unread(asyncio.Protocol):
    """An accepted TCP connection before its TLS handshake: reads nothing (the ClientHello
    must reach the TLS layer, not a plain buffer) and hands the connection on."""

    def __init__(self, accepted: Callable[[asyncio.BaseTransport], None]) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._accepted(transport)


class _TlsReaderProtocol(asyncio.StreamReaderProtocol):
    """A stream reader's protocol under TLS set up after accepting: an end of stream closes
    the connection (TLS cannot half-close; saying otherwise only earns a warning)."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class _Peer:
    """The outbound side towards one recipient. Invariant: ``queue``, ``queued_bytes`` and
    ``overflowed`` are only touched under the transport's lock; ``queued_bytes`` is the sum of
    the lengths of the frames in ``queue``."""

    def __init__(self, party: Party) -> None:
        self.party = party
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.overflowed = False
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None


class TlsTransport:
    """One party's endpoint on a mutual-TLS TCP network (see the module docstring).

    ``listen`` is the (host, port) to accept peers on (port 0: any free port, read ``address``
    after ``start``). Recipients are reached at ``network_map.address(party)`` (``"host:port"``).
    ``on_connected(party)`` is called on the IO thread, must not block, and asks the node to
    re-send its unacknowledged frames to ``party`` (set it with ``set_on_connected`` once the
    node's runtime exists).
    """

    def __init__(
        self,
        party: Party,
        network_map: NetworkMap,
        tls: TlsFiles,
        listen: tuple[str, int],
        *,
        max_queue_frames: int = 10_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        handshake_timeout: float = _HANDSHAKE_TIMEOUT,
        max_unauthenticated: int = _MAX_UNAUTHENTICATED,
        max_unauthenticated_per_host: int = _MAX_UNAUTHENTICATED_PER_HOST,
        max_inbound_backlog: int = 10_000,
    ) -> None:
        self._party = party
        self._map = network_map
        self._server_ctx = tls.context(ssl.PROTOCOL_TLS_SERVER)
        self._client_ctx = tls.context(ssl.PROTOCOL_TLS_CLIENT)
        self._listen = listen
        self.max_queue_frames = max_queue_frames
        self.max_queue_bytes = max_queue_bytes
        self._backoff = (backoff_initial, backoff_max)
        self.handshake_timeout = handshake_timeout
        self.max_unauthenticated = max_unauthenticated
        self.max_unauthenticated_per_host = max_unauthenticated_per_host
        # Invariant (IO thread only): _handshaking[host] is the number of accepted connections
        # from host whose handshake has not ended, never 0 (the entry is removed instead);
        # _inbound_from[name] is the one authenticated inbound connection of that party.
        self._handshaking: dict[str, int] = {}
        self._inbound_from: dict[str, asyncio.BaseTransport] = {}
        self.stats = TransportStats()
        self._on_connected: Callable[[Party], object] = lambda _party: None
        self.max_inbound_backlog = max_inbound_backlog
        self._backlog: Callable[[], int] = lambda: 0
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[None]] = set()
        # Every connection, so that stop() can abort them: a graceful TLS close still running
        # when the loop ends would leave its socket open.
        self._connections: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.address: tuple[str, int] | None = None
        self._closing = False

    @property
    def party(self) -> Party:
        return self._party

    def set_on_connected(self, callback: Callable[[Party], object]) -> None:
        """Call ``callback(party)`` when a connection to ``party`` is re-established or its
        overflowed queue drained: the frames it may have missed must be re-sent."""
        self._on_connected = callback

    def set_backlog(self, backlog: Callable[[], int]) -> None:
        """Read no more frames from any peer while ``backlog()`` (the frames delivered and not
        yet handled: ``NodeRuntime.waiting``) exceeds ``max_inbound_backlog``: a peer that
        floods the node is slowed by TCP flow control (its own queue then fills and drops,
        and its outbox re-sends), and the node's memory stays bounded. Called on the IO
        thread; must be thread-safe and fast."""
        self._backlog = backlog

    # ----- lifecycle ----------------------------------------------------------------------------

    def start(self, deliver: Deliver) -> None:
        """Listen for peers and begin delivering; raises ``OSError`` when the address cannot
        be bound. Frames queued before now start moving."""
        if self._loop is not None:
            raise RuntimeError(f"the TLS transport of {self._party} is already started")
        loop = asyncio.new_event_loop()
        self._deliver = deliver
        self._closing = False
        self._thread = threading.Thread(target=loop.run_forever, daemon=True,
                                        name=f"fibers-tls-{self._party.name}")
        self._loop = loop  # before _open: a frame sent meanwhile must kick its peer
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result()
        except BaseException:
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join()
            loop.close()
            raise

    def stop(self) -> None:
        """Close the listener and every connection and end the IO thread; no ``deliver`` call
        begins after this returns. Queued frames are dropped (the node's outbox keeps them).
        Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None
        asyncio.run_coroutine_threadsafe(self._close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def send(self, recipient: Party, frame: bytes) -> None:
        """Queue ``frame`` for ``recipient``; never blocks. A full queue drops it (counted;
        the node re-sends from its outbox once the queue drained)."""
        if len(frame) > MAX_FRAME:
            log.error("%s cannot send a %d-byte frame to %s: over the %d-byte limit",
                      self._party, len(frame), recipient, MAX_FRAME)
            return
        with self._lock:
            peer = self._peers.get(recipient.name)
            if peer is None:
                peer = self._peers[recipient.name] = _Peer(recipient)
            peer.party = recipient  # the map's current key is what the next connection checks
            if (len(peer.queue) >= self.max_queue_frames
                    or peer.queued_bytes + len(frame) > self.max_queue_bytes):
                self.stats.dropped += 1
                if not peer.overflowed:
                    log.warning("%s: the queue to %s is full; frames wait in the outbox",
                                self._party, recipient)
                peer.overflowed = True
                return
            peer.queue.append(frame)
            peer.queued_bytes += len(frame)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # stopped meanwhile: the outbox keeps it
                loop.call_soon_threadsafe(self._kick, recipient.name)

    # ----- the IO thread ------------------------------------------------------------------------

    async def _open(self) -> None:
        host, port = self._listen
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Unread(self._accepted), host, port)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        with self._lock:
            names = [name for name, peer in self._peers.items() if peer.queue]
        for name in names:
            self._kick(name)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closing = True
        with self._lock:
            peers = list(self._peers.values())
        pending = {*self._inbound, *(p.task for p in peers if p.task)}
        # Cancel until they end: a cancellation that lands as an await completes can be lost
        # (asyncio before 3.12), and the loops also stop at their next turn on _closing.
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for connection in list(self._connections):
            connection.abort()  # type: ignore[attr-defined]
        for _ in range(3):  # let the aborted connections' callbacks close their sockets
            await asyncio.sleep(0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    def _kick(self, name: str) -> None:
        if self._closing:
            return
        with self._lock:
            peer = self._peers[name]
        if peer.task is None or peer.task.done():
            peer.wake = asyncio.Event()
            peer.task = asyncio.get_running_loop().create_task(self._send_loop(peer))
        assert peer.wake is not None
        peer.wake.set()

    # ----- inbound ------------------------------------------------------------------------------

    @property
    def unauthenticated(self) -> int:
        """Inbound connections accepted whose TLS handshake has not ended yet."""
        return sum(self._handshaking.values())

    def _accepted(self, transport: asyncio.BaseTransport) -> None:
        host = str((transport.get_extra_info("peername") or ("?",))[0])
        if (self.unauthenticated >= self.max_unauthenticated
                or self._handshaking.get(host, 0) >= self.max_unauthenticated_per_host):
            self.stats.refused += 1
            log.warning("%s refused a connection from %s: too many connections in their "
                        "TLS handshake (%d from there, %d in all)", self._party, host,
                        self._handshaking.get(host, 0), self.unauthenticated)
            transport.abort()  # type: ignore[attr-defined]
            return
        self._handshaking[host] = self._handshaking.get(host, 0) + 1
        self._connections.add(transport)
        task = asyncio.get_running_loop().create_task(self._serve(transport, host))
        self._inbound.add(task)
        task.add_done_callback(self._inbound.discard)

    def _handshake_ended(self, host: str) -> None:
        left = self._handshaking.pop(host) - 1
        if left:
            self._handshaking[host] = left

    async def _serve(self, raw: asyncio.BaseTransport, host: str) -> None:
        remote = raw.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 16)
        protocol = _TlsReaderProtocol(reader)
        try:
            tls = await loop.start_tls(raw, protocol, self._server_ctx,  # type: ignore[arg-type]
                                       server_side=True,
                                       ssl_handshake_timeout=self.handshake_timeout)
            if tls is None:
                raise ConnectionError("the connection closed during the TLS handshake")
            sender = peer_party(tls.get_extra_info("ssl_object").getpeercert(binary_form=True),
                                self._map)
        except (OSError, TimeoutError, ssl.SSLError, CertificateMismatch) as exc:
            self.stats.refused += 1
            log.warning("%s refused a connection from %s: %s: %s", self._party, remote,
                        type(exc).__name__, exc)
            raw.close()
            return
        finally:
            self._handshake_ended(host)
        # One inbound connection per party: a peer that reconnects (in a tight loop, too)
        # replaces its older connection, so it never holds more than one.
        older = self._inbound_from.get(sender.name)
        self._inbound_from[sender.name] = tls
        if older is not None:
            log.info("%s: %s connected again; its older connection is closed", self._party,
                     sender)
            older.abort()  # type: ignore[attr-defined]
        try:
            while (frame := await read_frame(reader)) is not None:
                deliver = self._deliver
                if deliver is None or self._closing:
                    return
                deliver(sender, [frame])
                while self._backlog() > self.max_inbound_backlog and not self._closing:
                    await asyncio.sleep(_BACKLOG_POLL)
        except (BadFrame, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            if self._inbound_from.get(sender.name) is not tls:
                return  # replaced by a newer connection, which cut this one: not garbage
            self.stats.garbage += 1
            log.warning("%s disconnected %s (%s): %s", self._party, sender, remote,
                        exc if not isinstance(exc, asyncio.IncompleteReadError)
                        else "stream cut inside a frame")
        except OSError as exc:
            log.info("%s lost the connection from %s: %s", self._party, sender, exc)
        finally:
            if self._inbound_from.get(sender.name) is tls:
                del self._inbound_from[sender.name]
            tls.close()

    # ----- outbound -----------------------------------------------------------------------------

    async def _send_loop(self, peer: _Peer) -> None:
        """Open a connection to ``peer`` once frames wait for it, keep it, and re-open it
        with backoff whenever it is lost, frames waiting or not: frames written to a lost
        connection may never have arrived, and only a new one lets the node re-send them."""
        delay, connected_before = self._backoff[0], False
        while not self._closing:
            if not connected_before and not self._has_frames(peer):
                assert peer.wake is not None
                peer.wake.clear()
                await peer.wake.wait()
                continue
            try:
                reader, writer = await self._connect(peer.party)
            except (OSError, TimeoutError, ssl.SSLError, CertificateMismatch) as exc:
                log.info("%s cannot reach %s (retrying in %.2fs): %s", self._party,
                         peer.party, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            self._connections.add(writer.transport)
            self.stats.connects += 1
            delay = self._backoff[0]
            if connected_before:
                self._on_connected(peer.party)  # frames in flight on the old one may be lost
            connected_before = True
            try:
                await self._pump(peer, reader, writer)
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                log.info("%s lost its connection to %s: %s", self._party, peer.party, exc)
            finally:
                writer.close()

    def _has_frames(self, peer: _Peer) -> bool:
        with self._lock:
            return bool(peer.queue)

    async def _connect(
        self, party: Party
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self._map.address(party)
        if address is None:
            raise OSError(f"the network map has no address for {party}")
        host, _, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # "[::1]:10000"
        async with asyncio.timeout(self.handshake_timeout):
            reader, writer = await asyncio.open_connection(host, int(port),
                                                           ssl=self._client_ctx)
        try:
            actual = peer_party(
                writer.get_extra_info("ssl_object").getpeercert(binary_form=True), self._map)
            if actual != party:
                raise CertificateMismatch(f"{address} presented the certificate of {actual}, "
                                          f"not of {party}")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _pump(self, peer: _Peer, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Write queued frames until the connection ends. A frame leaves the queue only once
        written and drained; on a broken connection the rest stay queued for the next one."""
        closed = asyncio.ensure_future(reader.read(1))  # the peer never writes: EOF or error
        waiter: asyncio.Future[Any] | None = None
        try:
            while not closed.done() and not self._closing:
                with self._lock:
                    batch = list(itertools.islice(peer.queue, _BATCH))
                if not batch:
                    if peer.overflowed and self._drained(peer):
                        self._on_connected(peer.party)
                    assert peer.wake is not None
                    peer.wake.clear()
                    wake = waiter = asyncio.ensure_future(peer.wake.wait())
                    await asyncio.wait({wake, closed}, return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                    continue
                writer.write(b"".join(encode_frame(f) for f in batch))
                await writer.drain()
                with self._lock:
                    for _ in batch:
                        peer.queued_bytes -= len(peer.queue.popleft())
        finally:
            closed.cancel()
            if waiter is not None:
                waiter.cancel()

    def _drained(self, peer: _Peer) -> bool:
        with self._lock:
            if peer.queue:
                return False
            peer.overflowed = False
            return True

    def __repr__(self) -> str:
        return f"<TlsTransport {self._party.name} {self.address}>"
