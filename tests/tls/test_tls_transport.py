"""The TLS transport on its own: who may connect, who a frame is from, what garbage does.
Real sockets on 127.0.0.1; every wait is bounded and polls observable state."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fibers import NetworkMap, NodeIdentity, NodeInfo, Party
from fibers.tls import IssuedCert, TlsFiles, TlsTransport
from tests.tls._net import (
    closed_by_peer,
    frame,
    free_ports,
    new_ca,
    refused,
    tls_client,
    wait_for,
    write_tls,
)

pytestmark = pytest.mark.slow


@dataclass
class Received:
    frames: list[tuple[Party, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, sender: Party, frames: Sequence[bytes]) -> None:
        with self.lock:
            self.frames.extend((sender, f) for f in frames)

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


@dataclass
class Net:
    tmp: Path
    ca: IssuedCert
    alice: Party
    bob: Party
    network_map: NetworkMap
    bob_transport: TlsTransport
    bob_received: Received
    port: int

    def files(self, party: Party, ca: IssuedCert | None = None) -> TlsFiles:
        return write_tls(self.tmp / f"{party.name}-{party.owning_key[:4].hex()}",
                         ca or self.ca, party)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    ca = new_ca()
    alice, bob = NodeIdentity("Alice").party, NodeIdentity("Bob").party
    alice_port, bob_port = free_ports(2)
    nmap = NetworkMap()
    nmap.add(NodeInfo(alice, f"127.0.0.1:{alice_port}"))
    nmap.add(NodeInfo(bob, f"127.0.0.1:{bob_port}"))
    bob_files = write_tls(tmp_path / "bob", ca, bob)
    transport = TlsTransport(bob, nmap, bob_files, ("127.0.0.1", bob_port))
    received = Received()
    transport.start(received)
    try:
        yield Net(tmp_path, ca, alice, bob, nmap, transport, received, bob_port)
    finally:
        transport.stop()


def test_frames_on_a_connection_are_from_the_party_its_certificate_names(net: Net) -> None:
    # The frame claims nothing and could claim anything: the sender is the certificate's party.
    with tls_client(net.port, net.files(net.alice), net.tmp / "bob" / "ca.crt") as c:
        c.sendall(frame(b"I am Bob") + frame(b"second"))
        wait_for(lambda: net.bob_received.count() == 2, "two frames")
    assert net.bob_received.frames == [(net.alice, b"I am Bob"), (net.alice, b"second")]


def test_a_client_without_a_certificate_is_refused(net: Net) -> None:
    assert refused(net.port, None, net.tmp / "bob" / "ca.crt", frame(b"hello"))
    wait_for(lambda: net.bob_transport.stats.refused == 1, "the refusal to be counted")
    assert net.bob_received.count() == 0


def test_a_certificate_from_another_ca_is_refused(net: Net) -> None:
    foreign = net.files(net.alice, ca=new_ca("another network"))
    assert refused(net.port, foreign, net.tmp / "bob" / "ca.crt", frame(b"hello"))
    wait_for(lambda: net.bob_transport.stats.refused == 1, "the refusal to be counted")
    assert net.bob_received.count() == 0


@pytest.mark.parametrize("who", ["other key", "unknown name"])
def test_a_network_certificate_that_does_not_match_the_map_is_refused(net: Net,
                                                                      who: str) -> None:
    # Issued by the network's own CA, but naming Alice with another identity key (or a name
    # the map does not know): it cannot speak for anyone.
    impostor = (Party("Alice", NodeIdentity("Alice").party.owning_key) if who == "other key"
                else NodeIdentity("Mallory").party)
    assert refused(net.port, net.files(impostor), net.tmp / "bob" / "ca.crt",
                   frame(b"pay Mallory"))
    wait_for(lambda: net.bob_transport.stats.refused == 1, "the refusal to be counted")
    assert net.bob_received.count() == 0


# An over-long length, a zero length, and one byte over the 16 MiB frame limit.
@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                     b"\x01\x00\x00\x01" + b"x" * 10])
def test_a_peer_sending_garbage_is_disconnected_and_the_transport_carries_on(
        net: Net, garbage: bytes) -> None:
    files = net.files(net.alice)
    ca = net.tmp / "bob" / "ca.crt"
    with tls_client(net.port, files, ca) as client:
        client.sendall(frame(b"fine") + garbage)
        assert closed_by_peer(client)
    wait_for(lambda: net.bob_transport.stats.garbage == 1, "the garbage to be counted")
    with tls_client(net.port, files, ca) as client:
        client.sendall(frame(b"after"))
        wait_for(lambda: net.bob_received.count() == 2, "the frame after the garbage")
    assert [f for _, f in net.bob_received.frames] == [b"fine", b"after"]


def test_plain_bytes_instead_of_tls_are_refused_and_the_transport_carries_on(net: Net) -> None:
    with socket.create_connection(("127.0.0.1", net.port), timeout=30) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        assert closed_by_peer(raw)
    wait_for(lambda: net.bob_transport.stats.refused == 1, "the refusal to be counted")
    with tls_client(net.port, net.files(net.alice), net.tmp / "bob" / "ca.crt") as client:
        client.sendall(frame(b"still here"))
        wait_for(lambda: net.bob_received.count() == 1, "a frame after the plain bytes")


def test_frames_queue_until_the_recipient_listens_then_arrive_in_order(net: Net) -> None:
    alice_files = net.files(net.alice)
    alice_port = int(str(net.network_map.address(net.alice)).rpartition(":")[2])
    alice = TlsTransport(net.alice, net.network_map, alice_files, ("127.0.0.1", alice_port),
                         backoff_initial=0.01, backoff_max=0.05)
    net.bob_transport.stop()  # Bob is down: Alice keeps trying with backoff
    alice.start(Received())
    try:
        for i in range(20):
            alice.send(net.bob, b"frame %d" % i)
        received = Received()
        bob = TlsTransport(net.bob, net.network_map, TlsFiles.in_dir(net.tmp / "bob"),
                           ("127.0.0.1", net.port))
        bob.start(received)
        try:
            wait_for(lambda: received.count() == 20, "twenty frames")
        finally:
            bob.stop()
    finally:
        alice.stop()
    assert received.frames == [(net.alice, b"frame %d" % i) for i in range(20)]


def test_a_full_queue_drops_frames_and_asks_for_a_resend_once_drained(net: Net) -> None:
    alice_files = net.files(net.alice)
    alice = TlsTransport(net.alice, net.network_map, alice_files, ("127.0.0.1", 0),
                         max_queue_frames=3)
    resend_asked = threading.Event()
    alice.set_on_connected(lambda party: resend_asked.set() if party == net.bob else None)
    for i in range(5):  # before start: nothing moves yet, so two do not fit
        alice.send(net.bob, b"frame %d" % i)
    assert alice.stats.dropped == 2
    alice.start(Received())
    try:
        assert resend_asked.wait(30), "the drained queue never asked for a re-send"
        wait_for(lambda: net.bob_received.count() == 3, "the three queued frames")
    finally:
        alice.stop()


def test_a_large_frame_arrives_whole(net: Net) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, far beyond the stream's read buffer
    with tls_client(net.port, net.files(net.alice), net.tmp / "bob" / "ca.crt") as client:
        client.sendall(frame(big))
        wait_for(lambda: net.bob_received.count() == 1, "the large frame")
    assert net.bob_received.frames == [(net.alice, big)]
