"""Shared helpers for the demo tests: free port blocks and process bookkeeping."""
from __future__ import annotations

import ctypes
import os

import pytest

from fastpath.config import Config, load_config, with_ports
from fastpath.ports import free_port_block
from fastpath.up import listen_addresses

PR_SET_CHILD_SUBREAPER = 36


def free_config() -> Config:
    """The default config moved to a block of ports nothing else holds right now, below the kernel's
    ephemeral range, so no outgoing connection can take one of them before the stack binds it."""
    cfg = load_config()
    return with_ports(cfg, free_port_block(len(listen_addresses(cfg)) + 2))


@pytest.fixture
def config() -> Config:
    return free_config()


@pytest.fixture(scope="session", autouse=True)
def adopt_orphans() -> None:
    """Orphans of the processes under test are re-parented to this test process, so leaks are visible."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())


def alive(pid: int, start_time: int | None = None) -> bool:
    """pid is a live (not zombie) process, and the same one if start_time is given."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return False
    return start_time is None or int(fields[19]) == start_time


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def reap_zombies() -> None:
    """Collects exited orphans that were re-parented to this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
