"""How fastpath starts its own child processes: always the installed package.

`python -m fastpath.cli` puts the current directory first on sys.path, so a
folder named `fastpath` there (a checkout's parent, say) would be imported
instead of the installed package. `-P` (Python 3.11+) leaves the current
directory off sys.path; every child fastpath starts goes through here.
"""
from __future__ import annotations

import signal
import subprocess
import sys


def python_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter, never importing from the cwd."""
    return [sys.executable, "-P", "-m", module, *args]


def fastpath_argv(*args: str) -> list[str]:
    """argv of the `fastpath` command itself (`fastpath ARGS`), as a child of this process."""
    return python_argv("fastpath.cli", *args)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stops one child by its PID: SIGTERM (so it drains), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass
