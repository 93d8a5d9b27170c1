"""The /proc CPU reader: a busy child's CPU time as the child itself counts it."""
from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap

from hypothesis import given
from hypothesis import strategies as st

from fastpath.bench import proc_cpu

BUSY = textwrap.dedent("""
    import sys, time
    while time.process_time() < float(sys.argv[1]):
        pass
    print(time.process_time(), flush=True)
    sys.stdin.readline()
""")


def _busy_child(seconds: float) -> tuple[subprocess.Popen, float]:
    p = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    own = float(p.stdout.readline())
    return p, own


def test_reads_a_busy_childs_cpu():
    p, own = _busy_child(0.3)
    try:
        got = proc_cpu.cpu_seconds(p.pid)
        assert abs(got - own) < 0.05, (got, own)  # ticks are 10 ms; the child counts its own start-up too
        ns = proc_cpu.run_ns(p.pid)
        assert ns is not None and abs(ns / 1e9 - own) < 0.05
    finally:
        p.stdin.close()
        p.wait(5)


def test_window_charges_only_the_work_inside_it():
    p, own = _busy_child(0.2)
    try:
        w = proc_cpu.CpuWindow({"idle": p.pid})
        w.start()
        out = w.stop()["idle"]
        assert out["stat_s"] < 0.02  # the child is blocked on stdin: nothing to charge
        assert out["sched_s"] is not None and out["sched_s"] < 0.02
    finally:
        p.stdin.close()
        p.wait(5)


def test_descendants_are_counted():
    # a shell whose child burns the CPU: the shell's own counters stay near zero
    script = f"{shlex.quote(sys.executable)} -c {shlex.quote(BUSY)} 0.3"
    sh = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        own = float(sh.stdout.readline())
        alone = proc_cpu.cpu_seconds(sh.pid, with_descendants=False)
        tree = proc_cpu.cpu_seconds(sh.pid)
        assert alone < 0.05
        assert abs(tree - alone - own) < 0.05
    finally:
        sh.stdin.close()
        sh.wait(5)


def test_missing_process_says_so():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    try:
        proc_cpu.cpu_seconds(p.pid)
    except proc_cpu.ProcError as e:
        assert str(p.pid) in str(e)
    else:  # pid reused already: nothing to check
        pass


comm = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n"), max_size=15)


@given(comm=comm, pid=st.integers(1, 2**22), ppid=st.integers(0, 2**22),
       utime=st.integers(0, 2**40), stime=st.integers(0, 2**40))
def test_parse_stat_survives_any_command_name(comm, pid, ppid, utime, stime):
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
    line = f"{pid} ({comm}) " + " ".join(fields)
    st_ = proc_cpu.parse_stat(line)
    assert (st_.pid, st_.ppid, st_.utime_ticks, st_.stime_ticks) == (pid, ppid, utime, stime)


@given(st.text(max_size=200))
def test_parse_stat_rejects_garbage_with_a_clear_error(text):
    try:
        proc_cpu.parse_stat(text)
    except proc_cpu.ProcError as e:
        assert "stat" in str(e)
