"""CPU time a process (and its descendants) has used, read from /proc.

The benchmark charges each proxy the CPU it burnt during a measured window:
utime+stime from /proc/<pid>/stat (clock ticks, all threads of the process),
summed over the process and its live descendants (nginx's master and worker).
Ticks are coarse (10 ms), so the harness also reads the scheduler's
nanosecond run time from /proc/<pid>/task/*/schedstat where available.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcError(RuntimeError):
    """A /proc entry that cannot be read or parsed; says which and why."""


@dataclass(frozen=True)
class StatFields:
    pid: int
    ppid: int
    utime_ticks: int
    stime_ticks: int


def parse_stat(text: str) -> StatFields:
    """Parses one /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may itself contain spaces
    and parentheses, so fields are counted from the last ')'.
    """
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ProcError(f"not a /proc/<pid>/stat line (no '(comm)'): {text[:80]!r}")
    try:
        pid = int(text[:open_paren].strip())
        rest = text[close_paren + 1 :].split()
        # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
        return StatFields(pid=pid, ppid=int(rest[1]), utime_ticks=int(rest[11]), stime_ticks=int(rest[12]))
    except (ValueError, IndexError):
        raise ProcError(f"malformed /proc/<pid>/stat line: {text[:120]!r}") from None


def read_stat(pid: int) -> StatFields:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except FileNotFoundError:
        raise ProcError(f"process {pid} does not exist (exited?)") from None
    except OSError as e:
        raise ProcError(f"cannot read /proc/{pid}/stat: {e.strerror}") from None


def descendants(pid: int) -> list[int]:
    """PIDs of the live descendants of `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = parse_stat(Path(entry.path, "stat").read_text())
        except (OSError, ProcError):
            continue
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid: int, with_descendants: bool = True) -> float:
    """utime+stime of `pid` (all its threads), plus its live descendants', in seconds."""
    pids = [pid] + (descendants(pid) if with_descendants else [])
    total = 0
    for i, p in enumerate(pids):
        try:
            st = read_stat(p)
        except ProcError:
            if i == 0:
                raise
            continue  # a descendant that exited meanwhile
        total += st.utime_ticks + st.stime_ticks
    return total / CLK_TCK


def run_ns(pid: int, with_descendants: bool = True) -> int | None:
    """Nanoseconds on CPU of every live thread of `pid` (and descendants), from schedstat; None if absent."""
    pids = [pid] + (descendants(pid) if with_descendants else [])
    total = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                total += int(Path(f"/proc/{p}/task/{t}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
    return total


class CpuWindow:
    """CPU used by a set of processes between `start()` and `stop()`.

    `pids` maps a role ("proxy", "backend") to a PID; `stop()` returns, per role,
    seconds from /proc/<pid>/stat ticks and from schedstat (None where missing).
    """

    def __init__(self, pids: dict[str, int]):
        self.pids = dict(pids)
        self._t0: dict[str, tuple[float, int | None]] = {}

    def start(self) -> None:
        self._t0 = {role: (cpu_seconds(pid), run_ns(pid)) for role, pid in self.pids.items()}

    def stop(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for role, pid in self.pids.items():
            ticks0, ns0 = self._t0[role]
            ticks1, ns1 = cpu_seconds(pid), run_ns(pid)
            sched = (ns1 - ns0) / 1e9 if ns0 is not None and ns1 is not None and ns1 >= ns0 else None
            out[role] = {"stat_s": ticks1 - ticks0, "sched_s": sched}
        return out
