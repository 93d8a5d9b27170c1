"""The card's rules as DOCA Flow pipe and entry specifications (JSON).

The document mirrors the structures an on-card agent passes to DOCA Flow:
`doca_flow_pipe_cfg` (attributes, match template, actions template, monitor,
forward and forward-on-miss), then per entry the `doca_flow_match`,
`doca_flow_actions`, `doca_flow_monitor` and `doca_flow_fwd` given to
`doca_flow_pipe_add_entry`, the entry's status and what
`doca_flow_resource_query_entry` and aging report. Its schema ships as
`fastpath/offload/schemas/doca_flow_rules.schema.json`.

The reply direction is DOCA's connection-tracking shape: each switched
connection gets an entry in `fastpath_reply_snat` (match the backend's 4-tuple,
set the source back to the VIP, forward to the clients' port).
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastpath.offload.dpu_card import CardInfo, CardMaps, ip_be, ip_str, port_be, port_host
from fastpath.offload.dpu_flow import SUCCESS, VipSteerPipe, entry_counters

SCHEMA_VERSION = 1
FULL_IP4, FULL_PORT = "255.255.255.255", 0xFFFF


def schema_path() -> Path:
    """The JSON Schema of the document, as shipped in the package."""
    return Path(str(resources.files("fastpath.offload").joinpath("schemas/doca_flow_rules.schema.json")))


def _fwd_port(port_id: int) -> dict[str, Any]:
    return {"type": "DOCA_FLOW_FWD_PORT", "port_id": port_id}


def steer_pipe_cfg(pipe: VipSteerPipe) -> dict[str, Any]:
    """doca_flow_pipe_cfg of the VIP steering pipe: changeable fields are all-ones in the templates."""
    return {
        "attr": {"name": pipe.name, "type": "DOCA_FLOW_PIPE_BASIC", "is_root": True, "nb_flows": pipe.nb_flows,
                 "domain": "DOCA_FLOW_PIPE_DOMAIN_DEFAULT"},
        "port_id": pipe.ingress_port,
        "match": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"src_ip": FULL_IP4, "dst_ip": FULL_IP4},
                            "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                            "tcp": {"flags": ["DOCA_FLOW_MATCH_TCP_FLAG_SYN"], "l4_port": {"dst_port": FULL_PORT}}}},
        "actions": [{"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"dst_ip": FULL_IP4},
                               "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                               "tcp": {"l4_port": {"dst_port": FULL_PORT}}}}],
        "monitor": {"counter_type": "DOCA_FLOW_RESOURCE_TYPE_NON_SHARED", "aging_sec": int(pipe.aging_s)},
        "fwd": _fwd_port(pipe.fwd_port),
        "fwd_miss": _fwd_port(pipe.miss_port),
    }


def reply_pipe_cfg(pipe: VipSteerPipe, nb_flows: int) -> dict[str, Any]:
    return {
        "attr": {"name": "fastpath_reply_snat", "type": "DOCA_FLOW_PIPE_BASIC", "is_root": True, "nb_flows": nb_flows,
                 "domain": "DOCA_FLOW_PIPE_DOMAIN_DEFAULT"},
        "port_id": pipe.fwd_port,
        "match": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"src_ip": FULL_IP4, "dst_ip": FULL_IP4},
                            "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                            "tcp": {"l4_port": {"src_port": FULL_PORT, "dst_port": FULL_PORT}}}},
        "actions": [{"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"src_ip": FULL_IP4},
                               "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                               "tcp": {"l4_port": {"src_port": FULL_PORT}}}}],
        "monitor": {"counter_type": "DOCA_FLOW_RESOURCE_TYPE_NON_SHARED", "aging_sec": 0},
        "fwd": _fwd_port(pipe.ingress_port),
        "fwd_miss": _fwd_port(pipe.miss_port),
    }


def _steer_entry(meta: dict[str, Any], value, pipe: VipSteerPipe, now_ns: int) -> dict[str, Any]:
    c = entry_counters(value)
    last = max(c["last_ns"], int(meta.get("inserted_ns") or 0))
    return {
        "entry_id": int(meta["entry_id"]),
        "session": meta.get("session", ""),
        "status": meta.get("status", SUCCESS),
        "reason": meta.get("reason", ""),
        "match": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"src_ip": meta["client"], "dst_ip": meta["vip"]},
                            "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                            "tcp": {"flags": ["DOCA_FLOW_MATCH_TCP_FLAG_SYN"],
                                    "l4_port": {"dst_port": int(meta["vip_port"])}}}},
        "actions": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"dst_ip": meta["backend"]},
                              "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                              "tcp": {"l4_port": {"dst_port": int(meta["backend_port"])}}}},
        "monitor": {"counter_type": "DOCA_FLOW_RESOURCE_TYPE_NON_SHARED", "aging_sec": int(meta.get("aging_s", pipe.aging_s))},
        "fwd": _fwd_port(pipe.fwd_port),
        "query": {"total_pkts": c["packets_to_backend"] + c["packets_to_client"],
                  "total_bytes": c["bytes_to_backend"] + c["bytes_to_client"],
                  "to_backend": {"pkts": c["packets_to_backend"], "bytes": c["bytes_to_backend"]},
                  "to_client": {"pkts": c["packets_to_client"], "bytes": c["bytes_to_client"]},
                  "connections": c["conns"]},
        "aging": {"idle_sec": round(max(0, now_ns - last) / 1e9, 3) if last else None},
        "timing": {"decided_ns": int(meta.get("decided_ns") or 0), "inserted_ns": int(meta.get("inserted_ns") or 0),
                   "first_switched_ns": c["first_ns"]},
    }


def document(info: CardInfo, maps: CardMaps, entries_meta: list[dict[str, Any]], pipe: VipSteerPipe) -> dict[str, Any]:
    """The installed rules of one card as DOCA Flow pipes and entries.

    `entries_meta` is what the driver knows of its entries (session, status,
    times); entries found in the card's table without it (another driver's)
    are listed from the table alone.
    """
    now_ns = time.monotonic_ns()
    L = maps.layout
    Match = L.structs["fp_dpu_match"]
    table = {(int(k.client_ip4), int(k.vip_ip4), int(k.vip_port)): v for k, v in maps.rules.items()}
    entries, seen = [], set()
    for m in entries_meta:
        key = (ip_be(m["client"]), ip_be(m["vip"]), port_be(int(m["vip_port"])))
        value = table.get(key) if m.get("status") == SUCCESS else None
        if m.get("status") == SUCCESS:
            seen.add(key)
        entries.append(_steer_entry(m, value, pipe, now_ns))
    for key, v in table.items():
        if key in seen:
            continue
        k = Match(client_ip4=key[0], vip_ip4=key[1], vip_port=key[2])
        meta = {"entry_id": int(v.entry_id), "client": ip_str(k.client_ip4), "vip": ip_str(k.vip_ip4),
                "vip_port": port_host(k.vip_port), "backend": ip_str(v.backend_ip4),
                "backend_port": port_host(v.backend_port), "status": SUCCESS}
        entries.append(_steer_entry(meta, v, pipe, now_ns))
    replies = []
    for k, v in maps.conns.items():
        if int(v.dir) != L.int("FP_DIR_TO_CLIENT"):
            continue
        replies.append({
            "match": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4",
                                "ip4": {"src_ip": ip_str(k.src_ip4), "dst_ip": ip_str(k.dst_ip4)},
                                "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                                "tcp": {"l4_port": {"src_port": port_host(k.src_port), "dst_port": port_host(k.dst_port)}}}},
            "actions": {"outer": {"l3_type": "DOCA_FLOW_L3_TYPE_IP4", "ip4": {"src_ip": ip_str(v.new_ip4)},
                                  "l4_type_ext": "DOCA_FLOW_L4_TYPE_EXT_TCP",
                                  "tcp": {"l4_port": {"src_port": port_host(v.new_port)}}}},
            "fwd": _fwd_port(pipe.ingress_port),
            "query": {"total_pkts": int(v.packets), "total_bytes": int(v.bytes)},
            "aging": {"idle_sec": round(max(0, now_ns - int(v.last_ns)) / 1e9, 3)},
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "card": info.name,
        "ports": [{"port_id": p["port_id"], "name": name, "faces": p.get("faces", "")} for name, p in info.ports.items()],
        "pipes": [
            {"cfg": steer_pipe_cfg(pipe), "entries": entries},
            {"cfg": reply_pipe_cfg(pipe, info.max_conns // 2), "entries": replies},
        ],
    }
