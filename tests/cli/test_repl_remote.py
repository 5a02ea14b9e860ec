"""``fibers shell --connect`` through a pty against a real ``fibers node run`` process started by
the test, by node directory and by URL with ``--user``; and its argument errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.__main__ import main
from cli._process_network import ProcessNetwork
from cli.rpc_node import client_settings
from fibers.rpc import hash_password

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "BankA>"
VIEWER_PASSWORD = "view-secret"
TIMEOUT = 30


def _environment(**extra: str) -> dict[str, str]:
    return dict(os.environ, TERM="xterm-256color", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1",
                COLUMNS="160", LINES="60", **extra)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """BankA's node directory and RPC URL: real ``fibers node run`` processes of the Notary
    and BankA (BankB is never started, so a payment to it stays running). BankA's node.toml
    gets a ``viewer`` user who may only call ``node_info``."""
    with ProcessNetwork(tmp_path / "net", "Notary", ("BankA", "BankB")) as network:
        node_dir = network.node_dir("BankA")
        with (node_dir / "node.toml").open("a", encoding="utf-8") as config:
            config.write("\n[[rpc.users]]\nusername = \"viewer\"\n"
                         f"password_hash = \"{hash_password(VIEWER_PASSWORD, n=1024)}\"\n"
                         'permissions = ["InvokeRpc.node_info"]\n')
        network.start("Notary")
        network.start("BankA")
        yield node_dir, client_settings(node_dir).url


def _operator_password(node_dir: Path) -> str:
    return (node_dir / "operator.password").read_text(encoding="utf-8").strip()


def _spawn(args: list[str], tmp_path: Path, **env: str) -> Any:
    child = pexpect.spawn(sys.executable, ["-m", "cli", "shell", *args, "--pace", "0.01"],
                          env=_environment(HOME=str(tmp_path), **env), encoding="utf-8",
                          timeout=TIMEOUT, dimensions=(60, 160), cwd=str(ROOT))
    child.logfile_read = (tmp_path / "transcript.txt").open("a", encoding="utf-8")
    return child


@pytest.mark.slow
def test_a_remote_terminal_session_starts_watches_kills_and_queries(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    node_dir, _url = served
    child = _spawn(["--connect", str(node_dir)], tmp_path)

    def command(line: str) -> None:
        child.expect_exact(PROMPT)
        child.send(line + "\r")

    try:
        child.expect_exact("Connected to BankA")
        command("flow start CashIssueFlow amount: 500 USD, issuer_ref: 03, notary: Notary")
        child.expect(r"Started CashIssueFlow (\w{8})")
        issue = child.match.group(1)
        child.expect_exact(f"✓ CashIssueFlow {issue} completed: SignedTransaction")
        command("vault Cash")
        child.expect_exact("500.00 USD")
        command("flow start CashPaymentFlow amount: 100 USD, recipient: BankB")
        child.expect(r"Started CashPaymentFlow (\w{8})")
        parked = child.match.group(1)
        child.expect_exact("is still running")  # BankB is down: it waits for BankB
        command("flow list")
        child.expect_exact(parked)
        command(f"flow kill {parked}")
        child.expect_exact(f"Killed CashPaymentFlow {parked}")
        command("crash BankA")
        child.expect_exact("'crash' works on the embedded network only")
        command("restart BankA")
        child.expect_exact("'restart' works on the embedded network only")
        command("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0


@pytest.mark.slow
def test_a_url_and_user_connect_with_the_password_from_the_environment(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    node_dir, url = served
    child = _spawn(["--connect", url, "--user", "viewer", "--ca",
                    str(node_dir / "tls" / "ca.crt")], tmp_path,
                   FIBERS_RPC_PASSWORD=VIEWER_PASSWORD)
    try:
        child.expect_exact("Connected to BankA")
        child.expect_exact(PROMPT)
        child.send("flow start CashIssueFlow amount: 1 USD, issuer_ref: 01, notary: Notary\r")
        child.expect_exact("may not call 'start_tracked_flow'")
        child.expect_exact(PROMPT)
        child.send("exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0


@pytest.mark.slow
def test_without_the_environment_variable_the_password_is_prompted_for(
    served: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_dir, url = served
    monkeypatch.delenv("FIBERS_RPC_PASSWORD", raising=False)
    child = _spawn(["--connect", url, "--user", "operator", "--ca",
                    str(node_dir / "tls" / "ca.crt")], tmp_path)
    try:
        child.expect_exact(f"Password of operator at {url}: ")
        child.send(_operator_password(node_dir) + "\r")
        child.expect_exact("Connected to BankA")
        child.expect_exact(PROMPT)
        child.send("node\r")
        child.expect_exact("BankA")
        child.expect_exact(PROMPT)
        child.send("exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0
    assert _operator_password(node_dir) not in (tmp_path / "transcript.txt").read_text()  # unechoed


@pytest.mark.slow
def test_a_wrong_password_is_reported_and_the_shell_does_not_open(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    node_dir, url = served
    result = subprocess.run(
        [sys.executable, "-m", "cli", "shell", "--connect", url, "--user", "operator",
         "--ca", str(node_dir / "tls" / "ca.crt")], cwd=ROOT, capture_output=True, text=True,
        env=_environment(FIBERS_RPC_PASSWORD="wrong"), stdin=subprocess.DEVNULL, timeout=60,
        check=False)
    assert result.returncode == 1
    assert "wrong user name or password" in result.stderr


def test_connect_by_url_needs_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shell", "--connect", "https://127.0.0.1:1"]) == 2
    assert "--connect URL needs --user NAME" in capsys.readouterr().err


def test_connect_to_a_directory_without_a_node_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["shell", "--connect", str(tmp_path)]) == 2
    assert "node.toml does not exist" in capsys.readouterr().err


def test_embedded_and_connect_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shell", "--embedded", "--connect", "x"]) == 2
    assert "not both" in capsys.readouterr().err
