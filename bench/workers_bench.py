"""Proxy workers: streamed messages/s at c=64 through `fastpath proxy --workers 1` and `--workers 2`.

One bench backend; per round, each worker count gets a fresh proxy and the
same load: LOAD_CLIENTS load-client processes (bench/load.py, the lean h2
client), together 64 concurrent server-streaming calls spread over many
connections so the kernel's SO_REUSEPORT hashing reaches every worker. Worker
counts alternate within each round (1, 2, 2, 1, ...) so drift on this shared
machine hits both alike; the report is the median of the rounds, the ratio
2 workers / 1 worker, and the proxy's CPU per message (supervisor and
workers together). The client and backend share the same cores as the
workers, so the ratio is what this machine gives, not the proxy's ceiling.

    python -m fastpath.bench.workers_bench [--rounds 3] [--seconds 4] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import load, procs
from .backend import READY_PREFIX
from .paths import fastpath_config

CONCURRENCY = 64
LOAD_CLIENTS = 2
CONNECTIONS_PER_CLIENT = 8
WORKER_COUNTS = (1, 2)
READY = "fastpath proxy listening on "


def _cpu_s(pid: int) -> float:
    """utime + stime of pid, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def measure(workers: int, backend: str, clients: list[load.LoadClient], workdir: Path, seconds: float) -> dict[str, Any]:
    """One proxy with `workers` workers under the c=64 streaming load; messages/s and CPU per message."""
    conf, _ = fastpath_config(backend, workdir)
    proxy = procs.spawn(procs.python_module_argv("fastpath.cli", "--log-level", "WARNING", "proxy", "--config", str(conf),
                                                 "--no-controller", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                                 "--drain-timeout", "1", "--workers", str(workers)),
                        log_path=workdir / f"proxy-{workers}.log", stdout_pipe=True)
    try:
        address = procs.read_line_until(proxy, READY, 30)[len(READY):].split()[0]
        pids = [proxy.pid] + _children(proxy.pid)
        per_client = CONCURRENCY // len(clients)
        w = load.Workload(target=address, kind="stream", concurrency=per_client, duration_s=seconds, warmup_s=0.5,
                          n=50, size=128, connections=CONNECTIONS_PER_CLIENT)
        results: list[dict[str, Any]] = [{} for _ in clients]
        edges: list[float] = []
        cpu: list[float] = []
        lock = threading.Lock()

        def start() -> None:
            with lock:
                if not edges:
                    cpu.append(sum(_cpu_s(p) for p in pids))
                edges.append(time.monotonic())

        def end() -> None:
            with lock:
                cpu.append(sum(_cpu_s(p) for p in pids))

        def drive(i: int) -> None:
            results[i] = clients[i].run(w, on_start=start, on_end=end)

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        messages = sum(r["messages"] for r in results)
        errors = sum(r["errors"] for r in results)
        elapsed = statistics.mean(r["elapsed_s"] for r in results)
        proxy_cpu = max(cpu[1:]) - cpu[0]
        return {"workers": workers, "messages": messages, "errors": errors, "elapsed_s": round(elapsed, 3),
                "msgs_per_s": round(messages / elapsed, 1),
                "proxy_cpu_us_per_msg": round(proxy_cpu / messages * 1e6, 2) if messages else None,
                "first_error": next((r["first_error"] for r in results if r["first_error"]), "")}
    finally:
        procs.stop(proxy, timeout_s=5)


def run_bench(rounds: int, seconds: float, progress=lambda msg: None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fastpath-workers-bench-"))
    backend_proc = procs.spawn(procs.python_module_argv("fastpath.bench.backend", "--listen", "127.0.0.1:0"),
                               log_path=work / "backend.log", stdout_pipe=True)
    clients: list[load.LoadClient] = []
    runs: list[dict[str, Any]] = []
    try:
        backend = procs.read_line_until(backend_proc, READY_PREFIX, 30).split()[-1]
        clients = [load.LoadClient(log_path=work / f"client-{i}.log") for i in range(LOAD_CLIENTS)]
        for r in range(rounds):
            order = WORKER_COUNTS if r % 2 == 0 else tuple(reversed(WORKER_COUNTS))
            for n in order:
                res = measure(n, backend, clients, work, seconds)
                res["round"] = r
                runs.append(res)
                progress(f"round {r + 1}/{rounds}: {n} worker(s): {res['msgs_per_s']:.0f} msgs/s, "
                         f"proxy {res['proxy_cpu_us_per_msg']} µs CPU/msg, {res['errors']} errors")
    finally:
        for c in clients:
            c.close()
        procs.stop(backend_proc)
    shutil.rmtree(work, ignore_errors=True)  # the logs are kept only when a run fails
    med = {n: statistics.median(x["msgs_per_s"] for x in runs if x["workers"] == n) for n in WORKER_COUNTS}
    cpu = {n: statistics.median(x["proxy_cpu_us_per_msg"] or 0 for x in runs if x["workers"] == n) for n in WORKER_COUNTS}
    return {
        "concurrency": CONCURRENCY, "load_clients": LOAD_CLIENTS, "connections": LOAD_CLIENTS * CONNECTIONS_PER_CLIENT,
        "rounds": rounds, "seconds": seconds, "cores": os.cpu_count(), "loadavg_before": os.getloadavg(),
        "median_msgs_per_s": med, "median_proxy_cpu_us_per_msg": cpu,
        "ratio_2_over_1": round(med[2] / med[1], 3) if med[1] else None, "runs": runs,
    }


def render(result: dict[str, Any]) -> str:
    med, cpu = result["median_msgs_per_s"], result["median_proxy_cpu_us_per_msg"]
    lines = [f"proxy workers, streamed messages at c={result['concurrency']} over {result['connections']} connections "
             f"(median of {result['rounds']} rounds, {result['cores']} cores, load avg before "
             f"{result['loadavg_before'][0]:.2f})",
             f"{'workers':>8}  {'msgs/s':>10}  {'proxy CPU µs/msg':>17}"]
    for n in WORKER_COUNTS:
        lines.append(f"{n:>8}  {med[n]:>10.0f}  {cpu[n]:>17.2f}")
    lines.append(f"ratio 2 workers / 1 worker: {result['ratio_2_over_1']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastpath.bench.workers_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_bench(args.rounds, args.seconds, progress=lambda m: print(f"workers bench: {m}", file=sys.stderr,
                                                                             flush=True))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
