"""Two proxies side by side on one backend, calls interleaved: the A/B that survives a noisy machine.

On a shared 2-core machine the CPU a proxy burns per call swings by ±20% from
one run to the next, so "before" and "after" measured minutes apart cannot show
a 3% change. Here both proxies run at once in front of the same backend and the
load client alternates its calls between them (A, B, B, A, A, B, ... on each of
`--concurrency` connection pairs), so every burst of noise lands on both. Each
round reports both proxies' CPU per call (or per streamed message), from the
scheduler's nanosecond run time, their p50 latency, and the ratio B/A; the
summary is the median of the per-round ratios.

A side is `fastpath` (this interpreter's install), `fastpath:PYTHON` (the
fastpath installed for another interpreter, e.g. a checkout of the previous
commit with its own .venv), `fastpath-pure` (this install, pure Python), a
peer (`nginx`, `haproxy`, `envoy`) or `relay`: a minimal uvloop byte relay (one
upstream connection per client connection, bytes copied verbatim), the floor any
proxy written on uvloop pays.

    python -m fastpath.bench.paired --a fastpath:/path/to/old/.venv/bin/python --b fastpath
    python -m fastpath.bench.paired --a nginx --b fastpath --kind stream
    make bench-ab BASE=HEAD~3     # a worktree of BASE is built and set against this checkout
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import h2_client, paths, peers, procs
from .backend import READY_PREFIX, STREAM, UNARY, encode_request
from .proc_cpu import run_ns
from .progress import Progress

STREAM_MESSAGES = 50
KEYS = ("a", "b")


@dataclass
class Side:
    spec: str
    address: str
    pid: int
    stop: Callable[[], None] = field(repr=False)


def _run_ns(side: Side) -> int:
    ns = run_ns(side.pid)
    if ns is None:
        raise RuntimeError(f"{side.spec}: no /proc/<pid>/task/*/schedstat for pid {side.pid} "
                           "(kernel without schedstats?): CPU per call cannot be measured")
    return ns


def start_side(spec: str, backend: str, workdir: Path, timeout_s: float = 30.0) -> Side:
    """Starts the proxy a side names (see the module docstring) in front of `backend`."""
    workdir.mkdir(parents=True, exist_ok=True)
    kind, _, python = spec.partition(":")
    if kind in peers.PEERS:
        run = peers.start_peer(kind, backend, workdir, timeout_s)
        return Side(spec, run.address, run.pid, run.stop)
    if kind == "relay":
        host, _, port = backend.rpartition(":")
        proc = procs.spawn(procs.python_module_argv("fastpath.bench.splice_bench", "--role", "pyrelay", port, "", "127.0.0.1", host),
                           log_path=workdir / "relay.log", stdout_pipe=True)
        try:
            line = procs.read_line_until(proc, "", timeout_s)
        except BaseException:
            procs.stop(proc)
            raise
        return Side(spec, f"127.0.0.1:{int(line.strip())}", proc.pid, lambda: procs.stop(proc))
    if kind not in ("fastpath", "fastpath-pure"):
        raise ValueError(f"side {spec!r}: expected fastpath, fastpath:PYTHON, fastpath-pure, relay or one of {list(peers.PEERS)}")
    conf, _ = paths.fastpath_config(backend, workdir)
    argv = paths.proxy_argv(conf)
    if python:
        argv[0] = python  # the same command (-P: never from the cwd) under another install's interpreter
    env = {**os.environ, "FASTPATH_PURE": "1"} if kind == "fastpath-pure" else None
    proc = procs.spawn(argv, log_path=workdir / "proxy.log", stdout_pipe=True, cwd=workdir, env=env)
    try:
        line = procs.read_line_until(proc, paths.FASTPATH_READY, timeout_s)
    except BaseException:
        procs.stop(proc)
        raise
    return Side(spec, line[len(paths.FASTPATH_READY):].split()[0], proc.pid, lambda: procs.stop(proc))


async def _run(sides: list[Side], kind: str, unique: bool, concurrency: int, rounds: int, duration_s: float,
               warmup_s: float, progress: Progress) -> list[dict[str, Any]]:
    conns = [[await h2_client.connect(s.address) for _ in range(concurrency)] for s in sides]
    body = encode_request(STREAM_MESSAGES if kind == "stream" else 1, 128)
    path = STREAM if kind == "stream" else UNARY
    per_call = STREAM_MESSAGES if kind == "stream" else 1
    prefix = os.urandom(8).hex()
    count = 0

    def metadata() -> tuple[tuple[str, str], ...]:
        nonlocal count
        count += 1
        rid = f"{prefix}{count:016x}" if unique else prefix + "0" * 16
        return (("x-fastpath-model", "bench"), ("x-request-id", rid))

    async def worker(i: int, until: float, lat: list[list[float]]) -> None:
        turn = i  # which side goes first alternates too, so neither always follows the other
        while time.perf_counter() < until:
            turn += 1
            for k in ((0, 1) if turn % 2 else (1, 0)):
                t0 = time.perf_counter()
                first, got = await conns[k][i].call(path, body, metadata(), 10.0)
                if got != per_call:
                    raise RuntimeError(f"{sides[k].spec}: call ended after {got} of {per_call} messages")
                lat[k].append(time.perf_counter() - t0 if kind == "unary" else first)

    try:
        lat: list[list[float]] = [[] for _ in sides]
        await asyncio.gather(*(worker(i, time.perf_counter() + warmup_s, lat) for i in range(concurrency)))
        out = []
        for r in range(rounds):
            lat = [[] for _ in sides]
            cpu0 = [_run_ns(s) for s in sides]
            await asyncio.gather(*(worker(i, time.perf_counter() + duration_s, lat) for i in range(concurrency)))
            cpu1 = [_run_ns(s) for s in sides]
            row: dict[str, Any] = {"round": r}
            for k, key in enumerate(KEYS):
                msgs = len(lat[k]) * per_call
                row[key] = {"cpu_us_per_msg": (cpu1[k] - cpu0[k]) / 1000.0 / max(1, msgs),
                            "p50_us": statistics.median(lat[k]) * 1e6, "calls": len(lat[k])}
            a, b = row["a"]["cpu_us_per_msg"], row["b"]["cpu_us_per_msg"]
            row["ratio_b_over_a"] = b / a if a else float("nan")
            out.append(row)
            progress.step(f"round {r + 1}/{rounds}: " + " | ".join(
                f"{key.upper()} {row[key]['cpu_us_per_msg']:.1f} µs p50 {row[key]['p50_us']:.0f} µs" for key in KEYS)
                + f"  B/A {row['ratio_b_over_a']:.3f}")
        return out
    finally:
        for cs in conns:
            for c in cs:
                c.close()


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds: each side's CPU per message and p50, and the per-round B/A ratios."""
    out: dict[str, Any] = {}
    for key in KEYS:
        out[key] = {"cpu_us_per_msg": statistics.median(r[key]["cpu_us_per_msg"] for r in rows),
                    "p50_us": statistics.median(r[key]["p50_us"] for r in rows)}
    ratios = [r["ratio_b_over_a"] for r in rows]
    out["ratio_b_over_a"] = statistics.median(ratios)
    out["ratio_min"], out["ratio_max"] = min(ratios), max(ratios)
    return out


