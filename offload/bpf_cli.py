"""`fastpath bpf status|load|unload`: the kernel side of the offload, for operators.

`load` pins the splice program and its maps under /sys/fs/bpf/fastpath so all
proxy workers share them; `unload` removes them (bpftool then lists nothing of
fastpath once no proxy holds them); `status` says what this kernel supports
and what is loaded, with ids and entry counts.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

MAP_TYPES = {1: "hash", 2: "array", 18: "sockhash"}
PROG_TYPES = {13: "sock_ops", 14: "sk_skb", 16: "sk_msg"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bpf_command", metavar="ACTION")
    for name, text in (
        ("status", "kernel features found, and the pinned programs and maps"),
        ("load", "load the splice program and pin it and its maps"),
        ("unload", "detach and unpin everything `load` pinned"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--pin-dir", type=Path, default=None, help="bpffs folder (default: FP_PIN_DIR of bpf/fastpath_maps.h, /sys/fs/bpf/fastpath)")
        if name == "load":
            p.add_argument("--max-flows", type=int, default=None, help="flow capacity (default FP_MAX_FLOWS)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print one JSON object")


def features() -> dict[str, tuple[bool, str]]:
    """What the kernel and this process offer, each with a short note."""
    from fastpath.offload import libbpf
    from fastpath.offload.drivers import missing_privileges
    from fastpath.offload.loader import object_path

    out: dict[str, tuple[bool, str]] = {}
    missing = missing_privileges()
    out["privileges"] = (not missing, "CAP_BPF and CAP_NET_ADMIN" if not missing else f"missing {missing}: run as root")
    try:
        libbpf.lib()
        syscall = libbpf.probe_map_type(libbpf.BPF_MAP_TYPE_ARRAY)
        out["bpf syscall"] = (syscall, "" if syscall else "refused (no privileges, or kernel.unprivileged_bpf_disabled)")
        out["sockhash"] = (libbpf.probe_map_type(libbpf.BPF_MAP_TYPE_SOCKHASH), "BPF_MAP_TYPE_SOCKHASH")
        out["sk_skb verdict"] = (libbpf.probe_prog_type(libbpf.BPF_PROG_TYPE_SK_SKB), "BPF_PROG_TYPE_SK_SKB")
        out["sk_msg"] = (libbpf.probe_prog_type(libbpf.BPF_PROG_TYPE_SK_MSG), "BPF_PROG_TYPE_SK_MSG")
    except libbpf.BpfError as e:
        out["libbpf"] = (False, str(e).splitlines()[0])
    btf = Path("/sys/kernel/btf/vmlinux")
    out["btf"] = (btf.exists(), str(btf))
    mounted = libbpf.is_bpffs(libbpf.BPF_FS_ROOT)
    out["bpffs"] = (mounted, str(libbpf.BPF_FS_ROOT) if mounted else "not mounted (`fastpath bpf load` mounts it)")
    obj = object_path()
    out["objects built"] = (obj.exists(), str(obj) if obj.exists() else f"{obj} missing: run `make bpf`")
    from fastpath.offload.skmsg import OBJECT_NAME

    msg_obj = obj.with_name(OBJECT_NAME)
    out["sk_msg shortcut"] = (msg_obj.exists(), f"{msg_obj} (experimental)" if msg_obj.exists() else f"{msg_obj} missing: run `make bpf`")
    return out


def unpinned_fastpath_objects(pinned_ids: set[int]) -> list[dict[str, Any]]:
    """fastpath programs and maps the kernel holds that are not pinned: private copies of running proxies."""
    from fastpath.offload import libbpf

    rows = []
    for o in libbpf.all_objects():
        if o.name.startswith("fp_") and o.id not in pinned_ids:
            kind_types = MAP_TYPES if o.kind == "map" else PROG_TYPES
            rows.append({"name": o.name, "kind": o.kind, "id": o.id, "type": kind_types.get(o.type, str(o.type))})
    return rows


REQUIRED = ("privileges", "bpf syscall", "sockhash", "sk_skb verdict", "objects built")


def pinned(pin_dir: Path) -> list[dict[str, Any]]:
    """The objects pinned in pin_dir with kernel ids and entry counts."""
    from fastpath.offload import libbpf
    from fastpath.offload.loader import map_names, pin_names
    from fastpath.offload.maps import load_layout

    layout = load_layout()
    maps = set(map_names(layout))
    rows = []
    for name in pin_names(layout):
        path = pin_dir / name
        if not path.exists():
            continue
        fd = libbpf.get_pinned(path)
        try:
            info = libbpf.map_info(fd) if name in maps else libbpf.prog_info(fd)
            row: dict[str, Any] = {"name": name, "kind": info.kind, "id": info.id, "path": str(path)}
            if info.kind == "map":
                row["type"] = MAP_TYPES.get(info.type, str(info.type))
                row["max_entries"] = info.max_entries
                row["entries"] = len(libbpf.Map(fd, name, ctypes.c_uint8 * info.key_size, ctypes.c_uint8 * info.value_size, owns_fd=False).keys())
                if name == layout.str("FP_MAP_ERRORS"):
                    errors = libbpf.Map(fd, name, ctypes.c_uint32, ctypes.c_uint64, owns_fd=False)
                    classes = {v: k.removeprefix("FP_ERR_").lower() for k, v in layout.prefixed("FP_ERR_").items() if k != "FP_ERR_COUNT"}
                    row["counts"] = {n: int(errors.lookup(ctypes.c_uint32(i)).value) for i, n in sorted(classes.items())}
            else:
                row["type"] = PROG_TYPES.get(info.type, str(info.type))
            rows.append(row)
        finally:
            os.close(fd)
    return rows


def _pin_dir(args: argparse.Namespace) -> Path:
    from fastpath.offload.loader import default_pin_dir

    return args.pin_dir or default_pin_dir()


def cmd_status(args: argparse.Namespace) -> int:
    from fastpath.offload.libbpf import BpfError

    feats = features()
    pin_dir = _pin_dir(args)
    try:
        objs = pinned(pin_dir)
        pin_error = ""
    except BpfError as e:
        objs, pin_error = [], str(e)
    ok = all(feats.get(k, (False, ""))[0] for k in REQUIRED)
    try:
        held = unpinned_fastpath_objects({o["id"] for o in objs})
    except BpfError:
        held = []
    if getattr(args, "json", False):
        print(json.dumps({"ok": ok, "features": {k: {"ok": v, "note": n} for k, (v, n) in feats.items()},
                          "pin_dir": str(pin_dir), "pinned": objs, "held_by_processes": held, "error": pin_error}))
        return 0 if ok else 1
    print("kernel features:")
    for k, (v, note) in feats.items():
        print(f"  {k:<15} {'yes' if v else 'NO ':<4} {note}")
    print(f"pinned in {pin_dir}:" if objs else f"nothing pinned in {pin_dir} (`fastpath bpf load` pins the splice)")
    for o in objs:
        extra = f"  entries {o['entries']}/{o['max_entries']}" if o["kind"] == "map" else ""
        if "counts" in o:
            extra += "  " + " ".join(f"{k}={v}" for k, v in o["counts"].items())
        print(f"  {o['kind']:<4} {o['name']:<10} id {o['id']:<6} {o['type']:<9}{extra}")
    if held:
        print("not pinned, held by running processes (private copies of proxies, tests, benchmarks):")
        for o in held:
            print(f"  {o['kind']:<4} {o['name']:<15} id {o['id']:<6} {o['type']}")
    if pin_error:
        print(f"error reading pins: {pin_error}", file=sys.stderr)
    if not ok:
        print("the kernel splice cannot run here: " + "; ".join(n for k, (v, n) in feats.items() if k in REQUIRED and not v), file=sys.stderr)
    return 0 if ok else 1


def cmd_load(args: argparse.Namespace) -> int:
    from fastpath.offload import loader
    from fastpath.offload.libbpf import BpfError

    pin_dir = _pin_dir(args)
    try:
        infos = loader.load_and_pin(pin_dir, args.max_flows)
    except (BpfError, ValueError) as e:
        print(f"fastpath bpf load: {e}", file=sys.stderr)
        return 1
    for i in infos:
        print(f"pinned {i.kind} {i.name} id {i.id} at {pin_dir / i.name}")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    from fastpath.offload import loader
    from fastpath.offload.libbpf import BpfError

    pin_dir = _pin_dir(args)
    try:
        removed = loader.unload(pin_dir)
    except BpfError as e:
        print(f"fastpath bpf unload: {e}", file=sys.stderr)
        return 1
    if not removed:
        print(f"nothing pinned in {pin_dir}")
    for p in removed:
        print(f"unpinned {p}")
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "bpf_command", None)
    if action is None:
        print("usage: fastpath bpf {status,load,unload} (see fastpath bpf --help)", file=sys.stderr)
        return 2
    return {"status": cmd_status, "load": cmd_load, "unload": cmd_unload}[action](args)
