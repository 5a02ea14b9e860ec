"""``RpcClient``: the Python client of a node's RPC, on httpx (docs/rpc.md)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx

from fibers.rpc._openapi import OPENAPI_PATH

__all__ = [
    "RpcAuthenticationError",
    "RpcClient",
    "RpcConnectionError",
    "RpcError",
    "RpcPermissionError",
    "RpcRequestRefused",
    "Subscription",
    "connect",
]


class RpcError(Exception):
    """The server refused or failed a call: ``status`` (HTTP), ``type`` (the server-side
    exception's class name) and the server's message."""

    def __init__(self, status: int, type_name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_name, message

    def __str__(self) -> str:
        return self.message


class RpcAuthenticationError(RpcError):
    """401: no or wrong credentials."""


class RpcPermissionError(RpcError):
    """403: the user lacks the permission for the call."""


class RpcRequestRefused(RpcError):
    """400: the request was malformed or its arguments unusable (413: its body too large)."""


class RpcConnectionError(RpcError):
    """The server could not be reached (or the TLS handshake failed)."""


_BY_STATUS: dict[int, type[RpcError]] = {401: RpcAuthenticationError, 403: RpcPermissionError,
                                         400: RpcRequestRefused, 413: RpcRequestRefused}


def _error(response: httpx.Response) -> RpcError:
    try:
        body = response.json()["error"]
        status, kind, message = int(body["status"]), str(body["type"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        status, kind = response.status_code, "HTTPError"
        message = f"HTTP {response.status_code}: {response.text[:200]}"
    return _BY_STATUS.get(status, RpcError)(status, kind, message)


def _present(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments that are not None (a None one is left out: the server's default)."""
    return {k: v for k, v in arguments.items() if v is not None}


def _transport(tls: ssl.SSLContext) -> httpx.HTTPTransport:
    """HTTPS with TCP_NODELAY: a request goes out as a header record and a body record, and
    with Nagle's algorithm the body waits for the server's delayed ACK of the headers (~40 ms
    on Linux), which made every call cost ~45 ms on an idle node."""
    return httpx.HTTPTransport(verify=tls,
                               socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


class Subscription:
    """One feed subscription; events arrive on its reader thread. ``unsubscribe`` asks the
    server to end the stream (idempotent)."""

    def __init__(self, client: RpcClient, sid: str, thread: threading.Thread) -> None:
        self._client, self.sid, self.thread = client, sid, thread
        self._closed = False

    @property
    def active(self) -> bool:
        """True until unsubscribed or the stream ended."""
        return not self._closed and self.thread.is_alive()

    def unsubscribe(self) -> None:
        """End the subscription (the server ends its stream)."""
        if self._closed:
            return
        self._closed = True
        if self.thread.is_alive():
            # An error means the stream is gone already (server stopped, connection lost).
            with contextlib.suppress(RpcError):
                self._client.request("DELETE", f"/api/v1/subscriptions/{self.sid}")


class RpcClient:
    """A connection to one node's RPC at ``url`` as ``user``, trusting the CA certificate in
    the file ``ca`` (None: the system's CAs). Calls are thread-safe (one lock). See
    :func:`connect`."""

    def __init__(self, url: str, *, user: str, password: str, ca: str | Path | None,
                 timeout: float = 60.0) -> None:
        parsed = httpx.URL(url)
        if parsed.userinfo:
            # Never kept: the URL appears in error messages and in the shell's banner.
            raise ValueError("the RPC URL must not carry credentials (user:password@): pass "
                             "user= and password= instead")
        if parsed.scheme != "https":
            raise ValueError(f"the RPC URL must be https://host:port, got a {parsed.scheme!r} "
                             "URL: the password is sent with every request")
        self.url = url.rstrip("/")
        self._tls = ssl.create_default_context(cafile=None if ca is None else str(ca))
        self._auth = httpx.BasicAuth(user, password)
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.url, auth=self._auth, timeout=timeout,
                                  transport=_transport(self._tls))
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection (subscriptions end with their streams)."""
        self._http.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ----- generic -------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> RpcConnectionError:
        return RpcConnectionError(0, type(exc).__name__,
                                  f"cannot reach the node's RPC at {self.url}: {exc}")

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer to one HTTP request, or ``RpcError``."""
        try:
            with self._lock:
                response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One HTTP request; the ``result`` of a JSON answer, or ``RpcError``."""
        return self._json(method, path, body).get("result")

    def call(self, operation: str, **arguments: Any) -> Any:
        """Run ``operation`` on the node with ``arguments`` (None ones are left out)."""
        return self.request("POST", f"/api/v1/ops/{operation}", _present(arguments))

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        result: dict[str, Any] = self._json("GET", OPENAPI_PATH)
        return result

    def subscribe(
        self,
        feed: str,
        on_event: Callable[[Any], object],
        *,
        on_end: Callable[[str], object] = lambda _reason: None,
        **arguments: Any,
    ) -> tuple[Any, Subscription]:
        """Open ``feed``: returns its first event (a snapshot, or what it started) once the
        server sent it, and the subscription; later events go to ``on_event`` on the
        subscription's reader thread, and ``on_end(reason)`` once, when the stream ends.
        Raises ``RpcError`` when the server refuses the subscription."""
        body = _present(arguments)
        first: Future[tuple[str, Any]] = Future()
        thread = threading.Thread(target=self._read_feed, name=f"fibers-rpc-feed-{feed}",
                                  args=(feed, body, first, on_event, on_end), daemon=True)
        thread.start()
        sid, event = first.result()
        return event, Subscription(self, sid, thread)

    def _read_feed(self, feed: str, body: dict[str, Any], first: Future[tuple[str, Any]],
                   on_event: Callable[[Any], object], on_end: Callable[[str], object]) -> None:
        reason = "the stream ended"
        try:
            with httpx.Client(base_url=self.url, auth=self._auth,
                              timeout=httpx.Timeout(self._timeout, read=None),
                              transport=_transport(self._tls)) as http, \
                    http.stream("POST", f"/api/v1/feeds/{feed}", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    first.set_exception(_error(response))
                    return
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = json.loads(line[5:])
                    if "subscription" in payload:
                        first.set_result((payload["subscription"], payload["event"]))
                    elif "end" in payload:
                        reason = str(payload["end"])
                        break
                    else:
                        on_event(payload["event"])
        except httpx.HTTPError as exc:
            reason = f"connection lost: {exc}"
            if not first.done():
                first.set_exception(self._unreachable(exc))
                return
        if not first.done():
            first.set_exception(RpcConnectionError(0, "EOF", f"the feed {feed} ended at once"))
            return
        on_end(reason)

    # ----- the node operations (docs/rpc.md) ----------------------------------------------------

    def node_info(self) -> dict[str, Any]:
        """Who the node is and what it holds."""
        result: dict[str, Any] = self.call("node_info")
        return result

    def network_map(self) -> list[dict[str, Any]]:
        """The parties the node knows."""
        result: list[dict[str, Any]] = self.call("network_map")
        return result

    def start_flow(self, flow: str, **arguments: str) -> dict[str, Any]:
        """Start ``flow`` (class name) with ``arguments`` as text (converted on the node as the
        shell converts them); returns ``{"run_id", "flow_class"}`` once the start is durable."""
        result: dict[str, Any] = self.call("start_flow", flow=flow, args=arguments)
        return result

    def start_tracked_flow(self, flow: str, on_progress: Callable[[Any], object],
                           **arguments: str) -> tuple[dict[str, Any], Subscription]:
        """:meth:`start_flow` with the flow's progress pushed to ``on_progress``; the started
        event carries the first progress snapshot(s)."""
        return self.subscribe("start_tracked_flow", on_progress, flow=flow, args=arguments)

    def state_machines(self) -> list[dict[str, Any]]:
        """The node's unfinished flows."""
        result: list[dict[str, Any]] = self.call("state_machines")
        return result

    def kill_flow(self, run_id: str) -> bool:
        """Kill the flow (a run id or unique prefix); False when it is not running."""
        return bool(self.call("kill_flow", run_id=run_id))

    def hospital(self) -> list[dict[str, Any]]:
        """The hospitalised flows."""
        result: list[dict[str, Any]] = self.call("hospital")
        return result

    def retry(self, run_id: str) -> bool:
        """Retry a hospitalised flow from its checkpoint."""
        return bool(self.call("retry", run_id=run_id))

    def hospital_kill(self, run_id: str) -> bool:
        """Kill a hospitalised flow."""
        return bool(self.call("hospital_kill", run_id=run_id))

    def vault_query(self, state_type: str | None = None) -> list[dict[str, Any]]:
        """The unconsumed states (of ``state_type`` when given)."""
        result: list[dict[str, Any]] = self.call("vault_query", state_type=state_type)
        return result

    def set_draining(self, draining: bool) -> None:
        """Refuse (or accept again) new flows."""
        self.call("set_draining", draining=draining)

    def shutdown(self) -> None:
        """Stop the node process cleanly."""
        self.call("shutdown")


def connect(url: str, *, user: str, password: str, ca: str | Path | None,
            timeout: float = 60.0) -> RpcClient:
    """A client of the node's RPC at ``url`` (``https://host:port``) as ``user``, verifying the
    server's certificate against the CA certificate file ``ca``. ``ValueError`` for a URL that
    is not https or carries credentials."""
    return RpcClient(url, user=user, password=password, ca=ca, timeout=timeout)
