"""The TLS transport attacked: connections that never finish their handshake (slowloris),
many at once from one host or from many, a peer reconnecting in a tight loop, a peer flooding
small frames. Real sockets on 127.0.0.1 (and 127.0.0.2-4 as other hosts); every wait is
bounded and polls observable state."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fibers import NetworkMap, NodeIdentity, NodeInfo, Party
from fibers.tls import TlsFiles, TlsTransport
from tests.tls._net import (
    closed_by_peer,
    frame,
    free_ports,
    new_ca,
    tls_client,
    wait_for,
    write_tls,
)

pytestmark = pytest.mark.slow


@dataclass
class Inbox:
    """Frames delivered; ``handled`` of them taken by the 'node'. Records the largest
    backlog any delivery saw."""

    frames: list[tuple[Party, bytes]] = field(default_factory=list)
    handled: int = 0
    largest_backlog: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, sender: Party, frames: Sequence[bytes]) -> None:
        with self.lock:
            self.frames.extend((sender, f) for f in frames)
            self.largest_backlog = max(self.largest_backlog, self.backlog())

    def backlog(self) -> int:
        return len(self.frames) - self.handled

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


@dataclass
class Bob:
    transport: TlsTransport
    inbox: Inbox
    port: int
    alice_files: TlsFiles
    ca: Path
    alice: Party
    alice_port: int


@pytest.fixture
def make_bob(tmp_path: Path) -> Iterator[Any]:
    started: list[TlsTransport] = []

    def make(**options: Any) -> Bob:
        ca = new_ca()
        alice, bob = NodeIdentity("Alice").party, NodeIdentity("Bob").party
        alice_port, bob_port = free_ports(2)
        nmap = NetworkMap()
        nmap.add(NodeInfo(alice, f"127.0.0.1:{alice_port}"))
        nmap.add(NodeInfo(bob, f"127.0.0.1:{bob_port}"))
        bob_files = write_tls(tmp_path / "bob", ca, bob)
        transport = TlsTransport(bob, nmap, bob_files, ("0.0.0.0", bob_port), **options)
        inbox = Inbox()
        transport.start(inbox)
        started.append(transport)
        return Bob(transport, inbox, bob_port, write_tls(tmp_path / "alice", ca, alice),
                   bob_files.ca, alice, alice_port)

    try:
        yield make
    finally:
        for transport in started:
            transport.stop()


def _silent(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection from ``source`` that sends nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(source, 0))
    return sock


def test_a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout(
        make_bob: Any) -> None:
    bob: Bob = make_bob(handshake_timeout=0.2)
    with _silent(bob.port) as idle:
        assert closed_by_peer(idle)
    wait_for(lambda: bob.transport.stats.refused == 1, "the timeout to be counted")
    assert bob.transport.unauthenticated == 0
    with tls_client(bob.port, bob.alice_files, bob.ca) as client:
        client.sendall(frame(b"after"))
        wait_for(lambda: bob.inbox.count() == 1, "a frame from an honest peer")


def test_an_outbound_handshake_that_never_finishes_gives_up_after_the_handshake_timeout(
        make_bob: Any) -> None:
    # Alice's address answers TCP but never TLS: each of Bob's attempts must end after his
    # configured handshake timeout (0.2 s), not a built-in one, and be retried.
    bob: Bob = make_bob(handshake_timeout=0.2, backoff_initial=0.01, backoff_max=0.01)
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", bob.alice_port)) as silent:
        def accept_silently() -> None:
            while len(accepted) < 3:
                accepted.append(silent.accept()[0])

        acceptor = threading.Thread(target=accept_silently, daemon=True)
        acceptor.start()
        bob.transport.send(bob.alice, b"waits for a handshake")
        # Three attempts within 5 s is only possible if each gave up after about 0.2 s.
        wait_for(lambda: len(accepted) == 3, "three connection attempts", timeout=5.0)
        acceptor.join(5)
    for conn in accepted:
        conn.close()
    assert bob.transport.stats.connects == 0


def test_one_host_cannot_hold_more_than_its_share_of_unfinished_handshakes(
        make_bob: Any) -> None:
    bob: Bob = make_bob(max_unauthenticated_per_host=3, max_unauthenticated=5)
    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(_silent(bob.port))
        wait_for(lambda: bob.transport.unauthenticated == 3, "three handshakes waiting")
        with _silent(bob.port) as fourth:
            assert closed_by_peer(fourth)  # at once, not after the handshake timeout
        assert bob.transport.stats.refused == 1
        # Another host still gets in, and so does an honest peer from it.
        with tls_client_from("127.0.0.2", bob) as client:
            client.sendall(frame(b"from another host"))
            wait_for(lambda: bob.inbox.count() == 1, "the other host's frame")


def test_unfinished_handshakes_from_many_hosts_are_bounded_in_all(make_bob: Any) -> None:
    bob: Bob = make_bob(max_unauthenticated_per_host=2, max_unauthenticated=4)
    with ExitStack() as stack:
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"):
            stack.enter_context(_silent(bob.port, source))
        wait_for(lambda: bob.transport.unauthenticated == 4, "four handshakes waiting")
        with _silent(bob.port, "127.0.0.3") as fifth:
            assert closed_by_peer(fifth)
        assert bob.transport.stats.refused == 1
    # Once the silent ones are gone, the slots are free again.
    wait_for(lambda: bob.transport.unauthenticated == 0, "the closed handshakes to end")
    with tls_client_from("127.0.0.3", bob) as client:
        client.sendall(frame(b"in"))
        wait_for(lambda: bob.inbox.count() == 1, "a frame once slots are free")


def tls_client_from(source: str, bob: Bob) -> ssl.SSLSocket:
    """Alice's TLS client connecting from ``source``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(bob.ca))
    ctx.load_cert_chain(str(bob.alice_files.cert), str(bob.alice_files.key))
    return ctx.wrap_socket(_silent(bob.port, source))


