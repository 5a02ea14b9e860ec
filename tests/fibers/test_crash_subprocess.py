"""SIGKILL a process running durable nodes at random moments, restart it on the same directory,
again and again: every payment finishes exactly once and no effect happens twice."""

from __future__ import annotations

import json
import random
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAYMENTS = 30
KILLS = 10
LINE_TIMEOUT = 20.0  # seconds without a line from the child: it hangs


def _run_child(base: Path, log: Path, kill_after: int | None) -> dict[str, Any] | None:
    """Run the child until it reports ``done`` (its report) or until its ``kill_after``-th
    progress line, where it is SIGKILLed (None)."""
    command = [sys.executable, "-c", "from tests.fibers.crash_child import main; main()",
               str(base), str(PAYMENTS)]
    with log.open("a") as stderr:
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                 text=True)
    assert child.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    progress = 0
    try:
        while True:
            if not selector.select(LINE_TIMEOUT):
                raise AssertionError(f"the child said nothing for {LINE_TIMEOUT} s; see {log}")
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the child exited ({child.wait()}) early; see {log}")
            if line.startswith("done "):
                assert child.wait(timeout=LINE_TIMEOUT) == 0
                report: dict[str, Any] = json.loads(line[5:])
                return report
            if line.startswith("progress"):
                progress += 1
                if kill_after is not None and progress >= kill_after:
                    child.kill()  # SIGKILL: no cleanup, no flush, nothing
                    child.wait()
                    return None
    finally:
        selector.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_does_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    base, log = tmp_path / "nodes", tmp_path / "child.log"
    killed = 0
    report = None
    for _ in range(KILLS):
        report = _run_child(base, log, kill_after=rng.randint(1, 60))
        if report is not None:  # it finished before its kill moment
            break
        killed += 1
    if report is None:
        report = _run_child(base, log, kill_after=None)
    assert killed >= 3, "too few kills landed to test anything"
    assert report["flows"] == 0 and report["hospital"] == [], report
    merged: dict[str, int] = {}
    for counts in report["effects"].values():
        for name, count in counts.items():
            assert name not in merged, f"{name} happened on two nodes"
            merged[name] = count
    expected = {f"{kind}:{i}" for i in range(PAYMENTS) for kind in ("begin", "recv", "finish")}
    assert set(merged) == expected, sorted(set(merged) ^ expected)
    # Every message was acknowledged, every session's dedup record pruned (the counter stays).
    assert set(report["outbox"].values()) == {0}, report["outbox"]
    assert set(report["dedup"].values()) == {1}, report["dedup"]
    twice = {name: count for name, count in merged.items() if count != 1}
    assert twice == {}, f"effects done more than once: {twice}"
