"""`fastpath demo`: the whole product in one command.

Starts the simulated fleet, the controller and the proxy (`fastpath.up.Stack`),
drives a seeded mixed workload through the proxy with stock KServe v2 clients
(`fastpath.workload`), stops everything, and prints where the traffic went,
how fast its first tokens came and what it cost (`fastpath.report`).
"""
from __future__ import annotations

import argparse
import os
import json
import signal
import sys
import time

from fastpath.config import ConfigError
from fastpath.report import render_table, summarize
from fastpath.up import (Stack, StackError, add_fault_argument, add_offload_argument, config_from_args,
                         add_workers_argument, offload_warning, parse_faults)
from fastpath.workload import plan_workload, run_workload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--base-port", type=int, metavar="N",
                        help="move every listening port to N, N+1, ... (run beside another fastpath)")
    parser.add_argument("--json", action="store_true", help="print the summary (and every request) as JSON")
    parser.add_argument("--requests", type=int, default=120, metavar="N", help="requests to send (default 120)")
    parser.add_argument("--seed", type=int, default=7, metavar="S", help="workload seed (default 7)")
    parser.add_argument("--time-budget", type=float, default=40.0, metavar="S",
                        help="seconds the workload may take before later phases are skipped (default 40)")
    parser.add_argument("--no-controller", action="store_true", help="run the proxy on its static config alone")
    parser.add_argument("--logs", action="store_true", help="echo the children's output to stderr")
    add_fault_argument(parser)
    add_offload_argument(parser)
    add_workers_argument(parser)


