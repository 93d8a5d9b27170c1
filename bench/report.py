"""The run's summary: every path's figures relative to nginx's in the same run.

Added latency is a path's p50 minus the direct path's p50 (what the proxy
adds); the ratio divides that by nginx's added latency. CPU per message is
the proxy process's utime+stime per message; the ratio divides by nginx's.
Ratios within one run are what to compare: absolute figures move with the
machine's load.
"""
from __future__ import annotations

from typing import Any


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["path"], r["scenario"], r["metadata"]): r for r in rows if r.get("type") == "path"}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def summary_vs_nginx(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (path, scenario, metadata): added p50/p99 latency, CPU per message, and each ÷ nginx's."""
    idx = _index(rows)
    out = []
    for (path, scenario, md), r in idx.items():
        direct = idx.get(("direct", scenario, md))
        nginx = idx.get(("nginx", scenario, md))

        def added(row: dict[str, Any] | None, key: str) -> float | None:
            if row is None or direct is None or row.get(key) is None or direct.get(key) is None:
                return None
            return round(row[key] - direct[key], 1)

        a50, a99 = added(r, "p50_us"), added(r, "p99_us")
        n50 = added(nginx, "p50_us")
        cpu = r.get("proxy_cpu_us_per_msg")
        ncpu = nginx.get("proxy_cpu_us_per_msg") if nginx else None
        out.append({
            "path": path, "scenario": scenario, "metadata": md,
            "p50_us": r.get("p50_us"), "added_p50_us": a50, "added_p99_us": a99,
            "added_p50_vs_nginx": _ratio(a50, n50) if path != "direct" else None,
            "proxy_cpu_us_per_msg": cpu,
            "cpu_per_msg_vs_nginx": _ratio(cpu, ncpu),
            "msgs_per_s": r.get("msgs_per_s"),
            "all_cpu_us_per_msg": r.get("all_cpu_us_per_msg"),
            "errors": r.get("errors", 0),
        })
    order = {p: i for i, p in enumerate(dict.fromkeys(r["path"] for r in rows))}
    out.sort(key=lambda x: (x["scenario"], x["metadata"], order.get(x["path"], 99)))
    return out


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def summary_text(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    lines = [
        f"fastpath bench {result.get('started', '')}: {m.get('cores')} cores, Linux {m.get('kernel')}, "
        f"Python {m.get('python')}, {result.get('settings', {}).get('rounds_run')} rounds, {result.get('duration_s')} s",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()),
    ]
    for p in result.get("paths", []):
        if not p.get("available"):
            lines.append(f"  {p['name']}: unavailable — {p.get('reason', '')[:200]}")
    lines.append("")
    lines.append("Latency: unary = whole call, stream = time to first message (µs, medians over rounds).")
    lines.append("cpu/msg = proxy CPU µs per message (/proc schedstat; ticks of /proc/<pid>/stat in results.json);")
    lines.append("all cpu = client+backend+proxy µs per message,")
    lines.append("which also catches kernel work a splice moves out of the proxy; xN = ratio to nginx in this run.")
    hdr = f"{'scenario':11s} {'metadata':8s} {'path':15s} {'p50':>7s} {'p99':>7s} {'added':>7s} {'÷nginx':>7s} {'cpu/msg':>8s} {'÷nginx':>7s} {'all cpu':>8s} {'msgs/s':>8s}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    rows = _index(result.get("rows", []))
    last = None
    for s in result.get("summary_vs_nginx", []):
        key = (s["scenario"], s["metadata"])
        if last is not None and key != last:
            lines.append("")
        last = key
        r = rows.get((s["path"], s["scenario"], s["metadata"]), {})
        err = f"  ({s['errors']} errors)" if s.get("errors") else ""
        lines.append(
            f"{s['scenario']:11s} {s['metadata']:8s} {s['path']:15s} {_f(r.get('p50_us')):>7s} {_f(r.get('p99_us')):>7s} "
            f"{_f(s['added_p50_us'], '{:+.0f}'):>7s} {_f(s['added_p50_vs_nginx'], 'x{:.2f}'):>7s} "
            f"{_f(s['proxy_cpu_us_per_msg'], '{:.1f}'):>8s} {_f(s['cpu_per_msg_vs_nginx'], 'x{:.2f}'):>7s} "
            f"{_f(s.get('all_cpu_us_per_msg'), '{:.0f}'):>8s} "
            f"{_f(s['msgs_per_s']):>8s}{err}")
    lines += _extras_text(result)
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> list[str]:
    """Rows as a fixed-width table; cols = (key, heading, format)."""
    def cell(v: Any, fmt: str) -> str:
        if v is None:
            return "-"
        return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    texts = [[cell(r.get(k), fmt) for k, _, fmt in cols] for r in rows]
    widths = [max([len(h)] + [len(t[i]) for t in texts]) for i, (_, h, _) in enumerate(cols)]
    numeric = [all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows) for k, _, _ in cols]

    def line(cells: list[str]) -> str:
        return "  " + " ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return [line([h for _, h, _ in cols])] + [line(t) for t in texts]


