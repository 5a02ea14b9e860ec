"""The RPC port against clients that hold connections without asking anything (slowloris):
silent TCP connections, TLS connections that never send a request head or trickle one, many
connections from one address. Real sockets on 127.0.0.1 (127.0.0.2 as another host); every
wait is bounded and polls observable state."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from fibers.rpc import ConnectionLimits, Feed, Operation, RpcServer, User, hash_password
from tests.fibers._tls import write_tls
from tests.fibers.test_rpc_server import NodeThread
from tests.tls._net import closed_by_peer, wait_for

pytestmark = pytest.mark.slow

LIMITS = ConnectionLimits(handshake_timeout=0.3, request_head_timeout=0.3, max_per_host=3,
                          max_total=6)


@pytest.fixture
def rpc(tmp_path: Path) -> Iterator[tuple[RpcServer, Path]]:
    tls = write_tls(tmp_path / "tls")
    node = NodeThread()
    server = RpcServer(
        node, users=[User("a", hash_password("pw", n=1024), frozenset(["ALL"]))],
        operations=[Operation("ping", "pong", lambda _a: "pong")],
        feeds=[Feed("feed", "a feed", lambda _a, _e: ("first", lambda: None))],
        certfile=str(tls / "node.crt"), keyfile=str(tls / "node.key"), limits=LIMITS).start()
    try:
        yield server, tls / "ca.crt"
    finally:
        server.stop()
        node.pool.shutdown()


def _silent(rpc: RpcServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((rpc.host, rpc.port), timeout=30,
                                    source_address=(source, 0))


def _tls(rpc: RpcServer, ca: Path) -> ssl.SSLSocket:
    """A TLS connection whose handshake has finished and that has sent nothing yet."""
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx.wrap_socket(_silent(rpc), server_hostname=rpc.host)


def _ping(rpc: RpcServer, ca: Path, source: str = "127.0.0.1") -> httpx.Response:
    verify = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=rpc.url, auth=("a", "pw"), timeout=30, transport=httpx.HTTPTransport(
            verify=verify, local_address=source)) as client:
        return client.post("/api/v1/ops/ping")


def test_a_connection_that_never_starts_its_handshake_is_closed(
        rpc: tuple[RpcServer, Path]) -> None:
    server, ca = rpc
    with _silent(server) as idle:
        assert closed_by_peer(idle)
    wait_for(lambda: server.gate.timed_out == 1, "the handshake timeout to be counted")
    wait_for(lambda: server.gate.open_connections == 0, "the slot to be given back")
    assert _ping(server, ca).json() == {"result": "pong"}


@pytest.mark.parametrize("sent", [b"", b"POST /api/v1/ops/ping HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "half a head"])
def test_a_tls_connection_without_a_whole_request_head_is_closed(
        rpc: tuple[RpcServer, Path], sent: bytes) -> None:
    server, ca = rpc
    with _tls(server, ca) as client:
        client.sendall(sent)
        assert closed_by_peer(client)
    assert server.gate.timed_out == 1
    wait_for(lambda: server.gate.open_connections == 0, "the slot to be given back")


def test_one_address_cannot_hold_more_than_its_share(rpc: tuple[RpcServer, Path]) -> None:
    server, ca = rpc
    with ExitStack() as stack:
        for _ in range(LIMITS.max_per_host):
            stack.enter_context(_silent(server))
        wait_for(lambda: server.gate.open_connections == 3, "three connections admitted")
        with _silent(server) as fourth:
            assert closed_by_peer(fourth)
        assert server.gate.refused == 1
        # Another address is still served while the first holds its share.
        assert _ping(server, ca, source="127.0.0.2").json() == {"result": "pong"}
    wait_for(lambda: server.gate.open_connections == 0, "the held slots to be given back")
    assert _ping(server, ca).json() == {"result": "pong"}


def test_the_port_holds_at_most_max_total_connections(rpc: tuple[RpcServer, Path]) -> None:
    server, _ca = rpc
    with ExitStack() as stack:
        for source in ("127.0.0.1",) * 3 + ("127.0.0.2",) * 3:
            stack.enter_context(_silent(server, source))
        wait_for(lambda: server.gate.open_connections == 6, "six connections admitted")
        with _silent(server, "127.0.0.3") as seventh:
            assert closed_by_peer(seventh)
        assert server.gate.refused == 1


def test_a_feed_stream_is_never_cut_for_waiting(rpc: tuple[RpcServer, Path]) -> None:
    server, ca = rpc
    verify = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=server.url, auth=("a", "pw"), verify=verify,
                      timeout=30) as client, \
            client.stream("POST", "/api/v1/feeds/feed", json={}) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert any("first" in line for line in lines)
        # A silent connection opened now times out after request_head_timeout; the
        # stream, armed before it and then busy, must outlive it.
        with _silent(server) as idle:
            assert closed_by_peer(idle)
        wait_for(lambda: server.gate.timed_out == 1, "the silent one to time out")
        assert server.open_subscriptions == 1
        server.stop()  # ends every stream with an "end" event
        assert any("end" in line for line in lines)