def controller_view(address: str, timeout_s: float = 2.0) -> dict:
    """What the slow path learned during the run: health, observed TTFT and sessions per backend."""
    import grpc

    from fastpath.gen import control_pb2, control_pb2_grpc

    try:
        with grpc.insecure_channel(address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            fleet = stub.ListBackends(control_pb2.ListBackendsRequest(), timeout=timeout_s)
            flows = stub.ListFlows(control_pb2.ListFlowsRequest(), timeout=timeout_s)
    except grpc.RpcError as e:
        return {"error": f"controller at {address} did not answer: {e.code().name} {e.details()}"}
    return {
        "backends": {
            b.name: {
                "healthy": b.healthy,
                "health_detail": b.health_detail,
                "ttft_ms_observed": round(b.ttft_ms_observed, 1),
                "error_rate": round(b.error_rate, 3),
                "power_draw_watts": round(b.power_draw_watts),
                "power_budget_watts": round(b.power_budget_watts),
            }
            for b in fleet.backends
        },
        "sessions_learned": dict(fleet.session_backend),
        "flows": len(flows.flows),
        "flow_paths": sorted({f.path for f in flows.flows}),
    }


PROXY_COUNTERS = ("fastpath_pinned_total", "fastpath_offloaded_total", "fastpath_offload_refused_total",
                  "fastpath_failovers_total", "fastpath_stream_resets_total", "fastpath_proxy_errors_total")


def proxy_view(metrics_listen: str, timeout_s: float = 2.0) -> dict:
    """The proxy's own counters from its /metrics: pinned sessions, kernel offloads, failovers."""
    import urllib.request

    from fastpath.control.promtext import PromTextError, parse

    url = f"http://{metrics_listen}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback, our own proxy
            text = resp.read()
        expo = parse(text, strict=False)
    except (OSError, PromTextError) as e:
        return {"error": f"proxy metrics at {url} not readable: {e}"}
    return {name.removeprefix("fastpath_").removesuffix("_total"): int(expo.total(name) or 0)
            for name in PROXY_COUNTERS}


class TelemetrySampler:
    """Polls the controller's ListBackends in a thread while the workload runs.

    It gives the site's own view of a burst (sequences running and waiting
    against its slots) beside what the clients saw.
    """

    def __init__(self, address: str, interval_s: float = 0.1) -> None:
        import threading

        self.address = address
        self.interval_s = interval_s
        self.samples: list[tuple[float, str, float, float, float]] = []  # (t, site, running, waiting, slots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastpath-demo-telemetry", daemon=True)

    def _run(self) -> None:
        import grpc

        from fastpath.gen import control_pb2, control_pb2_grpc

        with grpc.insecure_channel(self.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            while not self._stop.wait(self.interval_s):
                try:
                    fleet = stub.ListBackends(control_pb2.ListBackendsRequest(), timeout=1.0)
                except grpc.RpcError:
                    continue
                now = time.monotonic()
                for b in fleet.backends:
                    self.samples.append((now, b.name, b.num_requests_running, b.num_requests_waiting, b.max_num_seqs))

    def __enter__(self) -> "TelemetrySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=3.0)

    def peak(self, site: str, start: float, end: float) -> dict | None:
        """The site's busiest sample between two monotonic times, or None if none was taken."""
        rows = [r for r in self.samples if r[1] == site and start <= r[0] <= end]
        if not rows:
            return None
        t, _, running, waiting, slots = max(rows, key=lambda r: (r[2] + r[3], r[0]))
        return {"running": int(running), "waiting": int(waiting), "slots": int(slots), "samples": len(rows)}


def _say(msg: str) -> None:
    print(f"fastpath demo: {msg}", file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    if args.offload is None and args.config is None and os.geteuid() == 0:
        # The embedded demo shows the whole path: as root, repeat sessions go to the kernel
        # (the proxy falls back to Python, saying why, where BPF cannot run).
        args.offload = "ebpf"
    try:
        config = config_from_args(args)
        plan = plan_workload(config, args.requests, args.seed)
        parse_faults(config, args.fault)
    except (ConfigError, ValueError) as e:
        _say(str(e))
        return 2
    if args.offload == "dpu":  # the session phase through the emulated BlueField (namespaces, tc flow table)
        from fastpath.offload.dpu_demo import run as run_dpu

        return run_dpu(args, config, plan, _say)
    warning = offload_warning(config)
    if warning:
        _say(warning)
    old = signal.signal(signal.SIGTERM, _terminate)
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.logs else None
    died: list[str] = []
    try:
        _say(f"starting {len(config.backends)} simulated sites, "
             f"{'the controller, ' if not args.no_controller else ''}the proxy ...")
        if args.fault:
            _say(f"injecting faults: {', '.join(args.fault)}")
        with Stack(config, controller=not args.no_controller, progress=_say, echo=echo, faults=args.fault,
                   workers=args.workers,
                   log_level="WARNING" if not args.logs else args.log_level) as stack:
            _say(f"sending {plan.total} requests to {stack.proxy_address} (seed {plan.seed})")
            sampler = TelemetrySampler(stack.control_address) if stack.with_controller else None
            t0 = time.monotonic()
            if sampler:
                sampler.__enter__()
            try:
                results = run_workload(stack.proxy_address, plan, time_budget_s=args.time_budget,
                                       progress=lambda m: _say(f"workload: {m}"))
            finally:
                if sampler:
                    sampler.__exit__()
            duration = time.monotonic() - t0
            died = [c.exit_description() for c in stack.dead()]
            control = controller_view(stack.control_address) if stack.with_controller and not died else None
            proxy = proxy_view(config.proxy.metrics_listen) if config.proxy.metrics_listen and not died else None
            startup = stack.startup_s
            _say("stopping the stack")
    except StackError as e:
        _say(f"could not run the stack: {e}")
        return 1
    except KeyboardInterrupt as e:
        _say(f"interrupted ({str(e) or 'SIGINT'}): every process stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    summary = summarize(config, plan, results, duration_s=duration, startup_s=startup)
    summary["died"] = died
    burst = summary.get("burst")
    burst_results = [r for r in results if r.spec.phase == "burst"]
    if sampler and burst and burst_results:
        peak = sampler.peak(burst["site"], t0 + min(r.started_s for r in burst_results),
                            t0 + max(r.ended_s for r in burst_results))
        burst["site_telemetry_peak"] = peak
        if peak and burst["ok"]:
            summary["observations"].insert(
                next((i + 1 for i, o in enumerate(summary["observations"]) if o.startswith("burst:")), 0),
                f"burst, as the controller saw it: {burst['site']} peaked at {peak['running']} running and "
                f"{peak['waiting']} waiting for {peak['slots']} slots ({peak['samples']} samples).")
    summary["controller"] = control
    summary["proxy"] = proxy
    if proxy and "error" not in proxy:
        summary["observations"].append(
            f"proxy ({config.offload_driver} offload driver): {proxy['pinned']} session connections pinned, "
            f"{proxy['offloaded']} handed to the kernel, {proxy['offload_refused']} kept in Python; "
            f"{proxy['failovers']} failovers.")
    elif proxy:
        summary["observations"].append(proxy["error"])
    if control and "backends" in control:
        seen = {n: b["ttft_ms_observed"] for n, b in control["backends"].items() if b["ttft_ms_observed"]}
        unhealthy = [n for n, b in control["backends"].items() if not b["healthy"]]
        line = (f"controller: learned {len(control['sessions_learned'])} sessions and observed TTFT on "
                f"{len(seen)} of {len(control['backends'])} backends")
        if seen:
            line += " (" + ", ".join(f"{n} {v:.0f} ms" for n, v in sorted(seen.items())) + ")"
        line += f"; unhealthy: {', '.join(unhealthy)}." if unhealthy else "; all healthy."
        summary["observations"].append(line)
    elif control:
        summary["observations"].append(f"controller: {control['error']}")
    if args.json:
        summary["results"] = [r.to_dict() for r in results]
        print(json.dumps(summary, indent=2))
    else:
        print(render_table(summary))
    for d in died:
        _say(f"during the workload {d}")
    total, ok = summary["totals"]["requests"], summary["totals"]["ok"]
    if total == 0 or ok * 2 < total:
        why = "; ".join(f"{n}× {summary['error_examples'][k]}" for k, n in
                        sorted(summary["errors"].items(), key=lambda kv: -kv[1])[:3]) or "no requests ran"
        _say(f"most requests failed ({total - ok} of {total}): {why}")
        return 1
    return 0