def _extras_text(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    pa = result.get("paired") or {}
    lines.append("")
    if pa.get("rows"):
        pairs = list(dict.fromkeys((r["a"], r["b"]) for r in pa["rows"]))  # one table per pair of sides, in order
        for a, b in pairs:
            what = " (the floor: a minimal uvloop byte relay)" if b == "relay" else ""
            lines.append(f"paired ({a} and {b} side by side on one backend, calls alternated; CPU µs per call or "
                         f"message, median of per-round ratios){what}:")
            rows = [r for r in pa["rows"] if (r["a"], r["b"]) == (a, b)]
            lines += _table(rows, [("scenario", "scenario", "{}"), ("metadata", "metadata", "{}"),
                                   ("a_cpu_us_per_msg", a, "{:.1f}"), ("b_cpu_us_per_msg", b, "{:.1f}"),
                                   ("ratio_b_over_a", f"{b}/{a}", "{:.2f}"), ("ratio_min", "min", "{:.2f}"),
                                   ("ratio_max", "max", "{:.2f}"), ("a_p50_us", f"{a} p50", "{:.0f}"),
                                   ("b_p50_us", f"{b} p50", "{:.0f}")])
    else:
        lines.append(f"paired: {pa.get('note') or 'not available'}")
    rc = result.get("router_cost") or {}
    lines.append("")
    if rc.get("rows"):
        rounds = rc["rows"][0].get("rounds", 1)
        lines.append(f"router decision cost (route(), µs; medians of {rounds} interleaved rounds):")
        lines += _table(rc["rows"], [("backends", "backends", "{}"), ("constraints", "constraints", "{}"),
                                     ("p50_us", "p50", "{:.1f}"), ("p99_us", "p99", "{:.1f}"),
                                     ("routed_fraction", "routed", "{:.2f}")])
    else:
        lines.append(f"router cost: {rc.get('note') or 'not available'}")
    sp = result.get("splice") or {}
    lines.append("")
    if sp.get("rows"):
        rt = [r for r in sp["rows"] if r.get("kind") == "round_trip"]
        sw = [r for r in sp["rows"] if r.get("kind") == "switching"]
        other = [r for r in sp["rows"] if r.get("kind") not in ("round_trip", "switching")]
        if rt:
            lines.append("splice bench (64 B round trips, µs; relay CPU per message):")
            lines += _table(rt, [("path", "path", "{}"), ("concurrency", "conc", "{}"), ("rtt_p50_us", "p50", "{:.1f}"),
                                 ("rtt_p99_us", "p99", "{:.1f}"), ("msgs_per_s", "msgs/s", "{:.0f}"),
                                 ("relay_cpu_us_per_msg", "relay cpu", "{:.2f}")])
        for r in sw:
            lines.append(f"  switching: splice call p50 {_f(r.get('splice_call_p50_us'), '{:.0f}')} µs, first byte moved by "
                         f"the kernel p50 {_f(r.get('first_kernel_byte_p50_us'), '{:.0f}')} µs "
                         f"(p99 {_f(r.get('first_kernel_byte_p99_us'), '{:.0f}')})")
        for r in other[:10]:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in r.items() if not isinstance(v, (list, dict)))[:200])
    else:
        lines.append(f"splice: {sp.get('note') or 'not available'}")
    fl = result.get("fleet") or {}
    lines.append("")
    if fl.get("rows"):
        slo = fl["rows"][0].get("slo_ttft_ms")
        lines.append(f"fleet scenarios (same seeded trace per policy; TTFT at the client, ms; SLO {slo} ms):")
        lines += _table(fl["rows"], [("layout", "layout", "{}"), ("policy", "policy", "{}"),
                                     ("ttft_p50_ms", "ttft p50", "{:.0f}"), ("ttft_p99_ms", "ttft p99", "{:.0f}"),
                                     ("cost_per_1k_tokens", "cost/1k", "{:.3f}"), ("shed", "shed", "{}"),
                                     ("within_slo_share", "in SLO", "{:.2f}"), ("requests", "requests", "{}"),
                                     ("cache_hit_share", "cache hit", "{:.2f}"),
                                     ("substitute_share", "by substitute", "{:.2f}")])
    else:
        lines.append(f"fleet scenarios: {fl.get('note') or 'not available'}")
    return lines
