"""Reading what a child process (`fastpath up`, `fastpath proxy`) prints until the line that says it is ready."""
from __future__ import annotations

import subprocess
import time


def read_until(proc: subprocess.Popen, marker: str = "ready in", timeout: float = 60.0) -> str:
    """proc's stdout (text mode) up to and including the first line starting with `marker`.

    Stops early at end of output (the process exited) or after `timeout` seconds; the caller asserts on
    what was printed, so a failure shows it.
    """
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(marker):
            break
    return "".join(lines)
