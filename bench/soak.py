"""The soak: fastpath under sustained mixed traffic, a site killed and restarted, every request accounted for.

    python -m fastpath.bench.soak [--seconds S] [--connections C] [--clients N] [--quick] [--json FILE]

Starts its own stack as child processes (the simulated fleet through
FleetProcess on a free block of ports, `fastpath proxy`, and with
--controller `fastpath controller`), then N client processes drive C
connections with stock KServe v2 gRPC clients: unary ModelInfer, streamed
ModelStreamInfer with many tokens, streams the client cancels mid-way, and
sessions (`x-fastpath-session`) that take pinned mode, on connections that
come and go. A third of the way in one site is killed (SIGKILL); two thirds
in it is restarted on its ports.

At the end it checks, and exits 1 when a check fails:
- lost = 0: every request the clients started has an outcome;
- every outcome is clear: answered OK and well formed, CANCELLED when the
  client cancelled it, UNAVAILABLE naming the backend (`backend NAME`) when a
  site failed under it; nothing else (no DEADLINE_EXCEEDED, INTERNAL, ...);
- few failures: UNAVAILABLE is at most 10% of the requests;
- the proxy's RSS under load is flat: end <= start + max(4 MiB, 10%);
- no descriptor or connection leak: once the clients have left, the proxy
  holds at most 2 more fds than before they came (pooled upstream
  connections aside), and reports no open client
  connection or active stream;
- the restarted site answers requests again;
- the proxy survived and exits 0 on SIGTERM.
A progress line goes to stderr every few seconds; the JSON summary to stdout
(and to --json FILE). Every process it starts is stopped by its PID.

`--worker` runs one client process (started by the soak itself).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RSS_SLACK_MIB = 4.0
RSS_SLACK_FRACTION = 0.10
FD_SLACK = 2
MAX_UNAVAILABLE_FRACTION = 0.10
CALL_TIMEOUT_S = 30.0
REGIONS = ("us-east", "us-west", "eu-west")

# Outcomes a client records for each request.
OK = "ok"
CANCELLED = "cancelled"                      # the client cancelled it and saw CANCELLED
UNAVAILABLE_NAMED = "unavailable_backend"    # UNAVAILABLE whose message names the backend
UNAVAILABLE_UNNAMED = "unavailable_unnamed"  # UNAVAILABLE that does not say which backend
BAD_ANSWER = "bad_answer"                    # OK, but the answer is not what was asked for
CLEAR = (OK, CANCELLED, UNAVAILABLE_NAMED)


# -- the client process ----------------------------------------------------------------------------
@dataclass
class WorkerStats:
    """What one client process did; printed as a JSON line every second, so a client that dies still reported."""

    started: int = 0
    connections: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_shape: Counter = field(default_factory=Counter)   # "shape:outcome"
    served: Counter = field(default_factory=Counter)     # site name -> answered OK
    examples: dict = field(default_factory=dict)          # outcome -> first few messages
    inflight: int = 0
    max_inflight: int = 0

    def record(self, shape: str, outcome: str, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        self.by_shape[f"{shape}:{outcome}"] += 1
        if outcome != OK and detail:
            ex = self.examples.setdefault(outcome, [])
            if len(ex) < 3 and detail not in ex:
                ex.append(detail[:300])

    def line(self, final: bool = False) -> str:
        return json.dumps({"final": final, "started": self.started, "connections": self.connections,
                           "outcomes": self.outcomes, "by_shape": self.by_shape, "served": self.served,
                           "examples": self.examples, "inflight": self.inflight, "max_inflight": self.max_inflight})


def _classify(code: Any, details: str, cancelled_by_client: bool, backends: list[str]) -> str:
    """The outcome of a finished call from its gRPC status; anything not in CLEAR fails the soak."""
    import grpc

    if code == grpc.StatusCode.OK:
        return OK
    if code == grpc.StatusCode.CANCELLED and cancelled_by_client:
        return CANCELLED
    if code == grpc.StatusCode.UNAVAILABLE:
        named = any(f"backend {b}" in details for b in backends)
        return UNAVAILABLE_NAMED if named else UNAVAILABLE_UNNAMED
    return f"status_{code.name}"


async def _worker_main(args: argparse.Namespace) -> int:
    """One client process: its share of the connections, each a loop of calls until the deadline."""
    import grpc

    from fastpath.gen import grpc_service_pb2 as pb
    from fastpath.gen import grpc_service_pb2_grpc as pb_grpc

    spec = json.loads(args.worker)
    target, backends, models = spec["target"], spec["backends"], spec["models"]
    rng = random.Random(spec["seed"])
    stats = WorkerStats()
    deadline = time.monotonic() + spec["seconds"]
    sessions = [f"w{spec['id']}-s{i}" for i in range(spec["sessions"])]

    def request(model: str, max_tokens: int) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=model, id=f"soak-{stats.started}")
        t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(f"soak prompt {rng.randrange(1000)}".encode())
        req.parameters["max_tokens"].int64_param = max_tokens
        return req

    def channel() -> grpc.aio.Channel:
        stats.connections += 1
        # A channel of its own (local subchannel pool): one TCP connection per channel, as separate clients have.
        return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                          ("grpc.enable_retries", 0)])

    async def call(stub: Any, shape: str, metadata: tuple, model: str, mode: str) -> None:
        shape = f"{mode}-{shape}"
        stats.started += 1
        stats.inflight += 1
        stats.max_inflight = max(stats.max_inflight, stats.inflight)
        cancelled = False
        try:
            if shape.endswith("unary"):
                resp, c = await _unary(stub, request(model, rng.randrange(4, 16)), metadata)
                ok = resp.model_name == model and len(resp.raw_output_contents) == 1
                site = resp.parameters["fastpath_site"].string_param
                stats.record(shape, OK if ok else BAD_ANSWER, f"unary answer {resp}"[:200])
                if ok:
                    stats.served[site] += 1
                return
            tokens = rng.randrange(32, 128)
            cancel_after = rng.randrange(1, tokens // 2) if shape.endswith("cancel") else -1
            c = stub.ModelStreamInfer(iter([request(model, tokens)]), metadata=metadata, timeout=CALL_TIMEOUT_S)
            got, final, site, bad = 0, False, "", ""
            async for r in c:
                if r.error_message:
                    bad = f"stream error_message {r.error_message!r}"
                    break
                p = r.infer_response.parameters
                site = p["fastpath_site"].string_param
                if p["triton_final_response"].bool_param:
                    final = True
                    break
                if r.infer_response.model_name != model:
                    bad = f"token for model {r.infer_response.model_name!r}, asked {model!r}"
                got += 1
                if got == cancel_after:
                    cancelled = True
                    c.cancel()
                    break
            if cancelled:
                code = await c.code()
                stats.record(shape, _classify(code, await c.details() or "", True, backends), await c.details() or "")
            elif bad or not final or got != tokens:
                stats.record(shape, BAD_ANSWER, bad or f"stream ended after {got}/{tokens} tokens, final={final}")
            else:
                stats.record(shape, OK)
                stats.served[site] += 1
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            stats.record(shape, _classify(e.code(), details, cancelled, backends), f"{e.code().name}: {details}")
        except Exception as e:  # noqa: BLE001 - any other failure is an outcome too, and must be visible
            stats.record(shape, f"client_error_{type(e).__name__}", repr(e))
        finally:
            stats.inflight -= 1

    async def routed_slot() -> None:
        while time.monotonic() < deadline:
            ch = channel()
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            region = rng.choice(REGIONS)
            for _ in range(rng.randrange(10, 60)):  # then a new connection: connections come and go
                if time.monotonic() >= deadline:
                    break
                shape = rng.choices(("unary", "stream", "cancel"), (4, 4, 2))[0]
                await call(stub, shape, (("x-fastpath-region", region),), rng.choice(models), "routed")
            await ch.close()

    async def session_slot() -> None:
        while time.monotonic() < deadline:
            ch = channel()
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            # A session is one conversation with one model: a pinned connection carries all its calls to
            # the backend its first call was routed to, and a returning session goes back there.
            i = rng.randrange(len(sessions))
            md = (("x-fastpath-session", sessions[i]), ("x-fastpath-region", rng.choice(REGIONS)))
            for _ in range(rng.randrange(1, 6)):
                if time.monotonic() >= deadline:
                    break
                await call(stub, rng.choices(("unary", "stream", "cancel"), (4, 4, 2))[0], md,
                           models[i % len(models)], "pinned")
            await ch.close()

    async def report() -> None:
        while True:
            # grpc.aio keeps a closed channel's TCP connection open while a cancelled streaming call on it
            # sits in a reference cycle; collecting each second makes "closed" mean closed within a second.
            gc.collect()
            print(stats.line(), flush=True)
            await asyncio.sleep(1.0)

    n_sessions = max(1, round(spec["connections"] * spec["session_share"]))
    slots = [session_slot() for _ in range(n_sessions)] + [routed_slot() for _ in range(spec["connections"] - n_sessions)]
    reporter = asyncio.get_running_loop().create_task(report())
    tasks = [asyncio.ensure_future(s) for s in slots]
    # Calls carry their own deadline, so slots end by deadline + CALL_TIMEOUT_S; beyond that a call is lost.
    done, pending = await asyncio.wait(tasks, timeout=spec["seconds"] + CALL_TIMEOUT_S + 10)
    for t in pending:
        t.cancel()
    reporter.cancel()
    print(stats.line(final=True), flush=True)
    return 0


async def _unary(stub: Any, req: Any, metadata: tuple) -> tuple[Any, Any]:
    c = stub.ModelInfer(req, metadata=metadata, timeout=CALL_TIMEOUT_S)
    return await c, c


# -- the stack -------------------------------------------------------------------------------------
def _port_block(n: int) -> int:
    from fastpath.ports import free_port_block

    return free_port_block(n)


@dataclass
class ProcSample:
    """The proxy's footprint at one moment (t: seconds since the load started)."""

    t: float
    rss_mib: float
    fds: int


