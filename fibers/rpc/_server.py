"""``RpcServer``: the node's RPC over HTTPS, on its own thread (docs/rpc.md).

Starlette routes served by uvicorn with the node's TLS certificate, in an asyncio loop on a
thread of the server's own. Every operation is handed to the node thread through
``runtime.call`` (docs/transport-and-runtime.md); the server's thread only parses, checks
credentials and permissions, and writes responses. Feeds are server-sent events fed from the
node thread through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import secrets
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fibers.rpc._auth import ALL, FailureBackoff, User, Users
from fibers.rpc._gate import ConnectionGate, ConnectionLimits
from fibers.rpc._openapi import OPENAPI_PATH, openapi_document
from fibers.rpc._operations import Feed, Operation, RpcRequestError, check_arguments
from fibers.runtime import NodeStoppedError

__all__ = ["NodeCaller", "RpcServer"]

log = logging.getLogger("fibers.rpc")

MAX_BODY_BYTES = 1 << 20
"""The largest request body accepted (arguments are names and short texts)."""

MAX_QUEUED_EVENTS = 10_000
"""Events one subscription may have waiting for a slow client before it is ended."""

MAX_SUBSCRIPTIONS = 100
"""Feed streams open at once, from all users together (each holds a subscription on the
node); one user may hold at most a quarter of them."""


class NodeCaller(Protocol):
    """What the server needs of the node's runtime (``fibers.runtime.NodeRuntime``)."""

    def call(self, fn: Callable[[Any], Any]) -> Future[Any]:
        """Run ``fn(node)`` on the node thread."""


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers


@dataclass
class _Subscription:
    """One open feed stream. Invariant: ``queued`` counts the items put and not yet taken."""

    sid: str
    user: str
    queue: asyncio.Queue[tuple[str, Any]]
    loop: asyncio.AbstractEventLoop
    close: Callable[[], None] = lambda: None
    queued: int = 0
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, kind: str, value: Any) -> None:
        """Queue an item from any thread; past ``MAX_QUEUED_EVENTS`` the stream ends."""
        with self.lock:
            if self.ended:
                return
            if kind == "event" and self.queued >= MAX_QUEUED_EVENTS:
                kind, value = "end", "the client reads too slowly: too many events waiting"
            if kind == "end":
                self.ended = True
            self.queued += 1
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))


