"""`fastpath flows`: the sessions the controller knows and the data path each takes."""
from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf import json_format

from fastpath.config import ConfigError, load_config
from fastpath.gen import control_pb2, control_pb2_grpc

COLUMNS = ("SESSION", "CLIENT", "BACKEND", "PATH", "PYTHON", "OFFLOAD", "AGE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--control", metavar="ADDR", help="controller address (default: [control] listen of the config)")
    parser.add_argument("--json", action="store_true", help="print the flows as JSON")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="give up after S seconds (default 2)")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def format_table(flows: list[control_pb2.Flow]) -> str:
    rows = [COLUMNS] + [
        (f.session, f.client or "-", f.backend, f.path, human_bytes(f.bytes_python),
         human_bytes(f.bytes_offload), human_age(f.age_s))
        for f in flows
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    right = {4, 5, 6}
    lines = [
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def fetch_flows(target: str, timeout_s: float) -> list[control_pb2.Flow]:
    with grpc.insecure_channel(target) as channel:
        reply = control_pb2_grpc.ControlStub(channel).ListFlows(control_pb2.ListFlowsRequest(), timeout=timeout_s)
    return list(reply.flows)


def run(args: argparse.Namespace) -> int:
    target = args.control
    if not target:
        try:
            target = load_config(args.config).control.listen
        except ConfigError as e:
            print(f"fastpath flows: {e}", file=sys.stderr)
            return 2
    try:
        flows = fetch_flows(target, args.timeout)
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"no controller at {target}: start it with `fastpath up` or `fastpath controller`", file=sys.stderr)
        else:
            details = e.details() if hasattr(e, "details") else str(e)
            print(f"fastpath flows: controller at {target} answered {code.name if code else '?'}: {details}", file=sys.stderr)
        return 1
    if args.json:
        out = [json_format.MessageToDict(f, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
               for f in flows]
        for d in out:  # uint64 are strings in proto JSON; byte counts read better as numbers
            d["bytes_python"] = int(d["bytes_python"])
            d["bytes_offload"] = int(d["bytes_offload"])
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    if not flows:
        print("no flows yet: sessions appear once proxies carry requests with x-fastpath-session")
        return 0
    print(format_table(flows))
    return 0