def test_a_peer_reconnecting_in_a_tight_loop_holds_one_connection(make_bob: Any) -> None:
    bob: Bob = make_bob()
    with ExitStack() as stack:
        clients = []
        for i in range(30):
            client = stack.enter_context(tls_client(bob.port, bob.alice_files, bob.ca))
            client.sendall(frame(b"%d" % i))
            # Delivered: so this connection is the authenticated one now.
            wait_for(lambda i=i: bob.inbox.count() == i + 1, f"frame {i}")  # type: ignore[misc]
            clients.append(client)
        for older in clients[:-1]:
            assert closed_by_peer(older)
        clients[-1].sendall(frame(b"last"))
        wait_for(lambda: bob.inbox.count() == 31, "a frame on the newest connection")
    assert [f for _, f in bob.inbox.frames] == [b"%d" % i for i in range(30)] + [b"last"]
    assert bob.transport.stats.garbage == 0  # replaced connections are not garbage


def test_a_flood_of_small_frames_is_read_no_faster_than_the_node_takes_them(
        make_bob: Any) -> None:
    bob: Bob = make_bob(max_inbound_backlog=50)
    bob.transport.set_backlog(bob.inbox.backlog)
    flood = b"".join(frame(b"%d" % i) for i in range(5000))
    with tls_client(bob.port, bob.alice_files, bob.ca) as client:
        sender = threading.Thread(target=client.sendall, args=(flood,), daemon=True)
        sender.start()
        wait_for(lambda: bob.inbox.count() > 50, "the backlog to fill")
        while bob.inbox.count() < 5000:  # the node takes what is there; more arrives
            with bob.inbox.lock:
                bob.inbox.handled = len(bob.inbox.frames)
            wait_for(lambda: bob.inbox.backlog() > 0 or bob.inbox.count() == 5000,
                     "more frames once the node took the backlog")
        sender.join(30)
    # Each delivery saw at most the limit and the one frame read before the pause.
    assert bob.inbox.largest_backlog <= 51
    assert [f for _, f in bob.inbox.frames] == [b"%d" % i for i in range(5000)]