class RpcServer:
    """Serves ``operations`` and ``feeds`` of the node run by ``runtime`` to ``users`` over
    HTTPS at ``host:port`` (0: a free port) with ``certfile``/``keyfile``.

    ``error_status(exc)`` maps an operation's exception to an HTTP status (None: 500, but
    ``RpcRequestError`` is always 400 and ``NodeStoppedError`` 503). ``tick`` runs on the node
    thread every ``tick_interval`` seconds while a feed is open (for feeds built by comparing
    snapshots). The built-in ``shutdown`` operation calls ``on_shutdown`` on the server's
    thread. Call :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        runtime: NodeCaller,
        *,
        users: list[User],
        operations: list[Operation],
        feeds: list[Feed] = (),  # type: ignore[assignment]
        certfile: str,
        keyfile: str,
        host: str = "127.0.0.1",
        port: int = 0,
        title: str = "Fibers node",
        error_status: Callable[[BaseException], int | None] = lambda _exc: None,
        on_shutdown: Callable[[], None] | None = None,
        tick: Callable[[], None] | None = None,
        tick_interval: float = 0.2,
        backoff: FailureBackoff | None = None,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._runtime = runtime
        self._users = Users(users)
        self._backoff = backoff or FailureBackoff()
        self.max_subscriptions = max_subscriptions
        self._operations = {op.name: op for op in operations}
        if on_shutdown is not None:
            self._operations["shutdown"] = Operation(
                "shutdown", "Stop the node process cleanly", lambda _a: None)
        self._on_shutdown = on_shutdown
        self._feeds = {feed.name: feed for feed in feeds}
        self._error_status = error_status
        self._tick, self._tick_interval = tick, tick_interval
        self._document = openapi_document(title, self._operations, self._feeds)
        self._subscriptions: dict[str, _Subscription] = {}
        self._socket = socket.create_server((host, port))
        # Accepted connections inherit it: a response goes out as a header record and a body
        # record, and with Nagle's algorithm the body waited ~40 ms for the delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host, self.port = host, self._socket.getsockname()[1]
        app = Starlette(routes=[
            Route(OPENAPI_PATH, self._openapi, methods=["GET"]),
            Route("/api/v1/ops/{name}", self._call, methods=["POST"]),
            Route("/api/v1/feeds/{name}", self._subscribe, methods=["POST"]),
            Route("/api/v1/subscriptions/{sid}", self._unsubscribe, methods=["DELETE"]),
        ])
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certfile, keyfile)
        # The gate runs TLS itself: uvicorn bounds neither the handshake nor the wait for a
        # request head, nor the connections of one address (fibers/rpc/_gate.py).
        self.gate = ConnectionGate(tls, limits or ConnectionLimits())
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ws="none", http=self.gate.protocol_class(),
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"fibers-rpc-{self.port}",
                                        daemon=True)

    @property
    def open_subscriptions(self) -> int:
        """Feed streams open now."""
        return len(self._subscriptions)

    @property
    def url(self) -> str:
        """``https://host:port``."""
        return f"https://{self.host}:{self.port}"

    def start(self) -> RpcServer:
        """Serve from now on (the socket already listens: early connections wait in its
        backlog). Returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every feed stream and stop serving; waits for the server's thread. Idempotent."""
        for sub in list(self._subscriptions.values()):
            sub.put("end", "the server stops")
        self._server.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._socket.close()

    def _serve(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        await self._server.serve(sockets=[self._socket])
        self.gate.abort_handshakes()
        # A TLS connection still open at shutdown waits for its peer's close_notify; abort it
        # so that its socket is closed now rather than leaked with the loop.
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)

    # ----- requests ------------------------------------------------------------------------------

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(self._document)

    async def _authenticate(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise _Refused(401, "authentication required: HTTP Basic with an RPC user of the "
                           "node", "AuthenticationError")
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode() \
                .partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        address = request.client.host if request.client is not None else "unknown"
        wait = self._backoff.wait(address)
        if wait > 0:
            seconds = str(math.ceil(wait))
            raise _Refused(429, f"too many failed logins from {address}: try again in "
                           f"{seconds} s", "TooManyFailedLogins", {"Retry-After": seconds})
        if not sep:
            self._backoff.failed(address)
            raise _Refused(401, "malformed HTTP Basic credentials", "AuthenticationError")
        user = await run_in_threadpool(self._users.authenticate, username, password)
        if user is None:
            self._backoff.failed(address)
            raise _Refused(401, "wrong user name or password", "AuthenticationError")
        self._backoff.succeeded(address)
        return user

    @staticmethod
    async def _body(request: Request) -> bytes:
        """The body, read no further than ``MAX_BODY_BYTES``: a larger one (announced or
        sent) is refused with 413 before it is buffered."""
        too_large = _Refused(413, f"the request body is too large: at most {MAX_BODY_BYTES} "
                             "bytes are accepted", "RequestTooLarge")
        announced = request.headers.get("content-length", "0")
        if not announced.isdigit() or int(announced) > MAX_BODY_BYTES:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _arguments(self, request: Request, params: Any) -> dict[str, Any]:
        raw = await self._body(request)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except RecursionError:
            raise RpcRequestError("the request body is nested too deeply") from None
        except ValueError as exc:  # not JSON, not UTF-8, or a number of over 4,300 digits
            raise RpcRequestError(f"the request body is not valid JSON: "
                                  f"{_shortened(str(exc))}") from None
        return check_arguments(params, body)

    async def _permit(self, user: User, what: Operation | Feed,
                      arguments: dict[str, Any]) -> None:
        if ALL in user.permissions:
            return
        try:
            accepted = await run_in_threadpool(what.accepted, arguments)
        except LookupError:
            accepted = []
        if not user.may(accepted):
            needed = " or ".join(accepted) or "a permission it names"
            raise _Refused(403, f"user {user.username!r} may not call {what.name!r} with "
                           f"these arguments: it needs {needed} (or ALL)", "PermissionError")

    async def _on_node(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self._runtime.call(lambda _node: fn()))

    def _failure(self, exc: BaseException) -> Response:
        headers: dict[str, str] = {}
        if isinstance(exc, _Refused):
            status, kind = exc.status, exc.kind
            headers.update(exc.headers or {})
        elif isinstance(exc, RpcRequestError):
            status, kind = 400, "RpcRequestError"
        elif isinstance(exc, NodeStoppedError):
            status, kind = 503, type(exc).__name__
        else:
            status, kind = self._error_status(exc) or 500, type(exc).__name__
            if status == 500:
                log.warning("RPC operation failed: %s: %s", kind, _shortened(str(exc)))
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="fibers"'
        # Shortened: a message may quote an argument, and a client may send a megabyte.
        return JSONResponse({"error": {"status": status, "type": kind,
                                       "message": _shortened(str(exc))}},
                            status_code=status, headers=headers or None)

    async def _call(self, request: Request) -> Response:
        try:
            user = await self._authenticate(request)
            name = request.path_params["name"]
            op = self._operations.get(name)
            if op is None:
                raise _Refused(404, f"no operation {name!r} (see {OPENAPI_PATH})",
                               "UnknownOperation")
            arguments = await self._arguments(request, op.params)
            await self._permit(user, op, arguments)
            if name == "shutdown" and self._on_shutdown is not None:
                await run_in_threadpool(self._on_shutdown)
                return JSONResponse({"result": None})
            result = await self._on_node(lambda: op.run(arguments))
        except Exception as exc:
            return self._failure(exc)
        return JSONResponse({"result": result})

    async def _subscribe(self, request: Request) -> Response:
        try:
            user = await self._authenticate(request)
            name = request.path_params["name"]
            feed = self._feeds.get(name)
            if feed is None:
                raise _Refused(404, f"no feed {name!r} (see {OPENAPI_PATH})", "UnknownFeed")
            arguments = await self._arguments(request, feed.params)
            await self._permit(user, feed, arguments)
            self._check_room(user)
            loop = asyncio.get_running_loop()
            sub = _Subscription(secrets.token_hex(8), user.username, asyncio.Queue(), loop)

            def emit(event: Any) -> None:
                sub.put("end", "the feed ended") if event is None else sub.put("event", event)

            self._subscriptions[sub.sid] = sub  # counted now: opening it awaits
            try:
                first, sub.close = await self._on_node(lambda: feed.open(arguments, emit))
            except BaseException:
                self._subscriptions.pop(sub.sid, None)
                raise
        except Exception as exc:
            return self._failure(exc)
        self._ensure_ticking()
        return StreamingResponse(self._stream(sub, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    def _check_room(self, user: User) -> None:
        """429 when the server, or this user, holds as many feed streams as allowed."""
        mine = sum(1 for sub in self._subscriptions.values() if sub.user == user.username)
        if len(self._subscriptions) >= self.max_subscriptions:
            raise _Refused(429, f"{self.max_subscriptions} feeds are open, the most this node "
                           "serves: close one first", "TooManySubscriptions")
        if mine >= max(1, self.max_subscriptions // 4):
            raise _Refused(429, f"user {user.username!r} has {mine} feeds open, the most one "
                           "user may: close one first", "TooManySubscriptions")

    async def _stream(self, sub: _Subscription, first: Any) -> AsyncIterator[str]:
        try:
            yield _event({"subscription": sub.sid, "event": first})
            while True:
                try:
                    kind, value = await asyncio.wait_for(sub.queue.get(), timeout=15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                with sub.lock:
                    sub.queued -= 1
                if kind == "end":
                    yield _event({"end": value})
                    return
                yield _event({"event": value})
        finally:
            self._subscriptions.pop(sub.sid, None)
            with sub.lock:
                sub.ended = True
            self._runtime.call(lambda _node: sub.close())

    async def _unsubscribe(self, request: Request) -> Response:
        try:
            user = await self._authenticate(request)
            sub = self._subscriptions.get(request.path_params["sid"])
            if sub is not None and sub.user != user.username:
                raise _Refused(403, "that subscription is another user's", "PermissionError")
        except Exception as exc:
            return self._failure(exc)
        if sub is not None:
            sub.put("end", "closed by the client")
        return JSONResponse({"result": None})

    # ----- ticking -------------------------------------------------------------------------------

    _ticking: asyncio.Task[None] | None = None

    def _ensure_ticking(self) -> None:
        if self._tick is not None and (self._ticking is None or self._ticking.done()):
            self._ticking = asyncio.get_running_loop().create_task(self._tick_loop())

    async def _tick_loop(self) -> None:
        tick = self._tick
        assert tick is not None
        while self._subscriptions and not self._server.should_exit:
            try:
                await asyncio.wrap_future(self._runtime.call(lambda _node: tick()))
            except NodeStoppedError:
                return
            except Exception:
                log.exception("the RPC feeds' tick failed")
            await asyncio.sleep(self._tick_interval)


_LONGEST_MESSAGE = 1000


def _shortened(message: str) -> str:
    if len(message) <= _LONGEST_MESSAGE:
        return message
    return f"{message[:_LONGEST_MESSAGE]}... ({len(message) - _LONGEST_MESSAGE} more characters)"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
