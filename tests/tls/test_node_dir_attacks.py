"""`fibers network bootstrap` and `fibers node run` given bad input: bad node names, and a node
directory with a missing or damaged file. Each ends with one line naming the file and what to
do, exit status 1 or 2, never a traceback, and never a new identity or secret made in place
of a lost one."""

from __future__ import annotations

import shutil
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from cli._process_network import free_base_port
from tests.tls._procs import fibers_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tmp_path_factory.mktemp("attacks") / "net"
    result = fibers_cli("network", "bootstrap", str(net), "--notary", "Notary", "--node",
                        "BankA", "--base-port", str(free_base_port(4)))
    assert result.returncode == 0, result.stderr
    return net


@pytest.mark.parametrize("name", ["", "../x", "a/b", "Bänk", "A" * 300, "-rf", ".hidden"])
def test_bootstrap_refuses_a_bad_node_name_in_one_line(tmp_path: Path, name: str) -> None:
    result = fibers_cli("network", "bootstrap", str(tmp_path / "net"), "--notary", "Notary",
                        f"--node={name}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "is not a valid node name" in result.stderr
    assert not (tmp_path / "net").exists() and not (tmp_path / "x").exists()


def _write(relative: str, data: bytes) -> Callable[[Path], None]:
    return lambda node: (node / relative).write_bytes(data)


def _remove(relative: str) -> Callable[[Path], None]:
    def remove(node: Path) -> None:
        path = node / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return remove


# (what is done to the node directory, the file the error must name, what else it must say)
DAMAGE = {
    "node.toml missing": (_remove("node.toml"), "node.toml", "does not exist"),
    "node.toml not TOML": (_write("node.toml", b"garbage[["), "node.toml", "not a valid"),
    "node.toml port a word": (
        lambda n: (n / "node.toml").write_text(
            (n / "node.toml").read_text().replace("port = ", "port = 'abc' #", 1)),
        "node.toml", "not a valid"),
    "network.json missing": (_remove("network.json"), "network.json", "does not exist"),
    "network.json not JSON": (_write("network.json", b"{"), "network.json", "not a valid"),
    "network.json wrong shape": (_write("network.json", b'{"nodes": 5}'), "network.json",
                                 "not a valid"),
    "a permission that looks like ALL": (
        lambda n: (n / "node.toml").write_text(
            (n / "node.toml").read_text().replace('"ALL"', '"all"')),
        "node.toml", "did you mean ALL"),
    "node.crt missing": (_remove("tls/node.crt"), "node.crt", "does not exist"),
    "node.key not PEM": (_write("tls/node.key", b"junk"), "node.key", "not a readable PEM"),
    "ca.crt not PEM": (_write("tls/ca.crt", b"junk"), "ca.crt", "not a readable PEM"),
    "node.secret missing": (_remove("storage/node.secret"), "node.secret", "restore it"),
    "node.secret short": (_write("storage/node.secret", b"12345"), "node.secret", "32"),
    "storage missing": (_remove("storage"), "node.lmdb", "restore"),
    "lmdb not LMDB": (_write("storage/node.lmdb/data.mdb", b"junk" * 2048), "node.lmdb",
                      "not an LMDB file"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_node_run_on_a_damaged_directory_says_which_file_in_one_line(
        network: Path, tmp_path: Path, damage: str) -> None:
    spoil, file, says = DAMAGE[damage]
    copy = tmp_path / "net"
    shutil.copytree(network, copy)
    node = copy / "BankA"
    spoil(node)
    before = sorted(p.name for p in (node / "storage").glob("*")) \
        if (node / "storage").exists() else None
    result = fibers_cli("node", "run", str(node))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("fibers: error: cannot start the node in")
    assert file in lines[0] and says in lines[0], lines[0]
    assert "ready" not in result.stdout
    # Nothing made in place of what was lost: no new secret, no new storage.
    after = sorted(p.name for p in (node / "storage").glob("*")) \
        if (node / "storage").exists() else None
    assert after == before


@pytest.mark.parametrize("which", ["p2p", "rpc"])
def test_node_run_with_its_port_taken_says_so_in_one_line(network: Path, tmp_path: Path,
                                                          which: str) -> None:
    copy = tmp_path / "net"
    shutil.copytree(network, copy)
    node = copy / "BankA"
    config = tomllib.loads((node / "node.toml").read_text())
    port = int(config[which]["port"])
    with socket.create_server(("127.0.0.1", port)):
        result = fibers_cli("node", "run", str(node))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "address already in use" in lines[0].lower() or "in use" in lines[0], lines[0]
    assert "ready" not in result.stdout
