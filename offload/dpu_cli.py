"""`fastpath dpu status|rules|up|down`: the emulated BlueField, for operators.

`status` shows the card (namespaces, ports, table use, connection table,
failure counters) and its agent (insertion queue, completions, latency);
`rules --format doca` prints the installed rules as DOCA Flow pipe and entry
specifications (schema: fastpath/offload/schemas/doca_flow_rules.schema.json);
`up` builds a card and keeps it until interrupted, so a controller with
`[offload] driver = "dpu"` has one to drive; `down` removes what a process that
died left behind.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dpu_command", metavar="ACTION")
    p = sub.add_parser("status", help="the emulated card: namespaces, ports, table use, insertion queue")
    p.add_argument("--card", help="card name (default: the only card, or $FASTPATH_DPU_CARD)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("rules", help="the card's installed rules")
    p.add_argument("--card", help="card name (default: the only card, or $FASTPATH_DPU_CARD)")
    p.add_argument("--format", choices=("doca", "table"), default="table",
                   help="doca: DOCA Flow pipes and entries as JSON; table: one line per entry (default)")
    p = sub.add_parser("down", help="remove cards left behind by a process that died (namespaces, pins, descriptor)")
    p.add_argument("--card", help="only this card")
    p.add_argument("--force", action="store_true", help="also remove a card whose creating process still runs")
    p = sub.add_parser("up", help="build an emulated card and keep it until interrupted")
    p.add_argument("--max-rules", type=int, default=None, help="flow table entries (default FP_DPU_MAX_RULES)")
    p.add_argument("--clients", type=int, default=4, help="client addresses to create (default 4)")
    p.add_argument("--backends", type=int, default=2, help="backend addresses to create (default 2)")


def _agent_state(name: str) -> dict[str, Any]:
    from fastpath.offload.dpu import agent_state_path

    try:
        return json.loads(agent_state_path(name).read_text())
    except (OSError, ValueError):
        return {"agent": False}


def status(card_name: str | None) -> dict[str, Any]:
    from fastpath.offload import dpu_netns
    from fastpath.offload.dpu_card import find_card

    info = find_card(card_name)
    maps = info.open_maps()
    try:
        rules, conns = len(maps.rules.keys()), len(maps.conns.keys())
        errors = maps.error_counts()
    finally:
        maps.close()
    agent = _agent_state(info.name)
    return {
        "card": info.name,
        "namespaces": {k: {"name": v, "exists": dpu_netns.exists(v)} for k, v in info.namespaces.items()},
        "vip": info.vip,
        "ports": info.ports,
        "programs": info.prog_ids,
        "pin_dir": info.pin_dir,
        "flow_table": {"used": rules, "capacity": info.max_rules},
        "connections": {"entries": conns, "capacity": info.max_conns},
        "errors": errors,
        "agent": {k: v for k, v in agent.items() if k != "entries"},
    }


def rules_doc(card_name: str | None) -> dict[str, Any]:
    from fastpath.offload.dpu_card import find_card
    from fastpath.offload.dpu_doca import document
    from fastpath.offload.dpu_flow import VipSteerPipe

    info = find_card(card_name)
    agent = _agent_state(info.name)
    pipe = VipSteerPipe(nb_flows=info.max_rules, ingress_port=info.ports["p0"]["port_id"],
                        fwd_port=info.ports["p1"]["port_id"], miss_port=info.ports["pf0hpf"]["port_id"],
                        aging_s=float(agent.get("pipe", {}).get("aging_s", VipSteerPipe.aging_s)))
    maps = info.open_maps()
    try:
        return document(info, maps, agent.get("entries", []), pipe)
    finally:
        maps.close()


def format_status(s: dict[str, Any]) -> str:
    lines = [f"card {s['card']}  VIP {s['vip']}  programs {', '.join(map(str, s['programs']))}"]
    for k, v in s["namespaces"].items():
        lines.append(f"  netns {k:5} {v['name']}{'' if v['exists'] else '  (missing)'}")
    for name, p in s["ports"].items():
        lines.append(f"  port {p['port_id']} {name:7} ifindex {p['ifindex']:<4} -> {p.get('faces', '')}")
    ft, cn = s["flow_table"], s["connections"]
    lines.append(f"  flow table  {ft['used']}/{ft['capacity']} entries; connections {cn['entries']}/{cn['capacity']}")
    lines.append("  datapath    " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
    a = s["agent"]
    if a.get("agent"):
        c = a.get("counts", {})
        lat = a.get("insert_latency_us", {})
        lines.append(f"  agent pid {a['pid']}: queue {a['queue_len']}/{a['queue_depth']}, {a['insert_rate']:g} inserts/s max; "
                     + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        lines.append(f"  insertion (decision -> in table) p50 {lat.get('p50', 0):.0f} us, p99 {lat.get('p99', 0):.0f} us over {lat.get('n', 0)}")
    else:
        lines.append("  agent       not running (start a controller with [offload] driver = \"dpu\")")
    return "\n".join(lines)


def format_rules(doc: dict[str, Any]) -> str:
    rows = [("ID", "SESSION", "CLIENT", "VIP", "BACKEND", "STATUS", "CONNS", "TO_BACKEND", "TO_CLIENT", "IDLE")]
    for e in doc["pipes"][0]["entries"]:
        m, a, q = e["match"]["outer"], e["actions"]["outer"], e["query"]
        idle = e.get("aging", {}).get("idle_sec")
        rows.append((str(e.get("entry_id", "")), e.get("session", "") or "-", m["ip4"]["src_ip"],
                     f"{m['ip4']['dst_ip']}:{m['tcp']['l4_port']['dst_port']}",
                     f"{a['ip4']['dst_ip']}:{a['tcp']['l4_port']['dst_port']}",
                     e.get("status", "").removeprefix("DOCA_FLOW_ENTRY_STATUS_"), str(q.get("connections", 0)),
                     f"{q.get('to_backend', {}).get('bytes', 0)} B", f"{q.get('to_client', {}).get('bytes', 0)} B",
                     "-" if idle is None else f"{idle:.1f}s"))
    if len(rows) == 1:
        return "no rules: the controller installs one when it learns a client's session affinity"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def up(args: argparse.Namespace) -> int:
    from fastpath.offload.dpu_card import EmulatedCard

    card = EmulatedCard(max_rules=args.max_rules, clients=args.clients, backends=args.backends)
    card.create()
    try:
        print(f"card {card.name} up: clients {', '.join(card.info.clients)} in netns {card.ns['cli']}; "
              f"VIP {card.vip} in netns {card.ns['host']}; backends {', '.join(card.info.backends)} in netns {card.ns['net']}",
              flush=True)
        print(f"run the proxy and controller with: ip netns exec {card.ns['host']} fastpath ...; Ctrl-C removes the card",
              flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        card.destroy()
    return 0


def down(args: argparse.Namespace) -> int:
    from fastpath.offload.dpu_card import all_descriptors, owner_alive, remove_described

    cards = [c for c in all_descriptors() if args.card in (None, c.name)]
    if args.card and not cards:
        print(f"fastpath dpu down: no card {args.card!r} described here", file=sys.stderr)
        return 1
    rc = 0
    for c in cards:
        if owner_alive(c) and not args.force:
            print(f"card {c.name}: process {c.owner_pid} that created it still runs; stop it (it removes the card) "
                  "or pass --force", file=sys.stderr)
            rc = 1
            continue
        gone = remove_described(c)
        print(f"card {c.name}: removed {', '.join(gone) or 'nothing (already gone)'}")
    if not cards:
        print("no cards to remove")
    return rc


def run(args: argparse.Namespace) -> int:
    from fastpath.offload.libbpf import BpfError

    action = getattr(args, "dpu_command", None)
    if action is None:
        print("usage: fastpath dpu {status,rules,up,down}", file=sys.stderr)
        return 2
    try:
        if action == "down":
            return down(args)
        if action == "up":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            return up(args)
        if action == "status":
            s = status(args.card)
            print(json.dumps(s, indent=2) if args.json else format_status(s))
            return 0
        doc = rules_doc(args.card)
        print(json.dumps(doc, indent=2) if args.format == "doca" else format_rules(doc))
        return 0
    except (LookupError, BpfError, PermissionError, OSError) as e:
        print(f"fastpath dpu {action}: {e}", file=sys.stderr)
        return 1
