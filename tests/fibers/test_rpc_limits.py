"""What bounds an RPC client that tries too much: failed logins back off per client address
(never per user: nobody can lock the operator out), an unknown user costs what a wrong
password costs, and feed streams are bounded in all and per user."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fibers.rpc import FailureBackoff, Feed, Operation, RpcServer, User, hash_password
from fibers.rpc._auth import Users
from tests.fibers._tls import write_tls
from tests.fibers.test_rpc_server import NodeThread
from tests.tls._net import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[RpcServer, Clock, Path]]:
    tls = write_tls(tmp_path / "tls")
    node = NodeThread()
    clock = Clock()

    def open_feed(arguments: dict[str, Any], emit: Any) -> Any:
        return "first", lambda: None

    users = [User(name, hash_password("pw", n=1024), frozenset(["ALL"])) for name in ("a", "b")]
    server = RpcServer(
        node, users=users, operations=[Operation("ping", "pong", lambda _a: "pong")],
        feeds=[Feed("feed", "a feed", open_feed)],
        certfile=str(tls / "node.crt"), keyfile=str(tls / "node.key"),
        backoff=FailureBackoff(free=3, first=2.0, longest=8.0, clock=clock),
        max_subscriptions=4).start()
    try:
        yield server, clock, tls / "ca.crt"
    finally:
        server.stop()
        node.pool.shutdown()


def _client(server: RpcServer, ca: Path, source: str = "127.0.0.1",
            user: tuple[str, str] = ("a", "pw")) -> httpx.Client:
    return httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(ca)),
                        auth=user, transport=httpx.HTTPTransport(
                            verify=ssl.create_default_context(cafile=str(ca)),
                            local_address=source), timeout=30)


def test_failed_logins_back_off_per_address_and_a_success_clears_them(
        server: tuple[RpcServer, Clock, Path]) -> None:
    rpc, clock, ca = server
    with _client(rpc, ca, user=("a", "wrong")) as wrong, _client(rpc, ca) as right:
        assert [wrong.post("/api/v1/ops/ping").status_code for _ in range(3)] == [401] * 3
        # The right password from the same address now waits too: it is not even checked.
        refused = right.post("/api/v1/ops/ping")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["type"] == "TooManyFailedLogins"
        # Another address, trying the same user, is not locked out.
        with _client(rpc, ca, source="127.0.0.2") as elsewhere:
            assert elsewhere.post("/api/v1/ops/ping").json() == {"result": "pong"}
        clock.now += 2
        assert wrong.post("/api/v1/ops/ping").status_code == 401
        assert right.post("/api/v1/ops/ping").headers["retry-after"] == "4"  # doubled
        clock.now += 4
        assert wrong.post("/api/v1/ops/ping").status_code == 401
        clock.now += 7.5
        assert right.post("/api/v1/ops/ping").headers["retry-after"] == "1"  # at most 8 s
        clock.now += 0.5
        assert right.post("/api/v1/ops/ping").json() == {"result": "pong"}
        # A success forgets the failures: three more are free again.
        assert [wrong.post("/api/v1/ops/ping").status_code for _ in range(3)] == [401] * 3


def test_the_backoff_remembers_a_bounded_number_of_addresses() -> None:
    backoff = FailureBackoff(free=1, first=10, max_tracked=100, clock=lambda: 0.0)
    for n in range(10_000):
        backoff.failed(f"10.0.{n // 256}.{n % 256}")
    assert backoff.wait("10.0.0.0") == 0  # forgotten: the longest quiet
    assert backoff.wait("10.0.39.15") == 10  # the last one
    for _ in range(5000):  # no overflow however long it goes on
        backoff.failed("10.0.39.15")
    assert backoff.wait("10.0.39.15") == 60


def test_an_unknown_user_costs_the_same_scrypt_as_a_wrong_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    users = Users([User("a", hash_password("pw", n=2048, r=4, p=2), frozenset(["ALL"]))])
    costs: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kwargs: Any) -> bytes:
        costs.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert users.authenticate("a", "wrong") is None
    assert users.authenticate("nobody", "wrong") is None
    assert costs == [(2048, 4, 2), (2048, 4, 2)]


def _open(client: httpx.Client) -> httpx.Response:
    """A feed stream left open (the caller closes it)."""
    return client.send(client.build_request("POST", "/api/v1/feeds/feed", json={}),
                       stream=True)


def test_feed_streams_are_bounded_in_all_and_per_user(
        server: tuple[RpcServer, Clock, Path]) -> None:
    rpc, _clock, ca = server
    clients = [_client(rpc, ca, user=("a" if i < 3 else "b", "pw")) for i in range(6)]
    try:
        # One user may hold a quarter of the 4 (rounded up to at least 1), i.e. 1 here;
        # each stream is on a connection of its own.
        opened = [_open(c) for c in clients]
        assert [r.status_code for r in opened] == [200, 429, 429, 200, 429, 429]
        assert "user 'a'" in opened[1].read().decode()
        assert rpc.open_subscriptions == 2
        opened[0].close()
        # Closing one frees its slot (the server notices the disconnect).
        wait_for(lambda: rpc.open_subscriptions == 1, "the closed stream to end")
        again = _open(clients[1])
        assert again.status_code == 200
        again.close()
    finally:
        for response in opened:
            response.close()
        for c in clients:
            c.close()


def test_feed_streams_are_bounded_in_all(tmp_path: Path) -> None:
    tls = write_tls(tmp_path / "tls")
    node = NodeThread()
    users = [User(f"u{i}", hash_password("pw", n=1024), frozenset(["ALL"])) for i in range(5)]
    rpc = RpcServer(node, users=users, operations=[],
                    feeds=[Feed("feed", "a feed", lambda _a, _e: ("first", lambda: None))],
                    certfile=str(tls / "node.crt"), keyfile=str(tls / "node.key"),
                    max_subscriptions=4).start()
    clients = [_client(rpc, tls / "ca.crt", user=(f"u{i}", "pw")) for i in range(5)]
    try:
        opened = [_open(c) for c in clients]
        assert [r.status_code for r in opened] == [200, 200, 200, 200, 429]
        assert "4 feeds are open" in opened[4].read().decode()
    finally:
        for response in opened:
            response.close()
        for c in clients:
            c.close()
        rpc.stop()
        node.pool.shutdown()
