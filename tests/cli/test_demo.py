"""`fibers demo`: the trade runs to the end through the buyer's crash, in plain and live mode."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from cli.__main__ import main
from cli._embedded import EmbeddedNetwork
from cli._trade_demo import FACE_VALUE, PRICE, DemoOptions, run_trade_demo
from finance import Cash, CommercialPaper


def _plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160, color_system=None), out


def test_plain_demo_crashes_restarts_and_settles(tmp_path: Path) -> None:
    console, out = _plain_console()
    status = run_trade_demo(console, DemoOptions(live=False, base_dir=tmp_path / "run"))
    text = out.getvalue()
    assert status == 0
    assert "Stopping BuyerBank. Where each flow is parked:" in text
    assert "BuyerBank crashed" in text and "Restarting BuyerBank" in text
    assert "BuyerBank restored 1 flow(s) from their checkpoints" in text
    assert "Notarised transaction" in text
    after = text[text.index("After: vaults"):]
    assert "SellerBank │ 900.00 USD" in after and "BuyerBank  │ 100.00 USD" in after


def _cash(node: object) -> int:
    vault = node.services.vault  # type: ignore[attr-defined]
    return sum(s.state.data.amount.quantity for s in vault.query(Cash.State))


def test_twenty_concurrent_trades_settle_exactly_once(tmp_path: Path) -> None:
    console, out = _plain_console()
    checked: list[bool] = []

    def check_vaults(net: EmbeddedNetwork) -> None:
        trades = 20
        assert _cash(net.seller) == trades * PRICE.quantity
        assert _cash(net.buyer) == trades * (FACE_VALUE.quantity - PRICE.quantity)
        papers = net.buyer.services.vault.query(CommercialPaper.State)
        assert len(papers) == trades and len({p.ref for p in papers}) == trades
        assert net.seller.services.vault.query(CommercialPaper.State) == []
        assert net.seller.flows() == [] and net.buyer.flows() == []
        checked.append(True)

    options = DemoOptions(trades=20, live=False, base_dir=tmp_path / "run")
    assert run_trade_demo(console, options, at_end=check_vaults) == 0
    assert checked == [True]
    assert out.getvalue().count("Notarised transaction") == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--trades", "0"], "argument --trades: must be at least 1, got 0"),
        (["demo", "--trades", "many"], "argument --trades: 'many' is not a whole number"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["nonsense"], "argument COMMAND: invalid choice: 'nonsense'"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_live_demo_in_a_terminal_shows_nested_steps(tmp_path: Path) -> None:
    """Run `fibers demo` on a pseudo-terminal and read the screen it draws."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "60", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--dir", str(tmp_path / "run")],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
    finally:
        process.kill() if process.poll() is None else None
        process.wait(timeout=10)
        os.close(controller)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", errors="replace"))
    assert process.returncode == 0, text[-2000:]
    # The seller's finality sub-flow is drawn under its committing step, nested two deep.
    assert "Committing the transaction to the ledger" in text
    assert "│   ├── " in text or "    ├── " in text
    assert "Notarising the transaction" in text and "✓" in text
    assert "BuyerBank (down)" in text
    # The down node's flows are parked where they were (in its storage), not failed.
    assert "parked, BuyerBank is down" in text
    assert "GreenletExit" not in text
    assert "Notarised transaction" in text
