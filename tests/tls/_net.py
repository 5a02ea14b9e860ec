"""Test helpers for TLS networks: certificates for parties, free ports, raw TLS clients
(consecutive free ports: ``cli._process_network.free_base_port``)."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

from fibers import Party
from fibers.tls import (
    IssuedCert,
    TlsFiles,
    issue_node_cert,
    make_root_ca,
    write_cert,
    write_private_key,
)

TIMEOUT = 30.0


def free_ports(count: int) -> list[int]:
    """``count`` ports free right now (the kernel's choice, each bound then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_tls(directory: Path, ca: IssuedCert, party: Party) -> TlsFiles:
    """A key and certificate for ``party`` issued by ``ca``, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = issue_node_cert(ca, party, "127.0.0.1")
    files = TlsFiles.in_dir(directory)
    write_private_key(issued.key, files.key)
    write_cert(issued.cert, files.cert)
    write_cert(ca.cert, files.ca)
    return files


def new_ca(name: str = "test root") -> IssuedCert:
    return make_root_ca(name)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (observable state) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def tls_client(port: int, files: TlsFiles | None, ca: Path) -> ssl.SSLSocket:
    """A TLS 1.3 client connected to 127.0.0.1:``port`` presenting ``files``' certificate
    (none when ``files`` is None) and trusting ``ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(ca))
    if files is not None:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(raw)
    except BaseException:
        raw.close()
        raise


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def closed_by_peer(sock: ssl.SSLSocket | socket.socket) -> bool:
    """Whether the peer closed ``sock`` (reads EOF or a TLS alert) within the timeout."""
    try:
        return sock.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True


def refused(port: int, files: TlsFiles | None, ca: Path, data: bytes) -> bool:
    """Whether a TLS client presenting ``files`` and sending ``data`` is shut out: its
    handshake fails, or the server closes the connection without answering."""
    try:
        client = tls_client(port, files, ca)
    except (ssl.SSLError, ConnectionError):
        return True
    with client:
        try:
            client.sendall(data)
        except (ssl.SSLError, ConnectionError):
            return True
        return closed_by_peer(client)