def sample_proc(pid: int, t0: float) -> ProcSample:
    """RSS (VmRSS of /proc/<pid>/status) and open descriptors (/proc/<pid>/fd) of a process."""
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
                break
    return ProcSample(round(time.monotonic() - t0, 1), round(rss_kib / 1024, 1), len(os.listdir(f"/proc/{pid}/fd")))


def proxy_gauges(metrics_listen: str) -> dict[str, float]:
    """The proxy's own /metrics, as series name (labels summed) -> value."""
    from fastpath.control.promtext import parse

    with urllib.request.urlopen(f"http://{metrics_listen}/metrics", timeout=5) as r:
        exp = parse(r.read(), strict=False)
    out: dict[str, float] = {}
    for s in exp.samples:
        out[s.name] = out.get(s.name, 0.0) + s.value
    return out


class _WorkerProc:
    """One client process; a thread keeps its latest progress line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.last: dict[str, Any] = {}
        self.final = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            self.last = msg
            self.final = self.final or bool(msg.get("final"))


def _sum_counters(workers: list[_WorkerProc], key: str) -> Counter:
    total: Counter = Counter()
    for w in workers:
        total.update(w.last.get(key, {}))
    return total


@dataclass
class Check:
    """One end-of-run check, as printed and as written to the summary."""

    name: str
    ok: bool
    detail: str


def _check(name: str, ok: bool, detail: str) -> Check:
    return Check(name, bool(ok), detail)


def run_soak(opts: argparse.Namespace, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Runs the whole soak; returns the summary (with `checks` and `passed`)."""
    from fastpath.bench import procs
    from fastpath.config import load_config, with_ports
    from fastpath.sim.fleet import FleetProcess

    base = load_config(opts.config)
    n_ports = 3 + 2 * len(base.backends)
    config = with_ports(base, _port_block(n_ports))
    kill_site = opts.kill or _site_to_kill(config)
    if kill_site not in {b.name for b in config.backends}:
        raise SystemExit(f"--kill {kill_site!r}: no such site; sites are {[b.name for b in config.backends]}")
    workdir = Path(tempfile.mkdtemp(prefix="fastpath-soak-"))
    cfg_path = config.write(workdir / "fastpath.toml")
    t0 = time.monotonic()
    summary: dict[str, Any] = {"seconds": opts.seconds, "connections": opts.connections, "clients": opts.clients,
                               "killed_site": kill_site, "controller": opts.controller, "workdir": str(workdir)}
    events: list[dict[str, Any]] = []
    samples: list[ProcSample] = []
    proxy = controller = None
    workers: list[_WorkerProc] = []
    log(f"soak: starting the simulated fleet ({len(config.backends)} sites), logs in {workdir}")
    with FleetProcess(config) as fleet:
        try:
            if opts.controller:
                controller = procs.spawn(procs.python_module_argv("fastpath.cli", "controller", "--config", str(cfg_path)),
                                         log_path=workdir / "controller.log", stdout_pipe=True)
                procs.read_line_until(controller, "fastpath controller listening", 30)
            proxy_args = ["proxy", "--config", str(cfg_path), "--workers", "1"] + ([] if opts.controller else ["--no-controller"])
            proxy = procs.spawn(procs.python_module_argv("fastpath.cli", *proxy_args), log_path=workdir / "proxy.log",
                                stdout_pipe=True)
            procs.read_line_until(proxy, "fastpath proxy listening", 30)
            _warm_up(config.proxy.listen, config.models[0])
            time.sleep(1.0)
            idle_before = sample_proc(proxy.pid, t0)
            upstream_before = proxy_gauges(config.proxy.metrics_listen).get("fastpath_upstream_connections", 0.0)
            log(f"soak: proxy pid {proxy.pid} idle: rss {idle_before.rss_mib} MiB, {idle_before.fds} fds; "
                f"{opts.clients} client processes x {opts.connections // opts.clients} connections for {opts.seconds:g} s")
            workers = _start_workers(opts, config)
            t_load = time.monotonic()
            kill_at, restart_at = opts.seconds * 0.35, opts.seconds * 0.65
            served_at_restart: Counter = Counter()
            killed = restarted = False
            next_progress = 0.0
            while True:
                elapsed = time.monotonic() - t_load
                if proxy.poll() is not None:
                    events.append({"t": round(elapsed, 1), "event": f"proxy exited with code {proxy.returncode}"})
                    log(f"soak: the proxy exited with code {proxy.returncode}; see {workdir / 'proxy.log'}")
                    break
                if all(w.proc.poll() is not None for w in workers):
                    break
                if elapsed > opts.seconds + CALL_TIMEOUT_S + 30:
                    stuck = [w.proc.pid for w in workers if w.proc.poll() is None]
                    events.append({"t": round(elapsed, 1), "event": f"client processes {stuck} still running; stopped"})
                    log(f"soak: client processes {stuck} did not finish; stopping them (their open calls count as lost)")
                    break
                if not killed and elapsed >= kill_at:
                    fleet.kill(kill_site)
                    killed = True
                    events.append({"t": round(elapsed, 1), "event": f"killed {kill_site}"})
                    log(f"soak: {elapsed:5.1f} s  killed site {kill_site} (SIGKILL)")
                if killed and not restarted and elapsed >= restart_at:
                    pid = fleet.start_site(kill_site)
                    restarted = True
                    served_at_restart = _sum_counters(workers, "served")
                    events.append({"t": round(time.monotonic() - t_load, 1), "event": f"restarted {kill_site} (pid {pid})"})
                    log(f"soak: {time.monotonic() - t_load:5.1f} s  restarted site {kill_site} (pid {pid})")
                if elapsed <= opts.seconds + 1:
                    samples.append(sample_proc(proxy.pid, t_load))
                if elapsed >= next_progress:
                    _progress(log, elapsed, opts.seconds, workers, samples[-1] if samples else None)
                    next_progress = elapsed + opts.progress_every
                time.sleep(0.5)
            for w in workers:
                procs.stop(w.proc)
                w.thread.join(5)
            settle_until = time.monotonic() + 10
            gauges: dict[str, float] = {}
            while time.monotonic() < settle_until and proxy.poll() is None:
                gauges = proxy_gauges(config.proxy.metrics_listen)
                if not gauges.get("fastpath_connections_open") and not gauges.get("fastpath_streams_active"):
                    break
                time.sleep(0.25)
            time.sleep(1.0)
            idle_after = sample_proc(proxy.pid, t0) if proxy.poll() is None else None
            if proxy.poll() is None:
                gauges = proxy_gauges(config.proxy.metrics_listen)
            proxy_alive = proxy.poll() is None
            proxy_exit = _stop_proxy(proxy)
        finally:
            for w in workers:
                procs.stop(w.proc)
            procs.stop(proxy)
            procs.stop(controller)
    summary.update(_results(workers, samples, (idle_before, upstream_before), idle_after, gauges, served_at_restart,
                            kill_site, restarted, proxy_alive, proxy_exit, events))
    if summary["passed"] and not opts.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
        summary["workdir"] = None
    else:
        log(f"soak: logs of the proxy and its config kept in {workdir}")
    return summary