def measure(a: str, b: str, kind: str = "unary", unique: bool = False, concurrency: int = 1, rounds: int = 6,
            duration_s: float = 2.0, warmup_s: float = 0.5, workdir: Path | None = None) -> dict[str, Any]:
    """Runs the paired comparison; returns per-round rows and the summary."""
    if kind not in ("unary", "stream"):
        raise ValueError(f"kind {kind!r}: expected unary or stream")
    own = workdir is None  # a scratch folder of ours: removed after a run that succeeded (kept for its logs otherwise)
    base = Path(workdir or tempfile.mkdtemp(prefix="fastpath-paired-"))
    be = procs.spawn(procs.python_module_argv("fastpath.bench.backend", "--listen", "127.0.0.1:0"),
                     stdout_pipe=True, log_path=base / "backend.log")
    sides: list[Side] = []
    try:
        backend = procs.read_line_until(be, READY_PREFIX, 20).split()[-1]
        sides = [start_side(a, backend, base / "a"), start_side(b, backend, base / "b")]
        progress = Progress(rounds, f"paired {kind}{' unique' if unique else ''} c={concurrency}: A={a} B={b}")
        rows = asyncio.run(_run(sides, kind, unique, concurrency, rounds, duration_s, warmup_s, progress))
    finally:
        for s in sides:
            s.stop()
        procs.stop(be)
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return {"a": a, "b": b, "kind": kind, "unique": unique, "concurrency": concurrency,
            "load_average": os.getloadavg(), "rows": rows, "summary": summarize(rows)}


