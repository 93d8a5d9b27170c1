"""Child processes of a benchmark run: started in one tree, stopped by PID.

Every process the benchmark starts (backend, peers, load client, proxy) goes
through `spawn`, which asks the kernel to send SIGTERM to the child if the
benchmark itself dies, so an interrupted run never leaves proxies behind.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Sequence

from fastpath.launch import stop_process

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # not fatal: the parent still stops children by PID
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now (for programs that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str],
    log_path: Path | None = None,
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Starts `argv` as a child that dies with us; stderr (and stdout unless piped) go to log_path."""
    log: IO | int = subprocess.DEVNULL
    if log_path is not None:
        log = open(log_path, "ab", buffering=0)
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    finally:
        if not isinstance(log, int):
            log.close()


def read_line_until(proc: subprocess.Popen, prefix: str, timeout_s: float) -> str:
    """Reads the child's stdout until a line starting with `prefix`; raises with the reason if it never comes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buf = b""
    fd = proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line starting with {prefix!r} within {timeout_s:.0f} s; got {buf[-300:]!r}")
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"process exited (code {proc.wait()}) before printing {prefix!r}; output {buf[-300:]!r}")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text.startswith(prefix):
                    return text
        elif proc.poll() is not None:
            raise RuntimeError(f"process exited (code {proc.returncode}) before printing {prefix!r}; output {buf[-300:]!r}")


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Waits until something accepts TCP connections on host:port (or the child exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen | None, timeout_s: float = 3.0) -> None:
    """Stops one child by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc is not None:
        stop_process(proc, timeout_s)


def python_module_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter (never from the cwd)."""
    from fastpath.launch import python_argv

    return python_argv(module, *args)
