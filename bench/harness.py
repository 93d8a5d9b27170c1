"""`fastpath bench`: switching latency and CPU per message through every path, side by side.

One run, one process tree: the bench backend, one load-client process, and a
proxy per path (nginx, HAProxy, Envoy, fastpath, ...) all start as children of
this process and are stopped by PID at the end (or if this process dies).
Rounds go over all paths in turn, rotating the order, so machine drift hits
every path alike; figures are medians over rounds. Router-cost, splice and
fleet-scenario figures are added when their modules are present.
Output: <out>/<timestamp>/results.json, PNG plots, and <out>/latest.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import backend as bench_backend
from . import extras, load, paths, procs, report, stats
from .proc_cpu import CpuWindow
from .progress import Progress

SCHEMA = "fastpath.bench/1"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
METADATA_MODES = ("repeated", "unique")
# Sections after the path rounds, in the order they run (each can be --skip-ped).
SECTIONS = ("paired", "router_cost", "splice", "fleet")


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str          # "unary" or "stream"
    concurrency: int


SCENARIOS = (
    Scenario("unary_c1", "unary", 1),
    Scenario("unary_c32", "unary", 32),
    Scenario("stream_c1", "stream", 1),
    Scenario("stream_c32", "stream", 32),
)


@dataclass
class Settings:
    paths: list[str]
    rounds: int
    duration_s: float
    warmup_s: float
    time_budget_s: float
    stream_messages: int
    message_size: int
    client: str
    quick: bool
    out: Path
    skip: list[str] = field(default_factory=list)
    plots: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short windows and 2 rounds: under 2 minutes")
    parser.add_argument("--paths", help=f"comma list of paths (default: all: {', '.join(paths.REGISTRY)})")
    parser.add_argument("--rounds", type=int, help="rounds over all paths (default 3, quick 2)")
    parser.add_argument("--out", help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help="seconds per measured window (default 1.2, quick 0.25)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each window (default 0.3, quick 0.1)")
    parser.add_argument("--time-budget", type=float, help="stop starting rounds after this many seconds (default 900, quick 110)")
    parser.add_argument("--stream-messages", type=int, default=50, help="messages per streaming call (default 50)")
    parser.add_argument("--message-size", type=int, default=128, help="bytes per response message (default 128)")
    parser.add_argument("--client", choices=load.CLIENTS, default="h2",
                        help="load client: h2 (lean HTTP/2 gRPC client, default) or grpcio (grpc.aio)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: paired, router_cost, splice, fleet")
    parser.add_argument("--no-plots", action="store_true", help="write results.json only")


class BackendDied(RuntimeError):
    """The bench backend stopped: no path can be measured any more."""


class UsageError(ValueError):
    """Options that cannot work together; the message says what to change."""


def settings_from_args(args: argparse.Namespace) -> Settings:
    quick = bool(getattr(args, "quick", False))
    path_names = [p.strip() for p in (getattr(args, "paths", None) or "").split(",") if p.strip()]
    try:
        paths.resolve(path_names or None)
    except ValueError as e:
        raise UsageError(f"--paths: {e}") from None
    s = Settings(
        paths=path_names or [p.name for p in paths.resolve(None, quick)],
        rounds=args.rounds if getattr(args, "rounds", None) is not None else (2 if quick else 3),
        duration_s=args.duration if getattr(args, "duration", None) is not None else (0.25 if quick else 1.2),
        warmup_s=args.warmup if getattr(args, "warmup", None) is not None else (0.1 if quick else 0.3),
        time_budget_s=args.time_budget if getattr(args, "time_budget", None) is not None else (110.0 if quick else 900.0),
        stream_messages=getattr(args, "stream_messages", 50),
        message_size=getattr(args, "message_size", 128),
        client=getattr(args, "client", "h2"),
        quick=quick,
        out=Path(args.out) if getattr(args, "out", None) else DEFAULT_OUT,
        skip=[x.strip() for x in (getattr(args, "skip", "") or "").split(",") if x.strip()],
        plots=not getattr(args, "no_plots", False),
    )
    if s.rounds < 1:
        raise UsageError(f"--rounds {s.rounds}: need at least 1")
    if s.duration_s <= 0 or s.warmup_s < 0:
        raise UsageError("--duration must be > 0 and --warmup >= 0 (seconds)")
    if s.time_budget_s <= 0:
        raise UsageError("--time-budget must be > 0 seconds")
    if not 1 <= s.stream_messages <= 100_000:
        raise UsageError(f"--stream-messages {s.stream_messages}: expected 1..100000")
    if not 0 <= s.message_size <= 1 << 20:
        raise UsageError(f"--message-size {s.message_size}: expected 0..1048576 bytes")
    bad = sorted(set(s.skip) - set(SECTIONS))
    if bad:
        raise UsageError(f"--skip {bad}: sections are {', '.join(SECTIONS)}")
    return s


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "loadavg_start": list(os.getloadavg()),
        "hostname": platform.node(),
    }
    for mod in ("grpc", "uvloop", "hpack"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = "absent"
    return info


# ---------------------------------------------------------------- one measurement

def measure_once(client: load.LoadClient, ep: paths.Endpoint, sc: Scenario, md: str, s: Settings,
                 backend_pid: int) -> tuple[dict[str, Any], list[float]]:
    """One window of one scenario through one path; returns the round record and raw latency samples."""
    w = load.Workload(target=ep.address, kind=sc.kind, concurrency=sc.concurrency, duration_s=s.duration_s,
                      warmup_s=s.warmup_s, n=s.stream_messages, size=s.message_size, unique_ids=(md == "unique"),
                      client=s.client, extra_metadata=ep.metadata)
    roles = {"backend": backend_pid}
    if ep.pid is not None:
        roles["proxy"] = ep.pid
    win = CpuWindow(roles)
    cpu: dict[str, Any] = {}
    res = client.run(w, on_start=win.start, on_end=lambda: cpu.update(win.stop()))
    lat = sorted(res["latencies_us"])
    msgs = res["messages"]

    def per_msg(role: str, key: str) -> float | None:
        v = cpu.get(role, {}).get(key)
        return round(v * 1e6 / msgs, 2) if v is not None and msgs else None

    rec = {
        "path": ep.name, "scenario": sc.name, "kind": sc.kind, "concurrency": sc.concurrency, "metadata": md,
        "calls": res["calls"], "messages": msgs, "errors": res["errors"], "first_error": res["first_error"],
        "elapsed_s": round(res["elapsed_s"], 4),
        "p50_us": stats.percentile(lat, 50), "p99_us": stats.percentile(lat, 99),
        "msgs_per_s": round(msgs / res["elapsed_s"], 1) if res["elapsed_s"] else None,
        "calls_per_s": round(res["calls"] / res["elapsed_s"], 1) if res["elapsed_s"] else None,
        # /proc/<pid>/stat utime+stime counts 10 ms ticks: a sub-second window of a light proxy can read 0.
        # The headline is the scheduler's ns count from /proc/<pid>/task/*/schedstat; ticks where it is absent.
        "proxy_cpu_us_per_msg_stat": per_msg("proxy", "stat_s"),
        "proxy_cpu_us_per_msg_sched": per_msg("proxy", "sched_s"),
        "backend_cpu_us_per_msg": per_msg("backend", "sched_s"),
        # the client counts its own CPU inside the window (process_time), not its reporting after it
        "client_cpu_us_per_msg": round(res["client_cpu_s"] * 1e6 / msgs, 2) if msgs else None,
    }
    rec["proxy_cpu_us_per_msg"] = (rec["proxy_cpu_us_per_msg_sched"] if rec["proxy_cpu_us_per_msg_sched"] is not None
                                   else rec["proxy_cpu_us_per_msg_stat"])
    # Kernel work that leaves the proxy (a splice) is charged to whichever process was running:
    # the sum over client, backend and proxy shows what a path costs in all.
    parts = [rec["proxy_cpu_us_per_msg_sched"], rec["backend_cpu_us_per_msg"], rec["client_cpu_us_per_msg"]]
    rec["all_cpu_us_per_msg"] = round(sum(p for p in parts if p is not None), 2) if rec["backend_cpu_us_per_msg"] is not None else None
    return rec, lat


NUMERIC = ("p50_us", "p99_us", "msgs_per_s", "calls_per_s", "proxy_cpu_us_per_msg", "proxy_cpu_us_per_msg_sched",
           "proxy_cpu_us_per_msg_stat",
           "backend_cpu_us_per_msg", "client_cpu_us_per_msg", "all_cpu_us_per_msg")


def aggregate(records: list[dict[str, Any]], samples: dict[tuple[str, str, str], list[float]]) -> list[dict[str, Any]]:
    """Median over rounds per (path, scenario, metadata), with a merged latency CDF."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["path"], r["scenario"], r["metadata"]), []).append(r)
    rows = []
    for (path, scenario, md), recs in groups.items():
        first = recs[0]
        row: dict[str, Any] = {"type": "path", "path": path, "scenario": scenario, "kind": first["kind"],
                               "concurrency": first["concurrency"], "metadata": md, "rounds": len(recs),
                               "latency_metric": "call latency" if first["kind"] == "unary" else "time to first message",
                               "errors": sum(r["errors"] for r in recs),
                               "first_error": next((r["first_error"] for r in recs if r["first_error"]), "")}
        for k in NUMERIC:
            v = stats.median(r[k] for r in recs)
            row[k] = round(v, 2) if v is not None else None
        row["latency_cdf_us"] = stats.quantile_curve(samples.get((path, scenario, md), []))
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the run