# What `make bench` measures with calls interleaved: nginx against fastpath, CPU per call and per message with the
# noise cancelled (kind, metadata, concurrency).
SUITE = (("unary", "repeated", 1), ("unary", "unique", 1), ("stream", "repeated", 1), ("stream", "repeated", 8))
# And the floor: a minimal uvloop byte relay against nginx, what no proxy on uvloop can go below here.
FLOOR = (("unary", "repeated", 1), ("stream", "repeated", 8))


def _suite_row(a: str, b: str, kind: str, metadata: str, concurrency: int, quick: bool) -> dict[str, Any]:
    res = measure(a, b, kind, metadata == "unique", concurrency, rounds=2 if quick else 4,
                  duration_s=0.5 if quick else 2.0, warmup_s=0.2 if quick else 0.5)
    s = res["summary"]
    return {"scenario": f"{kind}_c{concurrency}", "metadata": metadata, "a": a, "b": b,
            "a_cpu_us_per_msg": s["a"]["cpu_us_per_msg"], "b_cpu_us_per_msg": s["b"]["cpu_us_per_msg"],
            "ratio_b_over_a": s["ratio_b_over_a"], "ratio_min": s["ratio_min"], "ratio_max": s["ratio_max"],
            "a_p50_us": s["a"]["p50_us"], "b_p50_us": s["b"]["p50_us"], "rounds": len(res["rows"])}


def measure_suite(quick: bool = False, a: str = "nginx", b: str = "fastpath") -> list[dict[str, Any]]:
    """One row per SUITE entry: both sides' CPU per message and p50, and the B/A ratio (median of rounds);
    then (not in quick mode) the FLOOR rows, `a` against the byte relay."""
    rows = [_suite_row(a, b, kind, metadata, concurrency, quick)
            for kind, metadata, concurrency in ((SUITE[0], SUITE[2]) if quick else SUITE)]  # quick: unary and stream, c=1
    if not quick:
        rows += [_suite_row(a, "relay", kind, metadata, concurrency, quick) for kind, metadata, concurrency in FLOOR]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.paired", description=__doc__.splitlines()[0])
    p.add_argument("--a", default="nginx", help="side A (default nginx)")
    p.add_argument("--b", default="fastpath", help="side B (default fastpath, this install)")
    p.add_argument("--kind", default="unary", choices=("unary", "stream"))
    p.add_argument("--unique", action="store_true", help="a unique x-request-id on every call")
    p.add_argument("--concurrency", type=int, default=1, help="connection pairs, one call in flight on each")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=2.0, help="seconds per round")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    res = measure(args.a, args.b, args.kind, args.unique, args.concurrency, args.rounds, args.duration)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    s = res["summary"]
    unit = "call" if args.kind == "unary" else "message"
    for key in KEYS:
        print(f"{key.upper()} {res[key]:>38}: {s[key]['cpu_us_per_msg']:7.1f} µs CPU per {unit}, p50 {s[key]['p50_us']:6.0f} µs")
    print(f"B/A CPU per {unit}: median {s['ratio_b_over_a']:.3f} over {len(res['rows'])} rounds "
          f"(range {s['ratio_min']:.3f}-{s['ratio_max']:.3f}); load average {res['load_average'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
