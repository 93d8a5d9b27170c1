"""`fastpath top`: a live view of the fleet from the controller, in 80 columns.

Backends (health, load against batch slots, KV cache, observed TTFT, price,
power headroom), routing decisions per second by the axis that weighed most,
and sessions and bytes by data path (python, kernel, dpu), refreshed from the
control API's GetStatus. Rates are differences between two reads. `--once`
prints one frame (two reads `--interval` apart) and exits, for scripts and
for terminals that cannot redraw.
"""
from __future__ import annotations

import argparse
import sys
import time

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fastpath.config import ConfigError, load_config
from fastpath.control.flows_cli import human_bytes
from fastpath.gen import control_pb2, control_pb2_grpc

AXES = ("ttft", "cost", "affinity", "capacity", "proximity")
PATHS = ("python", "kernel", "dpu")
WIDTH = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--control", metavar="ADDR", help="controller address (default: [control] listen of the config)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="deadline of each read (default 2)")


def _health(t: control_pb2.BackendTelemetry) -> Text:
    if t.healthy:
        return Text("ok" if not t.health_detail else "ok*", style="green")
    detail = t.health_detail.replace("connection ", "").replace("probe ", "")  # the gist fits the column
    return Text(detail or "down", style="red")


def _headroom(t: control_pb2.BackendTelemetry) -> str:
    if t.power_budget_watts <= 0:
        return "-"
    return f"{max(0.0, 1.0 - t.power_draw_watts / t.power_budget_watts) * 100:.0f}%"


def _load(t: control_pb2.BackendTelemetry) -> str:
    if not t.has_metrics:
        return "-"
    slots = f"/{t.max_num_seqs:.0f}" if t.max_num_seqs > 0 else ""
    return f"{t.num_requests_running:.0f}{slots}+{t.num_requests_waiting:.0f}"


def render(now: control_pb2.Status, before: control_pb2.Status | None, dt: float, target: str) -> Group:
    """One frame: a header, the backends table, decisions per second and flows by path."""
    head = Text.assemble(("fastpath top", "bold"), f"  {target}  v{now.version % 100000}  "
                         f"config #{now.config_generation}  policy {now.default_policy}  "
                         f"proxies {sum(p.subscribed for p in now.proxies)}  sessions {now.sessions_learned}")
    head.truncate(WIDTH, overflow="ellipsis")
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold", show_edge=False)
    for col, kw in (("BACKEND", {"max_width": 14, "no_wrap": True, "overflow": "ellipsis"}),
                    ("REGION", {"max_width": 9, "no_wrap": True, "overflow": "ellipsis"}),
                    ("HEALTH", {"max_width": 14, "no_wrap": True, "overflow": "ellipsis"}),
                    ("RUN+WAIT", {"justify": "right", "no_wrap": True}),
                    ("KV", {"justify": "right"}),
                    ("TTFT", {"justify": "right"}),
                    ("$/1k", {"justify": "right"}),
                    ("POWER", {"justify": "right"})):
        table.add_column(col, **kw)
    for b in now.backends:
        t = b.telemetry
        table.add_row(t.name, b.region, _health(t), _load(t),
                      f"{t.gpu_cache_usage_perc * 100:.0f}%" if t.has_metrics else "-",
                      f"{t.ttft_ms_observed:.0f}ms" if t.ttft_ms_observed > 0 else "-",
                      f"{b.cost_per_1k_tokens:.3g}", _headroom(t))
    rates = Text.assemble(("decisions/s", "bold"), " ")
    if before is None or dt <= 0:
        rates.append("(after the next refresh)")
    else:
        for axis in (*AXES, "none"):
            r = (now.decisions_by_axis.get(axis, 0) - before.decisions_by_axis.get(axis, 0)) / dt
            if axis != "none" or r > 0:
                rates.append(f" {axis} {max(r, 0):.1f}")
    flows = Text.assemble(("flows", "bold"), "       ")
    for path in PATHS:
        flows.append(f" {path} {now.flows_by_path.get(path, 0)} ({human_bytes(now.bytes_by_path.get(path, 0))})")
    return Group(head, table, rates, flows)


def read_status(stub: control_pb2_grpc.ControlStub, timeout_s: float) -> control_pb2.Status:
    return stub.GetStatus(control_pb2.StatusRequest(), timeout=timeout_s)


def run(args: argparse.Namespace) -> int:
    try:
        target = args.control or load_config(args.config).control.listen
    except ConfigError as e:
        print(f"fastpath top: {e}", file=sys.stderr)
        return 2
    console = Console(width=min(WIDTH, Console().width) if not args.once else WIDTH)
    with grpc.insecure_channel(target) as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        try:
            before, t0 = read_status(stub, args.timeout), time.monotonic()
            if args.once:
                time.sleep(args.interval)
                now = read_status(stub, args.timeout)
                console.print(render(now, before, time.monotonic() - t0, target))
                return 0
            with Live(render(before, None, 0, target), console=console, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(args.interval)
                    now, t1 = read_status(stub, args.timeout), time.monotonic()
                    live.update(render(now, before, t1 - t0, target), refresh=True)
                    before, t0 = now, t1
        except grpc.RpcError as e:
            print(f"fastpath top: controller at {target}: {e.code().name}: {e.details()}; "
                  "is `fastpath controller` running there?", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
