"""Kernel splice vs Python relay vs direct: round trip per message and the relay's CPU per message.

Each path carries 64-byte ping-pong messages from a client process to a
uvloop echo server process; the relay (when there is one) is its own process,
so its CPU is read from /proc: the scheduler's run time of all its threads,
per message. Paths: direct; python-relay (uvloop byte relay); kernel-splice
(SOCKHASH + stream verdict between the relay's two sockets); sk_msg-shortcut
(the uvloop relay plus an sk_msg shortcut between the client's and the echo
server's own sockets, which run in a cgroup of their own). Paths and concurrencies are measured interleaved in rounds, and
figures are medians over rounds. The splice's copying runs in kernel workers
and softirq, which no process is charged for, so the machine-wide busy CPU per
message is reported too (it includes the client and the echo server, and
anything else the machine runs). Also measured: switching latency, the time
from the splice call until the kernel has delivered the first byte.

The same run ends with the DPU card path (fastpath.bench.dpu_bench: through the
emulated card, switched by a card rule, against the proxy path and direct
through the same card) and the card's rule insertion latency.

`python -m fastpath.bench.splice_bench [--quick]` prints a table;
`measure(quick)` returns the rows for the benchmark harness.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastpath.launch import python_argv

MSG = 64
PATHS = ("direct", "python-relay", "kernel-splice", "sk_msg-shortcut")
CONCURRENCY = (1, 64)


# ---- child roles ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Children of a benchmark run end with it, even when it is killed (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the run ended before the line above
        os._exit(1)


def _role_echo(host: str = "127.0.0.1") -> None:
    """uvloop echo server (on `host`: the DPU bench runs it in the card's backend namespace)."""
    import asyncio

    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.t.write(data)

    async def main() -> None:
        srv = await asyncio.get_running_loop().create_server(Echo, host, 0, backlog=512)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def _role_pyrelay(backend_port: int, shortcut_cgroup: str = "", listen_host: str = "127.0.0.1",
                  backend_host: str = "127.0.0.1") -> None:
    """uvloop byte relay: what the fast path's pinned mode does in Python.

    With shortcut_cgroup, each flow also gets an sk_msg shortcut between its
    end sockets, so the relay only sees what predates it (and FIN).
    """
    import asyncio

    import uvloop

    shortcuts = None
    if shortcut_cgroup:
        from fastpath.offload.skmsg import MsgShortcuts

        shortcuts = MsgShortcuts(Path(shortcut_cgroup), max_flows=1024)
        shortcuts.watch_port(backend_port)
    flows = itertools.count(1)

    class Upstream(asyncio.Protocol):
        def __init__(self, down: asyncio.Transport) -> None:
            self.down = down

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.down.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.down.close()

    class Downstream(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.up: asyncio.Transport | None = None
            self.pending: list[bytes] = []
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            asyncio.get_running_loop().create_task(self.dial())

        async def dial(self) -> None:
            up, _ = await asyncio.get_running_loop().create_connection(lambda: Upstream(self.t), backend_host, backend_port)
            up.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.up = up
            for d in self.pending:
                up.write(d)
            if shortcuts is not None:
                self.session = f"bench-{next(flows)}"
                r = shortcuts.install(self.session, self.t.get_extra_info("socket"), up.get_extra_info("socket"))
                if not r.offloaded:
                    print(f"shortcut refused: {r.reason}", file=sys.stderr, flush=True)

        def data_received(self, data: bytes) -> None:
            if self.up is None:
                self.pending.append(data)
            else:
                self.up.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.up is not None:
                self.up.close()
            if shortcuts is not None and getattr(self, "session", None):
                shortcuts.remove(self.session)

    async def main() -> None:
        srv = await asyncio.get_running_loop().create_server(Downstream, listen_host, 0, backlog=512)
        if shortcuts is not None:
            shortcuts.watch_port(srv.sockets[0].getsockname()[1])
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def _role_splicerelay(backend_port: int) -> None:
    """Accepts, dials the backend, hands both sockets to the kernel; never touches a byte."""
    from fastpath.offload.ebpf import EbpfDriver

    driver = EbpfDriver(pin_dir=None, max_flows=1024)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(512)
    print(lst.getsockname()[1], flush=True)
    n = 0
    while True:
        c, _ = lst.accept()
        b = socket.create_connection(("127.0.0.1", backend_port))
        for s in (c, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n += 1
        r = driver.splice(f"bench-{n}", c, b)
        if not r.offloaded:
            print(f"splice refused: {r.reason}", file=sys.stderr, flush=True)


# ---- measurement --------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    return {**os.environ, "FASTPATH_BENCH_PARENT": str(os.getpid())}


def _spawn(role: str, *args: str, cgroup: Any = None) -> tuple[subprocess.Popen, int]:
    argv = python_argv("fastpath.bench.splice_bench", "--role", role, *args)
    p = subprocess.Popen(cgroup.wrap(argv) if cgroup else argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_child_env())
    ready, _, _ = select.select([p.stdout], [], [], 20)
    line = p.stdout.readline().strip() if ready else ""
    if not line.isdigit():
        err = p.stderr.read(2000) if p.poll() is not None else ""
        _stop(p)
        raise RuntimeError(f"{role} did not start: {err.strip() or 'no port printed'}")
    return p, int(line)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(5)
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


def round_trip_rows(raw: dict[tuple[str, int], list[dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per (path, connections): the medians over rounds of a ping-pong's figures."""
    rows: list[dict[str, Any]] = []
    for (path, conns), rs in raw.items():
        med = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
        rows.append({"kind": "round_trip", "path": path, "concurrency": conns, "message_bytes": MSG, "rounds": len(rs),
                     "rtt_p50_us": med["p50"], "rtt_p99_us": med["p99"], "msgs_per_s": round(med["msgs_per_s"]),
                     "relay_cpu_us_per_msg": med["relay_cpu_us_per_msg"],
                     "system_cpu_us_per_msg": med["system_cpu_us_per_msg"]})
    return rows


def proc_cpu_ns(pid: int) -> int:
    """Run time of all threads of `pid` in ns (schedstat), or utime+stime ticks as a fallback."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def system_busy_ns() -> int:
    """Busy CPU time of the whole machine (all CPUs, everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - v[4]
    return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def ping_pong(port: int, conns: int, seconds: float, window: list[float] | None = None,
              relay_pid: int | None = None, host: str = "127.0.0.1", source: str = "") -> list[float]:
    """Round trips (µs) of 64-byte messages on `conns` connections for `seconds`.

    Connection set-up (and the splice) happen before the timed window; when
    `window` is given it receives [wall s, relay CPU ns, system busy ns] of the
    timed window only.
    """
    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, port), source_address=(source, 0) if source else None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    try:
        msg = os.urandom(MSG)
        ep = select.epoll()
        state = {}
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
            state[s.fileno()] = [s, 0, 0.0]
        # warm up: one exchange per connection (the splice relay inserts on accept)
        for s in socks:
            s.setblocking(True)
            s.sendall(msg)
            got = 0
            while got < MSG:
                got += len(s.recv(MSG - got))
            s.setblocking(False)
        rtts: list[float] = []
        perf = time.perf_counter
        cpu0 = proc_cpu_ns(relay_pid) if relay_pid else 0
        sys0 = system_busy_ns()
        start = perf()
        end = start + seconds
        for st in state.values():
            st[2] = perf()
            st[0].send(msg)
        while perf() < end:
            for fd, _ in ep.poll(1.0):
                st = state[fd]
                data = st[0].recv(4096)
                if not data:
                    raise RuntimeError("connection closed during the benchmark")
                st[1] += len(data)
                while st[1] >= MSG:
                    st[1] -= MSG
                    now = perf()
                    rtts.append((now - st[2]) * 1e6)
                    st[2] = now
                    st[0].send(msg)
        if window is not None:
            window[:] = [perf() - start, (proc_cpu_ns(relay_pid) - cpu0) if relay_pid else 0, system_busy_ns() - sys0]
        ep.close()
        return rtts
    finally:
        for s in socks:
            s.close()


def _role_client(port: int, conns: int, seconds: float, relay_pid: int, host: str = "127.0.0.1", source: str = "") -> None:
    """Runs ping_pong in its own process (inside the shortcut cgroup) and prints one JSON line."""
    window: list[float] = []
    rtts = ping_pong(port, conns, seconds, window, relay_pid or None, host, source)
    print(json.dumps({"p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99), "n": len(rtts), "wall": window[0],
                      "cpu_ns": window[1], "busy_ns": window[2]}), flush=True)


def run_client(port: int, conns: int, seconds: float, relay_pid: int, cgroup: Any = None,
               host: str = "127.0.0.1", source: str = "") -> dict[str, float]:
    """ping_pong in a child; `cgroup` is anything with wrap(argv) (a cgroup, or a network namespace)."""
    argv = python_argv("fastpath.bench.splice_bench", "--role", "client",
                       str(port), str(conns), str(seconds), str(relay_pid), host, source)
    p = subprocess.Popen(cgroup.wrap(argv) if cgroup else argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_child_env())
    try:
        out, err = p.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        _stop(p)
        raise RuntimeError("benchmark client did not finish")
    if p.returncode != 0:
        raise RuntimeError(f"benchmark client failed: {err.strip()[-400:]}")
    return json.loads(out.strip().splitlines()[-1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def switching_latency(samples: int) -> dict[str, float]:
    """Splice call duration, and time from the splice call until the kernel delivered the first byte."""
    from fastpath.offload.ebpf import EbpfDriver

    call, first = [], []
    with EbpfDriver(pin_dir=None, max_flows=64) as driver:
        for i in range(samples):
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(4)
            srv_l = socket.socket()
            srv_l.bind(("127.0.0.1", 0))
            srv_l.listen(4)
            client = socket.create_connection(lst.getsockname())
            rc, _ = lst.accept()
            rb = socket.create_connection(srv_l.getsockname())
            server, _ = srv_l.accept()
            for s in (client, rc, rb, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a message through Python first, as a pinned connection has
            client.sendall(b"x" * MSG)
            rb.sendall(rc.recv(MSG))
            server.recv(MSG)
            t0 = time.perf_counter()
            r = driver.splice(f"switch-{i}", rc, rb)
            t1 = time.perf_counter()
            client.sendall(b"y" * MSG)
            got = 0
            while got < MSG:
                got += len(server.recv(MSG))
            t2 = time.perf_counter()
            if r.offloaded:
                call.append((t1 - t0) * 1e6)
                first.append((t2 - t0) * 1e6)
            for s in (client, server, lst, srv_l):
                s.close()
            r.wait(5)
    return {"splice_call_p50_us": pct(call, 0.5), "splice_call_p99_us": pct(call, 0.99),
            "first_kernel_byte_p50_us": pct(first, 0.5), "first_kernel_byte_p99_us": pct(first, 0.99), "samples": len(call)}


def splice_unavailable() -> str:
    """Why the kernel path cannot be measured here ('' when it can)."""
    try:
        from fastpath.offload.bpf_cli import REQUIRED, features

        feats = features()
        return "; ".join(f"{k}: {feats[k][1]}" for k in REQUIRED if not feats.get(k, (False, ""))[0])
    except Exception as e:  # noqa: BLE001 - any failure means "not measurable"
        return str(e)


def shortcut_unavailable() -> str:
    """Why the sk_msg shortcut cannot be measured here ('' when it can)."""
    from fastpath.offload.bpf_files import bpf_object
    from fastpath.offload.skmsg import OBJECT_NAME, cgroup2_root

    if not bpf_object(OBJECT_NAME).exists():
        return f"bpf/build/{OBJECT_NAME} not built: make bpf"
    try:
        cgroup2_root()
    except OSError as e:
        return str(e)
    return ""


def measure(quick: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """Rows: one per (path, concurrency) with medians over rounds, plus one switching-latency row."""
    rounds, seconds = (2, 0.5) if quick else (3, 2.0)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # a SIGTERM still cleans up (children, cgroup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    why_not = splice_unavailable()
    why_not_msg = why_not or shortcut_unavailable()
    cgroup = None
    procs: list[subprocess.Popen] = []
    relays: dict[str, tuple[int, int]] = {}  # path -> (port, relay pid or 0)
    notes: dict[str, str] = {}

    def spawn(role: str, *args: str, in_cgroup: bool = False) -> tuple[subprocess.Popen, int]:
        p, port = _spawn(role, *args, cgroup=cgroup if in_cgroup else None)
        procs.append(p)
        return p, port

    try:
        if not why_not_msg:
            from fastpath.offload.skmsg import Cgroup, cgroup2_root

            for old in cgroup2_root().glob("fastpath-bench-*"):  # left by runs that were killed
                pid = old.name.rsplit("-", 1)[-1]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    try:
                        old.rmdir()
                    except OSError:
                        pass  # still has processes in it
            cgroup = Cgroup(f"fastpath-bench-{os.getpid()}")
        _, echo_port = spawn("echo", in_cgroup=True)
        relays["direct"] = (echo_port, 0)
        p, port = spawn("pyrelay", str(echo_port))
        relays["python-relay"] = (port, p.pid)
        if why_not:
            notes["kernel-splice"] = f"unavailable: {why_not}"
        else:
            p, port = spawn("splicerelay", str(echo_port))
            relays["kernel-splice"] = (port, p.pid)
        if why_not_msg:
            notes["sk_msg-shortcut"] = f"unavailable: {why_not_msg}"
        else:
            # its own echo server: watching a port puts every socket on it under the sk_msg program
            _, echo2_port = spawn("echo", in_cgroup=True)
            p, port = spawn("pyrelay", str(echo2_port), str(cgroup.path))
            relays["sk_msg-shortcut"] = (port, p.pid)
        raw: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rnd in range(rounds):
            for path in [p for p in PATHS if p in relays]:
                for conns in CONCURRENCY:
                    port, pid = relays[path]
                    w = run_client(port, conns, seconds, pid, cgroup)
                    n = max(1, w["n"])
                    raw.setdefault((path, conns), []).append({
                        "p50": w["p50"], "p99": w["p99"], "msgs_per_s": w["n"] / w["wall"],
                        "relay_cpu_us_per_msg": w["cpu_ns"] / 1000 / n, "system_cpu_us_per_msg": w["busy_ns"] / 1000 / n,
                    })
                    if progress:
                        r = raw[(path, conns)][-1]
                        print(f"round {rnd + 1}/{rounds} {path:<16} c={conns:<3} p50 {r['p50']:7.1f} µs  "
                              f"relay CPU {r['relay_cpu_us_per_msg']:5.2f} µs/msg", file=sys.stderr, flush=True)
        rows = round_trip_rows(raw)
        for path, note in notes.items():
            rows.append({"kind": "round_trip", "path": path, "note": note})
        if not why_not:
            rows.append({"kind": "switching", "path": "kernel-splice", **switching_latency(30 if quick else 150)})
        # The card path in the same run: its own topology (namespaces), its own direct and proxy rows.
        from fastpath.bench import dpu_bench

        rows += dpu_bench.measure(quick, progress)
        return rows
    finally:
        for p in procs:
            _stop(p)
        if cgroup is not None:
            cgroup.close()


def table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'path':<20} {'conc':>4} {'p50 µs':>8} {'p99 µs':>8} {'msg/s':>8} {'relay CPU µs/msg':>17} {'system CPU µs/msg':>18}"]
    for r in rows:
        if r["kind"] == "round_trip" and "note" not in r:
            out.append(f"{r['path']:<20} {r['concurrency']:>4} {r['rtt_p50_us']:>8.1f} {r['rtt_p99_us']:>8.1f} {r['msgs_per_s']:>8} "
                       f"{r['relay_cpu_us_per_msg']:>17.2f} {r['system_cpu_us_per_msg']:>18.2f}")
        elif "note" in r:
            out.append(f"{r['path']:<20} {r['note']}")
        elif r["kind"] == "dpu_insertion":
            out.append(f"dpu rule insertion: decision -> in the card's table p50 {r['inserted_p50_us']:.0f} µs "
                       f"(p99 {r['inserted_p99_us']:.0f}); decision -> first packet switched by the card "
                       f"p50 {r['first_switched_p50_us']:.0f} µs (p99 {r['first_switched_p99_us']:.0f}), {r['samples']} samples")
        elif r["kind"] == "switching":
            out.append(f"switching: splice call p50 {r['splice_call_p50_us']:.1f} µs (p99 {r['splice_call_p99_us']:.1f}); "
                       f"splice call -> first byte delivered by the kernel p50 {r['first_kernel_byte_p50_us']:.1f} µs "
                       f"(p99 {r['first_kernel_byte_p99_us']:.1f}), {r['samples']} samples")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastpath.bench.splice_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 0.5 s instead of 3 of 2 s")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("role_args", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        _die_with_parent(int(os.environ.get("FASTPATH_BENCH_PARENT", os.getppid())))
        a = args.role_args
        {"echo": lambda: _role_echo(*a[:1]),
         "pyrelay": lambda: _role_pyrelay(int(a[0]), *a[1:4]),
         "splicerelay": lambda: _role_splicerelay(int(a[0])),
         "client": lambda: _role_client(int(a[0]), int(a[1]), float(a[2]), int(a[3]), *a[4:6])}[args.role]()
        return 0
    rows = measure(args.quick, progress=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
