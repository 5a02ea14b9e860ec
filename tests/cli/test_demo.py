"""`fibers demo` runs to the end, through the seller's crash."""

from __future__ import annotations

import io

from rich.console import Console

from cli.__main__ import main
from cli._demo import run_demo


def test_demo_survives_the_seller_crash_and_agrees() -> None:
    out = io.StringIO()
    assert run_demo(Console(file=out, width=200, color_system=None)) == 0
    text = out.getvalue()
    assert "SellerBank crashed and restarted" in text
    assert "dropped by the receiver" in text
    assert "Agreed: 10 widgets at 3 each" in text


def test_unknown_command_exits_with_status_2(capsys: object) -> None:
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
