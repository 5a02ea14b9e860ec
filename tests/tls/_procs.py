"""Node processes for tests: `fibers node run` started by the test, its output read on a
thread so every wait is bounded, and killed by its pid when the test ends."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.tls._net import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def fibers_cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``fibers ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


class NodeProc:
    """One `fibers node run DIR` process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "node", "run", str(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, word: str, timeout: float = TIMEOUT) -> str:
        """The first output line containing ``word``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
                if remaining <= 0:
                    raise AssertionError(f"no line with {word!r} from {self.directory.name} "
                                         f"in {timeout}s; output: {self.output}") from None
            if line is None:
                raise AssertionError(f"{self.directory.name} exited without {word!r}: "
                                     f"{self.output}")
            if line:
                self.output.append(line)
                if word in line:
                    return line

    def signal(self, signum: int) -> int:
        """Send ``signum``; return the exit status."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
