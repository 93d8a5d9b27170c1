"""PNG plots of a benchmark run (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _path_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result.get("rows", []) if r.get("type") == "path"]


def latency_cdfs(result: dict[str, Any], out: Path) -> Path | None:
    """One panel per scenario (repeated and unique metadata overlaid): latency CDF per path."""
    rows = _path_rows(result)
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 3.8), squeeze=False)
    paths = list(dict.fromkeys(r["path"] for r in rows))
    colors = {p: f"C{i}" for i, p in enumerate(paths)}
    for ax, sc in zip(axes[0], scenarios):
        for r in rows:
            if r["scenario"] != sc or not r.get("latency_cdf_us"):
                continue
            qs = [q for q, _ in r["latency_cdf_us"]]
            vs = [v for _, v in r["latency_cdf_us"]]
            ax.plot(vs, [q / 100 for q in qs], color=colors[r["path"]], linestyle="-" if r["metadata"] == "repeated" else "--",
                    label=f"{r['path']} ({r['metadata']})")
        ax.set_xscale("log")
        ax.set_title(f"{sc}: {'call latency' if sc.startswith('unary') else 'time to first message'}", fontsize=9)
        ax.set_xlabel("µs")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("fraction of calls")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    return save(fig, out / "latency_cdf.png")


def cpu_per_message(result: dict[str, Any], out: Path) -> Path | None:
    """Proxy CPU µs per message, grouped by scenario and metadata mode, one bar per path."""
    rows = [r for r in _path_rows(result) if r.get("proxy_cpu_us_per_msg") is not None]
    if not rows:
        return None
    groups = list(dict.fromkeys((r["scenario"], r["metadata"]) for r in rows))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    idx = {(r["path"], r["scenario"], r["metadata"]): r["proxy_cpu_us_per_msg"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / max(1, len(paths))
    for i, p in enumerate(paths):
        xs = [g + i * width for g in range(len(groups))]
        ys = [idx.get((p, sc, md), 0) or 0 for sc, md in groups]
        ax.bar(xs, ys, width, label=p, color=f"C{i + 1}")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{sc}\n{md}" for sc, md in groups], fontsize=7)
    ax.set_ylabel("proxy CPU µs per message")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, out / "cpu_per_message.png")


def _find(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if n in row:
            return row[n]
    return None


def router_cost(result: dict[str, Any], out: Path) -> Path | None:
    """Decision time vs fleet size from router_cost rows (whatever constraint sets they carry)."""
    rows = (result.get("router_cost") or {}).get("rows") or []
    pts: dict[str, list[tuple[float, float, float | None]]] = {}
    for r in rows:
        if not isinstance(r, dict):
            continue
        size = _find(r, "fleet_size", "size", "backends", "n_backends")
        p50 = _find(r, "p50_us", "decision_p50_us", "p50")
        p99 = _find(r, "p99_us", "decision_p99_us", "p99")
        if size is None or p50 is None:
            continue
        c = _find(r, "constraints", "case", "label", "variant")
        label = "route()" if c is None else (f"{c} constraints" if isinstance(c, int) else str(c))
        pts.setdefault(label, []).append((float(size), float(p50), float(p99) if p99 is not None else None))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, ps) in enumerate(pts.items()):
        ps.sort()
        ax.plot([p[0] for p in ps], [p[1] for p in ps], marker="o", color=f"C{i}", label=f"{label} p50")
        if all(p[2] is not None for p in ps):
            ax.plot([p[0] for p in ps], [p[2] for p in ps], marker=".", linestyle=":", color=f"C{i}", label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("backends in the fleet")
    ax.set_ylabel("decision time µs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    return save(fig, out / "router_cost.png")


def fleet_policies(result: dict[str, Any], out: Path) -> Path | None:
    """TTFT p50/p99 and cost per 1k tokens per policy and fleet layout."""
    rows = [r for r in (result.get("fleet") or {}).get("rows") or []
            if r.get("ttft_p50_ms") is not None and r.get("layout") not in ("chat", "substitute", "hedge", "priority-burst")]
    if not rows:
        return None
    labels = [f"{r['layout']}\n{r['policy']}" for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(rows)), 4))
    xs = range(len(rows))
    a1.bar([x - 0.2 for x in xs], [r["ttft_p50_ms"] for r in rows], 0.4, label="TTFT p50")
    a1.bar([x + 0.2 for x in xs], [r.get("ttft_p99_ms") or 0 for r in rows], 0.4, label="TTFT p99")
    a1.set_ylabel("ms")
    a1.legend(fontsize=7)
    a2.bar(list(xs), [r.get("cost_per_1k_tokens") or 0 for r in rows], 0.6, color="C2")
    a2.set_ylabel("cost per 1k tokens")
    for a in (a1, a2):
        a.set_xticks(list(xs))
        a.set_xticklabels(labels, fontsize=6, rotation=60, ha="right")
        a.grid(True, axis="y", alpha=0.3)
    return save(fig, out / "fleet_policies.png")


def chat_prefix(result: dict[str, Any], out: Path) -> Path | None:
    """The chat scenario: cache-hit share, TTFT p50/p99 and cost per routing policy, side by side."""
    rows = [r for r in (result.get("fleet") or {}).get("rows") or []
            if r.get("layout") == "chat" and r.get("ttft_p50_ms") is not None]
    if not rows:
        return None
    labels = [r["policy"] for r in rows]
    xs = list(range(len(rows)))
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(13, 4))
    a0.bar(xs, [r.get("cache_hit_share") or 0 for r in rows], 0.6, color="C4")
    a0.set_ylabel("prompt blocks found in the site's KV cache")
    a0.set_ylim(0, 1)
    a1.bar([x - 0.2 for x in xs], [r["ttft_p50_ms"] for r in rows], 0.4, label="TTFT p50")
    a1.bar([x + 0.2 for x in xs], [r.get("ttft_p99_ms") or 0 for r in rows], 0.4, label="TTFT p99")
    a1.set_ylabel("ms at the client")
    a1.legend(fontsize=7)
    a2.bar(xs, [r.get("cost_per_1k_tokens") or 0 for r in rows], 0.6, color="C2")
    a2.set_ylabel("cost per 1k tokens")
    for a in (a0, a1, a2):
        a.set_xticks(xs)
        a.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
        a.grid(True, axis="y", alpha=0.3)
    fig.suptitle("chat: multi-turn conversations over shared system prompts, sites with a prefix KV cache", fontsize=9)
    return save(fig, out / "chat_prefix.png")


def substitute_region(result: dict[str, Any], out: Path) -> Path | None:
    """The substitute scenario: TTFT p50/p99, TTFT p50 per client region, and cost, exact model vs substitutes
    allowed, with the share of calls a substitute served."""
    rows = [r for r in (result.get("fleet") or {}).get("rows") or []
            if r.get("layout") == "substitute" and r.get("ttft_p50_ms") is not None]
    if not rows:
        return None
    labels = [r["policy"].replace("+", "\n+") for r in rows]
    xs = list(range(len(rows)))
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(13, 4))
    a0.bar([x - 0.2 for x in xs], [r["ttft_p50_ms"] for r in rows], 0.4, label="TTFT p50")
    a0.bar([x + 0.2 for x in xs], [r.get("ttft_p99_ms") or 0 for r in rows], 0.4, label="TTFT p99")
    a0.set_ylabel("ms at the client, all regions")
    a0.legend(fontsize=7)
    regions = sorted({g for r in rows for g in (r.get("ttft_p50_by_region_ms") or {})})
    width = 0.8 / max(1, len(regions))
    for k, g in enumerate(regions):
        a1.bar([x - 0.4 + width * (k + 0.5) for x in xs],
               [(r.get("ttft_p50_by_region_ms") or {}).get(g) or 0 for r in rows], width, label=f"from {g}")
    a1.set_ylabel("TTFT p50 by client region, ms")
    a1.legend(fontsize=7)
    a2.bar(xs, [r.get("cost_per_1k_tokens") or 0 for r in rows], 0.6, color="C2")
    a2.set_ylabel("cost per 1k tokens")
    for x, r in zip(xs, rows):
        share = r.get("substitute_share")
        models = ", ".join(f"{m} {n}" for m, n in (r.get("served_models") or {}).items())
        a2.annotate(f"served by a substitute: {'?' if share is None else f'{share:.0%}'}\n{models}", (x, 0), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=6)
    for a in (a0, a1, a2):
        a.set_xticks(xs)
        a.set_xticklabels(labels, fontsize=7)
        a.grid(True, axis="y", alpha=0.3)
    requested = rows[0].get("requested_model", "the requested model")
    fig.suptitle(f"substitute: requests for {requested} from regions without a site for it, exact model vs a nearer "
                 "substitute (x-fastpath-allow-substitute), through the proxy", fontsize=9)
    return save(fig, out / "substitute_region.png")


def priority_burst(result: dict[str, Any], out: Path) -> Path | None:
    """The priority burst: per-call TTFT over time by priority with the shed calls marked (admission on),
    and high-priority TTFT p99 and low-priority shed share with admission control on and off, one run."""
    rows = [r for r in (result.get("fleet") or {}).get("rows") or [] if r.get("layout") == "priority-burst"]
    if not rows:
        return None
    timeline = next((r["timeline"] for r in rows if r.get("timeline")), [])
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    for prio, color, label in ((5, "C0", "high (priority 5)"), (0, "C1", "low (priority 0)")):
        served = [(t, ttft) for t, p, ttft, shed in timeline if p == prio and ttft is not None]
        shed = [t for t, p, _, s in timeline if p == prio and s]
        if served:
            a0.scatter([x for x, _ in served], [y for _, y in served], s=6, color=color, label=f"{label}: TTFT")
        if shed:
            a0.scatter(shed, [1.0] * len(shed), s=14, marker="x", color=color, alpha=0.6,
                       label=f"{label}: shed (pushback)")
    slo = {r["priority"]: r["slo_ttft_ms"] for r in rows}
    for prio, color in ((5, "C0"), (0, "C1")):
        if prio in slo:
            a0.axhline(slo[prio], color=color, ls=":", lw=1)
    a0.set_yscale("log")
    a0.set_xlabel("seconds into the trace (low-priority burst in the middle third)")
    a0.set_ylabel("TTFT at the client, ms (x: shed)")
    a0.set_title("admission control on", fontsize=9)
    a0.legend(fontsize=6, loc="upper left")
    modes = [m for m in ("admission", "no-admission") if any(r["mode"] == m for r in rows)]

    def get(mode: str, prio: int, key: str) -> float:
        r = next((r for r in rows if r["mode"] == mode and r["priority"] == prio), {})
        return r.get(key) or 0.0

    xs = list(range(len(modes)))
    a1.bar([x - 0.2 for x in xs], [get(m, 5, "ttft_p50_ms") for m in modes], 0.4, label="p50", color="C0", alpha=0.6)
    a1.bar([x + 0.2 for x in xs], [get(m, 5, "ttft_p99_ms") for m in modes], 0.4, label="p99", color="C0")
    if 5 in slo:
        a1.axhline(slo[5], color="k", ls=":", lw=1, label="SLO")
    a1.set_ylabel("high-priority TTFT, ms")
    a1.legend(fontsize=7)
    a2.bar([x - 0.2 for x in xs], [get(m, 0, "shed_share") for m in modes], 0.4, label="low shed share", color="C1")
    a2.bar([x + 0.2 for x in xs], [get(m, 0, "within_slo_share") for m in modes], 0.4, label="low within SLO",
           color="C2")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.set(xticks=xs, xticklabels=modes)
        a.grid(True, axis="y", alpha=0.3)
    fig.suptitle("priority burst: two priorities on 12 batch slots, low priority bursting past capacity", fontsize=9)
    return save(fig, out / "priority_burst.png")


def save(fig: Any, path: Path) -> Path:
    """Lays out, writes (110 dpi) and closes `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rows(plot: Callable[[dict[str, Any], Path], Path | None], rows: list[dict[str, Any]], out_dir: str) -> Path | None:
    """One scenario's plot from its rows alone (a scenario module run on its own), into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return plot({"fleet": {"rows": rows}}, out)


def offload_paths(result: dict[str, Any], out: Path) -> Path | None:
    """The splice section's byte paths at one connection: p50/p99 round trip and the relay's CPU per message.

    Loopback paths (direct, Python relay, kernel splice, sk_msg) beside the
    DPU card paths (direct through the card, proxy through the card, switched
    by the card), one run.
    """
    rows = [r for r in (result.get("splice") or {}).get("rows", [])
            if r.get("kind") == "round_trip" and r.get("concurrency") == 1 and "rtt_p50_us" in r]
    if not rows:
        return None
    names = [r["path"] for r in rows]
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(rows) * 2), 4))
    xs = range(len(rows))
    lat.bar([x - 0.2 for x in xs], [r["rtt_p50_us"] for r in rows], 0.4, label="p50", color="C0")
    lat.bar([x + 0.2 for x in xs], [r["rtt_p99_us"] for r in rows], 0.4, label="p99", color="C1")
    lat.set_ylabel("64 B round trip, µs (1 connection)")
    lat.set_yscale("log")
    cpu.bar(list(xs), [r["relay_cpu_us_per_msg"] for r in rows], 0.6,
            color=["C2" if n.startswith("fastpath-dpu") else "C4" for n in names])
    cpu.set_ylabel("relay/proxy CPU µs per message")
    for ax in (lat, cpu):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    lat.legend(fontsize=7)
    return save(fig, out / "offload_paths.png")


def write_all(result: dict[str, Any], out: Path) -> list[str]:
    """Writes every plot the run has data for; returns their file names."""
    from .hedge_scenario import hedge_plot

    made = [f(result, out) for f in (latency_cdfs, cpu_per_message, router_cost, fleet_policies, chat_prefix,
                                     substitute_region, offload_paths, hedge_plot, priority_burst)]
    return [p.name for p in made if p is not None]