class BenchRun:
    def __init__(self, s: Settings, run_dir: Path):
        self.s = s
        self.run_dir = run_dir
        # configs and logs of every child: <run>/raw (kept out of git by the top-level .gitignore)
        self.work = run_dir / "raw"
        self.work.mkdir(parents=True, exist_ok=True)
        self.backend_proc = None
        self.client: load.LoadClient | None = None
        self.endpoints: dict[str, paths.Endpoint] = {}
        self.path_info: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self._extras_count = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def start_backend(self) -> str:
        self.backend_proc = procs.spawn(procs.python_module_argv("fastpath.bench.backend", "--listen", "127.0.0.1:0"),
                                        log_path=self.work / "backend.log", stdout_pipe=True)
        line = procs.read_line_until(self.backend_proc, bench_backend.READY_PREFIX, 30)
        return line.split()[-1]

    def start_paths(self, backend: str, progress: Progress) -> None:
        for spec in paths.resolve(self.s.paths):
            info: dict[str, Any] = {"name": spec.name, "description": spec.description}
            try:
                ep = spec.start(paths.PathContext(backend, self.work / spec.name))
                self.endpoints[spec.name] = ep
                info.update(available=True, version=ep.version, address=ep.address, pid=ep.pid, notes=ep.notes)
                progress.note(f"  {spec.name:10s} ready at {ep.address} ({ep.version})")
            except paths.PathUnavailable as e:
                info.update(available=False, reason=str(e))
                progress.note(f"  {spec.name:10s} unavailable: {e}")
            except Exception as e:  # a path that should run but did not: reported, the rest still run
                info.update(available=False, reason=f"failed to start: {str(e)[:600]}")
                progress.note(f"  {spec.name:10s} FAILED to start: {str(e).splitlines()[0][:200]}")
            self.path_info.append(info)

    def plan_rounds(self, per_measure_s: float, reserve_s: float) -> int:
        n_paths = len(self.endpoints)
        per_round = n_paths * len(SCENARIOS) * len(METADATA_MODES) * per_measure_s
        left = self.s.time_budget_s - self.elapsed() - reserve_s
        fit = int(left // per_round) if per_round > 0 else self.s.rounds
        if fit < self.s.rounds:
            rounds = max(1, fit)
            self.notes.append(f"rounds cut from {self.s.rounds} to {rounds} to stay within the {self.s.time_budget_s:.0f} s budget")
            return rounds
        return self.s.rounds

    def run_paths(self, progress: Progress, rounds: int, end_by: float) -> tuple[list[dict[str, Any]], dict]:
        """Rounds over every path; a round is started only if the last one's duration still fits before end_by."""
        assert self.client is not None and self.backend_proc is not None
        records: list[dict[str, Any]] = []
        samples: dict[tuple[str, str, str], list[float]] = {}
        names = list(self.endpoints)
        dead: set[str] = set()
        for r in range(rounds):
            round_t0 = self.elapsed()
            order = names[r % len(names):] + names[:r % len(names)] if names else []
            for name in order:
                ep = self.endpoints[name]
                for sc in SCENARIOS:
                    for md in METADATA_MODES:
                        what = f"round {r + 1}/{rounds} {name} {sc.name} {md}"
                        if name in dead:
                            progress.step(what + " (skipped)")
                            continue
                        if self.backend_proc.poll() is not None:
                            raise BackendDied(f"the bench backend exited (code {self.backend_proc.returncode}) during "
                                              f"round {r + 1}; see {self.work / 'backend.log'}")
                        try:
                            rec, lat = measure_once(self.client, ep, sc, md, self.s, self.backend_proc.pid)
                        except Exception as e:
                            dead.add(name)
                            msg = f"{name}: measurement failed in round {r + 1} ({sc.name}, {md}): {str(e)[:300]}"
                            self.notes.append(msg)
                            progress.note("  " + msg)
                            if isinstance(e, load.LoadError):  # the client may be stuck mid-protocol: replace it
                                procs.stop(self.client.proc)
                                self.client = load.LoadClient(log_path=self.work / "load-client.log")
                            progress.step(what + " (failed)")
                            continue
                        rec["round"] = r + 1
                        records.append(rec)
                        samples.setdefault((name, sc.name, md), []).extend(lat)
                        progress.step(what)
            took = self.elapsed() - round_t0
            if r + 1 < rounds and self.elapsed() + took > end_by:
                self.notes.append(f"stopped after round {r + 1} of {rounds} (a round took {took:.0f} s; "
                                  f"time budget {self.s.time_budget_s:.0f} s)")
                progress.set_total(progress.done + self._extras_count)
                break
        return records, samples

    def stop_all(self) -> None:
        for info in self.path_info:
            ep = self.endpoints.get(info["name"])
            if ep is not None and ep.check is not None:
                try:
                    info["after_run"] = ep.check()
                except Exception as e:
                    info["after_run"] = f"check failed: {e}"
        for ep in self.endpoints.values():
            try:
                ep.stop()
            except Exception:
                pass
        if self.client is not None:
            self.client.close()
        procs.stop(self.backend_proc)

    def execute(self) -> dict[str, Any]:
        s = self.s
        started = dt.datetime.now(dt.timezone.utc)
        machine = machine_info()
        sections = {k: k not in s.skip for k in SECTIONS}
        # seconds each later section takes on an idle 2-core machine (measured), so rounds leave room for them
        reserve = {"paired": 15 if s.quick else 75, "router_cost": 4 if s.quick else 60, "splice": 15 if s.quick else 60,
                   "fleet": 110 if s.quick else 300}
        # plots and the report come after everything else and take a few CPU seconds (matplotlib)
        report_s = 0.0 if not s.plots else (6.0 if s.quick else 15.0)
        reserve_s = sum(v for k, v in reserve.items() if sections[k]) + report_s
        per_measure = s.warmup_s + s.duration_s + 0.25
        est = len(s.paths) * len(SCENARIOS) * len(METADATA_MODES) * s.rounds
        progress = Progress(est + sum(sections.values()), label="fastpath bench")
        progress.note(f"fastpath bench: {len(s.paths)} paths x {len(SCENARIOS)} scenarios x {len(METADATA_MODES)} metadata modes"
                      f" x {s.rounds} rounds, {s.duration_s:.2f} s windows; budget {s.time_budget_s:.0f} s; logs in {self.work}")
        try:
            backend = self.start_backend()
            progress.note(f"  backend    ready at {backend}")
            self.client = load.LoadClient(log_path=self.work / "load-client.log")
            self.start_paths(backend, progress)
            rounds = self.plan_rounds(per_measure, reserve_s)
            self._extras_count = sum(sections.values())
            progress.set_total(len(self.endpoints) * len(SCENARIOS) * len(METADATA_MODES) * rounds + self._extras_count)
            records, samples = self.run_paths(progress, rounds, end_by=s.time_budget_s - reserve_s)
        finally:
            self.stop_all()
        rows = aggregate(records, samples)

        order = list(SECTIONS)

        def extra(name: str, module: str, kwargs: dict[str, Any]) -> dict[str, Any]:
            if not sections[name]:
                return {"available": False, "rows": [], "note": "skipped (--skip)"}
            later = sum(reserve[k] for k in order[order.index(name) + 1:] if sections[k])
            # what is left of the budget after the later sections' shares, but never below this section's own share
            timeout = max(reserve[name] * 1.5, min(reserve[name] * 3, s.time_budget_s - report_s - self.elapsed() - later))
            progress.show(f"{name} ...")
            res = extras.run_measure(module, kwargs, timeout, self.work / name)
            progress.step(f"{name} done ({res['note'] or str(len(res['rows'])) + ' rows'})")
            return res

        paired = extra("paired", "fastpath.bench.paired:measure_suite", {"quick": s.quick})
        router_cost = extra("router_cost", "fastpath.bench.router_cost",
                            {"sizes": [8, 64, 512], "constraints": [0, 3, 6], "requests": 3000, "rounds": 1} if s.quick
                            else {"sizes": [8, 64, 512, 4096], "requests": 10000, "rounds": 3})
        splice = extra("splice", "fastpath.bench.splice_bench", {"quick": s.quick})
        fleet = extra("fleet", "fastpath.bench.fleet_scenarios", {"quick": s.quick})
        progress.close()
        machine["loadavg_end"] = list(os.getloadavg())
        versions = {p["name"]: p.get("version", "unavailable") for p in self.path_info}
        result = {
            "schema": SCHEMA,
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(self.elapsed(), 1),
            "settings": {**asdict(s), "out": str(s.out), "rounds_run": max((r["round"] for r in records), default=0),
                         "scenarios": [asdict(x) for x in SCENARIOS], "metadata_modes": list(METADATA_MODES)},
            "machine": machine,
            "versions": versions,
            "paths": self.path_info,
            "rows": rows,
            "rounds": records,
            "summary_vs_nginx": report.summary_vs_nginx(rows),
            "paired": paired,
            "router_cost": router_cost,
            "splice": splice,
            "fleet": fleet,
            "notes": self.notes,
            "plots": [],
        }
        return result


def new_run_dir(out: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = out / stamp
    i = 1
    while d.exists():
        i += 1
        d = out / f"{stamp}-{i}"
    d.mkdir(parents=True)
    return d


def point_latest(out: Path, run_dir: Path) -> None:
    """out/latest -> the newest run, replaced atomically."""
    tmp = out / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, out / "latest")


def run(args: argparse.Namespace) -> int:
    try:
        s = settings_from_args(args)
    except UsageError as e:
        print(f"fastpath bench: {e}", file=sys.stderr)
        return 2
    try:
        run_dir = new_run_dir(s.out)
    except OSError as e:
        print(f"fastpath bench: cannot create results folder under {s.out}: {e.strerror}; pass --out DIR", file=sys.stderr)
        return 2

    def on_term(signum, frame):  # stop children on SIGTERM just as on Ctrl-C
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        result = BenchRun(s, run_dir).execute()
    except KeyboardInterrupt:
        print("\nfastpath bench: interrupted; every child process was stopped", file=sys.stderr)
        return 130
    except (BackendDied, OSError, RuntimeError) as e:
        print(f"\nfastpath bench: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    if s.plots:
        try:
            from . import plots

            result["plots"] = plots.write_all(result, run_dir)
        except Exception as e:  # plots are a convenience: the figures are in results.json
            result["notes"].append(f"plots not written: {e}")
    (run_dir / "results.json").write_text(json.dumps(result, indent=1))
    point_latest(s.out, run_dir)
    print(report.summary_text(result))
    print(f"\nresults: {run_dir / 'results.json'}" + (f" (+ {len(result['plots'])} plots)" if result["plots"] else ""))
    available = [p for p in result["paths"] if p.get("available")]
    return 0 if available and result["rows"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.harness", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
