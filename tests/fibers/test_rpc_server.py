"""The generic RPC (``fibers.rpc``) without a ledger: password hashes, argument checks,
registered operations run on the node thread, feeds that a stopping server ends, and the
bound on events waiting for a slow client."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fibers.rpc import (
    Feed,
    Operation,
    Param,
    RpcConnectionError,
    RpcRequestError,
    RpcRequestRefused,
    RpcServer,
    User,
    connect,
    hash_password,
    verify_password,
)
from fibers.rpc._operations import check_arguments
from fibers.rpc._server import MAX_QUEUED_EVENTS, _Subscription
from tests.fibers._tls import write_tls

TIMEOUT = 30.0


def test_a_password_verifies_against_its_hash_only() -> None:
    hashed = hash_password("s3cret", n=1024)
    assert hashed.startswith("scrypt$1024$8$1$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret ", hashed)
    assert hash_password("s3cret", n=1024) != hashed  # a fresh salt each time
    for malformed in ("", "scrypt$1$2", "bcrypt$1024$8$1$AAAA$AAAA", "scrypt$x$8$1$AA$AA",
                      hashed.replace("$1$", "$0$"), "scrypt$1024$8$1$!!$AAAA"):
        assert not verify_password("s3cret", malformed)


def test_arguments_are_checked_against_their_parameters() -> None:
    params = (Param("n", int), Param("ratio", float, required=False),
              Param("labels", dict, required=False, values=str))
    assert check_arguments(params, {"n": 3, "ratio": 1}) == {"n": 3, "ratio": 1}
    for body, message in [
        ({"n": True}, "'n' must be integer, got boolean"),
        ({"n": 1.5}, "'n' must be integer, got number"),
        ({}, "missing argument 'n'"),
        ({"n": 1, "m": 2}, "unknown argument(s) m"),
        ({"n": 1, "labels": {"a": 1}}, "'labels.a' must be string, got integer"),
        ("text", "must be a JSON object, got string"),
    ]:
        with pytest.raises(RpcRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_arguments(params, body)


class NodeThread:
    """Stands in for a NodeRuntime: runs calls on one thread of its own."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="node")
        self.threads: set[str] = set()

    def call(self, fn: Callable[[Any], Any]) -> Future[Any]:
        def run() -> Any:
            self.threads.add(threading.current_thread().name)
            return fn(None)

        return self.pool.submit(run)


Served = tuple[RpcServer, NodeThread, Path, list[Callable[[Any], None]]]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    tls = write_tls(tmp_path / "tls")
    node = NodeThread()
    emitters: list[Callable[[Any], None]] = []

    def open_feed(arguments: dict[str, Any], emit: Callable[[Any], None]) -> Any:
        emitters.append(emit)
        return {"start": arguments["start"]}, lambda: None

    server = RpcServer(
        node, users=[User("u", hash_password("pw", n=1024), frozenset(["ALL"]))],
        operations=[Operation("double", "2n", lambda a: a["n"] * 2, (Param("n", int),))],
        feeds=[Feed("counter", "counts", open_feed, (Param("start", int),))],
        certfile=str(tls / "node.crt"), keyfile=str(tls / "node.key")).start()
    try:
        yield server, node, tls / "ca.crt", emitters
    finally:
        server.stop()
        node.pool.shutdown()


def test_a_registered_operation_runs_on_the_node_thread(served: Served) -> None:
    server, node, ca, _ = served
    with connect(server.url, user="u", password="pw", ca=ca) as client:
        assert client.call("double", n=21) == 42
        with pytest.raises(RpcRequestRefused, match="'n' must be integer"):
            client.call("double", n="21")
        with pytest.raises(RpcRequestRefused, match="at most"):
            client.request("POST", "/api/v1/ops/double", {"n": 1, "pad": "x" * (2 << 20)})
    assert node.threads == {"node_0"}


def test_stopping_the_server_ends_open_feeds(served: Served) -> None:
    server, _node, ca, emitters = served
    events: queue.Queue[Any] = queue.Queue()
    ended: queue.Queue[str] = queue.Queue()
    client = connect(server.url, user="u", password="pw", ca=ca)
    try:
        first, subscription = client.subscribe("counter", events.put, on_end=ended.put, start=7)
        assert first == {"start": 7}
        [emit] = emitters
        emit(8)
        assert events.get(timeout=TIMEOUT) == 8
        server.stop()
        assert ended.get(timeout=TIMEOUT) == "the server stops"
        subscription.thread.join(TIMEOUT)
        with pytest.raises(RpcConnectionError):
            client.call("double", n=1)
    finally:
        client.close()


def test_a_client_that_reads_too_slowly_is_cut_off() -> None:
    loop = asyncio.new_event_loop()
    try:
        sub = _Subscription("s", "u", asyncio.Queue(), loop)
        for n in range(MAX_QUEUED_EVENTS + 5):
            sub.put("event", n)
        loop.run_until_complete(asyncio.sleep(0))
        items = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    finally:
        loop.close()
    assert len(items) == MAX_QUEUED_EVENTS + 1
    assert items[-1] == ("end", "the client reads too slowly: too many events waiting")
    assert sub.ended
