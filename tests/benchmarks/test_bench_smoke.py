"""`fibers bench --quick`: every scenario runs and reports numeric results (no timing checks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import dbos_peer, plot
from benchmarks.suite import SCENARIOS
from benchmarks.targets import CONTRACT, TARGETS
from cli.__main__ import main


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_run_reports_every_scenario_in_json(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["run"]["quick"] is True
    assert list(document["scenarios"]) == list(SCENARIOS)
    ids: list[str] = []
    for name, report in document["scenarios"].items():
        if name == "dbos" and not dbos_peer.available():
            assert report["skipped"] == dbos_peer.MISSING and report["results"] == []
            continue
        assert report["skipped"] is None and report["results"], name
        for result in report["results"]:
            ids.append(result["id"])
            assert result["scenario"] == name and result["unit"], result
            assert result["met"] is None, "a quick run judges no target"
            target = TARGETS.get(result["id"])
            assert result["target"] == (None if target is None else target.text)
            if result["value"] is None:  # unmeasured: it says why, and has nothing to compare
                assert result["unmeasured"] and result["ratio"] is None, result
                continue
            assert _numeric(result["value"]) and result["unmeasured"] is None, result
            if result["baseline"] is not None:
                assert _numeric(result["baseline"]) and _numeric(result["ratio"]), result
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    expected = [i for i in CONTRACT if dbos_peer.available() or ".vs_dbos_" not in i]
    assert set(expected) <= set(ids), f"contract ids missing: {set(expected) - set(ids)}"
    printed = capsys.readouterr().out
    assert "fibers bench --quick" in printed and f"wrote {out}" in printed
    assert all(i in printed for i in ids), "every id is printed in full in the table"


def test_unknown_scenario_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "nope"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "unknown scenario 'nope'; choose from roundtrip, durable" in error
    assert error.count("\n") == 1


def test_plot_without_the_durable_scenario_is_refused_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["bench", "--quick", "roundtrip", "--plot", str(tmp_path / "p.png")])
    assert status == 2
    captured = capsys.readouterr()
    expected = "add 'durable' to the scenarios" if plot.available() else plot.MISSING
    assert expected in captured.err and captured.err.count("\n") == 1
    assert "running" not in captured.out
    assert not (tmp_path / "p.png").exists()


def test_plot_draws_durable_throughput_as_png(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "throughput.png"
    status = main(["bench", "--quick", "durable", "--plot", str(png)])
    if not plot.available():
        assert status == 2 and plot.MISSING in capsys.readouterr().err
        return
    assert status == 0
    assert png.read_bytes().startswith(b"\x89PNG")
