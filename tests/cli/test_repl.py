"""``fibers shell`` as a command: a terminal session driven through a pty, a script on
standard input, and its argument errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli.__main__ import main

pexpect = pytest.importorskip("pexpect")

PROMPT = "BuyerBank>"  # prompt_toolkit draws the trailing space by moving the cursor
TIMEOUT = 30  # seconds for any one expected output; the whole session takes a few


def _environment() -> dict[str, str]:
    return dict(
        os.environ,
        TERM="xterm-256color",
        NO_COLOR="1",
        # prompt_toolkit would otherwise ask the terminal where its cursor is and wait.
        PROMPT_TOOLKIT_NO_CPR="1",
        COLUMNS="160",
        LINES="60",
    )


@pytest.mark.slow
def test_a_terminal_session_pays_watches_inspects_kills_and_completes(tmp_path: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "cli", "shell", "--embedded", "--dir", str(tmp_path / "run"), "--pace", "0.01"],
        env=_environment(), encoding="utf-8", timeout=TIMEOUT, dimensions=(60, 160),
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    transcript = tmp_path / "transcript.txt"
    child.logfile_read = transcript.open("w", encoding="utf-8")

    def command(line: str) -> None:
        child.expect_exact(PROMPT)
        child.send(line + "\r")

    def started(flow: str) -> str:
        child.expect(rf"Started {flow} (\w{{8}})")
        return str(child.match.group(1))

    try:
        command("flow start CashIssueFlow amount: 500 USD, issuer_ref: 03, notary: Notary")
        issue = started("CashIssueFlow")
        child.expect_exact(f"✓ CashIssueFlow {issue} completed: SignedTransaction")

        command("crash SellerBank")
        child.expect_exact("SellerBank crashed")
        command("flow start CashPaymentFlow amount: 100 USD, recipient: SellerBank")
        payment = started("CashPaymentFlow")
        child.expect_exact(f"CashPaymentFlow {payment} is still running, waiting for a "
                           "message from SellerBank")
        command("flow start CashPaymentFlow amount: 50 USD, recipient: SellerBank")
        doomed = started("CashPaymentFlow")
        child.expect_exact("still running")

        command(f"flow inspect {payment[:5]}")
        child.expect_exact("stack (outermost first)")
        child.expect_exact("FinalityFlow.call")
        child.expect_exact("stx = SignedTransaction(")

        command(f"flow kill {doomed}")
        child.expect_exact(f"Killed CashPaymentFlow {doomed}")

        command("restart SellerBank")
        child.expect_exact("SellerBank restarted from its storage")
        command(f"flow watch {payment}")
        child.expect_exact("▶ Broadcasting the transaction to participants")  # live, not done
        child.expect_exact(f"✓ CashPaymentFlow {payment} completed: SignedTransaction")

        command("flow watch")
        child.expect_exact("press any key to stop watching")
        child.send("q")
        command("flw")
        child.expect_exact("unknown command 'flw'; did you mean 'flow'?")

        command("py")
        child.expect_exact(">>> ")
        child.send("print(ops.node_info().name, node.party.name, Amount.parse('1 USD'))\r")
        child.expect_exact("BuyerBank BuyerBank 1.00 USD")
        child.send("exit()\r")
        child.expect_exact("back in the shell")

        child.expect_exact(PROMPT)
        child.send("flow st\t")  # Tab completes the subcommand, then the flow name
        child.expect_exact("flow start")
        child.send(" CashP\t")
        child.expect_exact("CashPaymentFlow")
        child.sendcontrol("c")  # abandons the line
        command("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    assert child.exitstatus == 0, transcript.read_text(encoding="utf-8")[-3000:]
    assert (tmp_path / "run" / "shell_history").read_text(encoding="utf-8").count("flow") >= 5


def test_a_script_on_standard_input_runs_each_line(tmp_path: Path) -> None:
    script = "vault\nflow start CashPaymentFlow amount: 10 USD, recipient: SellerBank\nexit\n"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "shell", "--embedded", "--dir", str(tmp_path / "run")],
        input=script, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, COLUMNS="200"), cwd=str(Path(__file__).resolve().parents[2]),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "BuyerBank> vault" in result.stdout
    assert re.search(r"✓ CashPaymentFlow \w{8} completed", result.stdout), result.stdout


def test_the_shell_needs_the_embedded_network_for_now(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shell"]) == 2
    assert "needs --embedded" in capsys.readouterr().err


def test_the_shell_refuses_a_run_directory_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old").write_text("x")
    assert main(["shell", "--embedded", "--dir", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