def _site_to_kill(config: Any) -> str:
    """The site serving the most models (its loss hurts most), so failover has real work to do."""
    return max(config.backends, key=lambda b: (len(b.models), b.sim.slots if b.sim else 0)).name


def _warm_up(address: str, model: str) -> None:
    """A few calls before the idle sample, so upstream connections and caches exist in both idle samples."""
    import grpc

    from fastpath.gen import grpc_service_pb2 as pb
    from fastpath.gen import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for region in REGIONS:
            req = pb.ModelInferRequest(model_name=model, id="warm-up")
            t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
            t.contents.bytes_contents.append(b"warm up")
            req.parameters["max_tokens"].int64_param = 2
            stub.ModelInfer(req, metadata=(("x-fastpath-region", region),), timeout=10)


def _start_workers(opts: argparse.Namespace, config: Any) -> list[_WorkerProc]:
    from fastpath.bench import procs

    per = [opts.connections // opts.clients + (1 if i < opts.connections % opts.clients else 0) for i in range(opts.clients)]
    out = []
    for i, conns in enumerate(per):
        spec = {"id": i, "target": config.proxy.listen, "seconds": opts.seconds, "connections": conns,
                "session_share": opts.session_share, "sessions": max(2, conns), "seed": opts.seed * 1000 + i,
                "backends": [b.name for b in config.backends], "models": config.models}
        proc = procs.spawn(procs.python_module_argv("fastpath.bench.soak", "--worker", json.dumps(spec)),
                           stdout_pipe=True)
        out.append(_WorkerProc(proc))
    return out


def _progress(log, elapsed: float, total: float, workers: list[_WorkerProc], sample: ProcSample | None) -> None:
    outcomes = _sum_counters(workers, "outcomes")
    started = sum(w.last.get("started", 0) for w in workers)
    inflight = sum(w.last.get("inflight", 0) for w in workers)
    conns = sum(w.last.get("connections", 0) for w in workers)
    others = sum(n for k, n in outcomes.items() if k not in (OK, CANCELLED))
    proc = f"; proxy rss {sample.rss_mib} MiB, {sample.fds} fds" if sample else ""
    log(f"soak: {elapsed:5.1f}/{total:g} s  {started} requests ({outcomes[OK]} ok, {outcomes[CANCELLED]} cancelled, "
        f"{others} failed), {inflight} in flight, {conns} connections opened{proc}")


def _stop_proxy(proxy: subprocess.Popen) -> int | None:
    if proxy.poll() is not None:
        return proxy.returncode
    proxy.send_signal(signal.SIGTERM)
    try:
        return proxy.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proxy.kill()
        proxy.wait()
        return None


def _at(samples: list[ProcSample], fraction: float, total: float) -> ProcSample | None:
    if not samples:
        return None
    return min(samples, key=lambda s: abs(s.t - fraction * total))


def _results(workers: list[_WorkerProc], samples: list[ProcSample], before: tuple[ProcSample, float],
             idle_after: ProcSample | None, gauges: dict[str, float], served_at_restart: Counter, kill_site: str,
             restarted: bool, proxy_alive: bool, proxy_exit: int | None, events: list[dict[str, Any]]) -> dict[str, Any]:
    idle_before, upstream_before = before
    outcomes = _sum_counters(workers, "outcomes")
    started = sum(w.last.get("started", 0) for w in workers)
    answered = sum(outcomes.values())
    missing_final = [i for i, w in enumerate(workers) if not w.final]
    lost = started - answered
    served = _sum_counters(workers, "served")
    under_load = [s for s in samples if s.t > 0]
    total = max((s.t for s in under_load), default=0.0)
    start, middle, end = (_at(under_load, f, total) for f in (0.15, 0.5, 1.0))
    unclear = {k: n for k, n in outcomes.items() if k not in CLEAR}
    unclear_shapes = {k: n for k, n in _sum_counters(workers, "by_shape").items() if k.split(":", 1)[1] in unclear}
    unavailable = outcomes[UNAVAILABLE_NAMED] + outcomes[UNAVAILABLE_UNNAMED]
    examples: dict[str, list[str]] = {}
    for w in workers:
        for k, ex in w.last.get("examples", {}).items():
            examples.setdefault(k, [])
            examples[k] += [e for e in ex if e not in examples[k]][: 3 - len(examples[k])]
    checks = [
        _check("requests ran", started > 0 and outcomes[OK] > 0, f"{started} started, {outcomes[OK]} ok"),
        _check("lost = 0", lost == 0 and not missing_final,
               f"{lost} requests without an outcome" + (f"; clients {missing_final} gave no final report" if missing_final else "")),
        _check("every outcome clear", not unclear,
               "ok / cancelled by the client / UNAVAILABLE naming the backend only" if not unclear else
               f"unclear outcomes {unclear_shapes}; e.g. {[examples.get(k, [''])[0] for k in unclear]}"),
        _check(f"UNAVAILABLE <= {MAX_UNAVAILABLE_FRACTION:.0%}", unavailable <= MAX_UNAVAILABLE_FRACTION * max(started, 1),
               f"{unavailable} of {started} requests"),
    ]
    if start and end:
        limit = start.rss_mib + max(RSS_SLACK_MIB, RSS_SLACK_FRACTION * start.rss_mib)
        checks.append(_check("RSS flat under load", end.rss_mib <= limit,
                             f"{start.rss_mib} MiB at {start.t} s -> {end.rss_mib} MiB at {end.t} s (limit {limit:.1f})"))
    if idle_after is not None:
        # Pooled upstream connections (one per backend in use) are not a leak: compare the rest.
        upstream_after = gauges.get("fastpath_upstream_connections", 0.0)
        other_before, other_after = idle_before.fds - upstream_before, idle_after.fds - upstream_after
        checks.append(_check("no fd leak", other_after <= other_before + FD_SLACK,
                             f"idle: {idle_before.fds} fds ({upstream_before:g} upstream) before the clients, "
                             f"{idle_after.fds} ({upstream_after:g} upstream) after; slack {FD_SLACK}"))
    if restarted:
        again = served[kill_site] - served_at_restart[kill_site]
        checks.append(_check("restarted site serves again", again > 0,
                             f"{kill_site} answered {again} requests after its restart"))
    checks.append(_check("no connection or stream left open",
                         proxy_alive and not gauges.get("fastpath_connections_open") and not gauges.get("fastpath_streams_active"),
                         f"after the clients left: {gauges.get('fastpath_connections_open')} client connections, "
                         f"{gauges.get('fastpath_streams_active')} streams"))
    checks.append(_check("proxy survived and stopped cleanly", proxy_alive and proxy_exit == 0,
                         f"alive at the end: {proxy_alive}; exit code on SIGTERM: {proxy_exit}"))
    return {
        "requests": started,
        "answered": answered,
        "lost": lost,
        "outcomes": dict(outcomes),
        "by_shape": dict(_sum_counters(workers, "by_shape")),
        "examples": examples,
        "connections_opened": sum(w.last.get("connections", 0) for w in workers),
        "max_inflight": sum(w.last.get("max_inflight", 0) for w in workers),
        "served_by_site": dict(served),
        "served_by_killed_site_after_restart": served[kill_site] - served_at_restart[kill_site],
        "proxy": {
            "idle_before": asdict(idle_before), "start": asdict(start) if start else None,
            "middle": asdict(middle) if middle else None, "end": asdict(end) if end else None,
            "idle_after": asdict(idle_after) if idle_after else None,
            "rss_peak_mib": max((s.rss_mib for s in samples), default=None),
            "rss_growth_second_half_mib": round(end.rss_mib - middle.rss_mib, 1) if middle and end else None,
            "series": [asdict(s) for s in under_load[:: max(1, len(under_load) // 20)]],
            "fds_peak": max((s.fds for s in samples), default=None),
            "metrics_after": {k: v for k, v in gauges.items() if k.startswith("fastpath_")},
        },
        "events": events,
        "checks": [asdict(c) for c in checks],
        "passed": all(c.ok for c in checks),
    }


# -- CLI ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, help="how long the clients drive traffic (default 180; --quick 30)")
    p.add_argument("--connections", type=int, help="concurrent client connections in all (default 48; --quick 24)")
    p.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    p.add_argument("--quick", action="store_true", help="a 30 s soak with fewer connections")
    p.add_argument("--session-share", type=float, default=0.25,
                   help="share of connections that carry x-fastpath-session and so take pinned mode (default 0.25)")
    p.add_argument("--kill", metavar="SITE", help="the site to kill and restart (default: the one serving most models)")
    p.add_argument("--controller", action="store_true", help="also run `fastpath controller` and let the proxy follow it")
    p.add_argument("--config", help="fastpath TOML config (default: the embedded one; its ports are moved to free ones)")
    p.add_argument("--seed", type=int, default=1, help="seed of the clients' request mix (default 1)")
    p.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    p.add_argument("--json", type=Path, help="also write the JSON summary to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the proxy's log and config even when every check passes")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    args.seconds = args.seconds if args.seconds is not None else (30.0 if args.quick else 180.0)
    args.connections = args.connections if args.connections is not None else (24 if args.quick else 48)
    if args.seconds < 5:
        p.error(f"--seconds {args.seconds:g}: at least 5 (the site is killed at 35% and restarted at 65% of the run)")
    if args.clients < 1 or args.connections < args.clients:
        p.error(f"--connections {args.connections} must be at least --clients {args.clients} (>= 1)")
    if not 0 <= args.session_share <= 1:
        p.error("--session-share must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        import uvloop

        return uvloop.run(_worker_main(args))
    from fastpath.config import ConfigError
    from fastpath.sim.fleet import FleetError

    try:
        summary = run_soak(args)
    except ConfigError as e:
        print(f"fastpath soak: {e}", file=sys.stderr)
        return 2
    except (FleetError, RuntimeError, TimeoutError) as e:
        print(f"fastpath soak: the stack did not come up: {e}", file=sys.stderr)
        return 1
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if args.json:
        args.json.write_text(text)
    for c in summary["checks"]:
        print(f"soak check {'PASS' if c['ok'] else 'FAIL'}: {c['name']}: {c['detail']}", file=sys.stderr, flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
