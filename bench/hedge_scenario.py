"""Hedging scenario: TTFT with and without hedging when one site is intermittently slow to start.

The simulated us-east sites serve one seeded Poisson trace of streaming calls
(ModelStreamInfer, llama-3-8b, clients in us-east, SLO 300 ms) while the cheapest stalls a
share of its calls before the first token (the sim's `stall` fault). Two
`fastpath proxy` processes (one worker, no controller: the router learns
from its own observations) run side by side in front of the same fleet, one
with [router.hedge] off and one with it on (after = "auto": the request's
SLO or 3 x the predicted TTFT, whichever comes first; 10 % budget). The
trace is replayed once through each, after a short warm-up trace through
both (connections open, first observations made; not counted). Rows: TTFT p50/p99 at the client, the
share of calls hedged (the proxy's fastpath_hedges_total{outcome="sent"} over
the calls), hedges the budget refused, cost per 1k tokens, requests per site.

`measure_hedge(quick)` returns the rows; `python -m fastpath.bench.hedge_scenario
[--quick] [--plot DIR]` prints them and draws hedge_ttft.png.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .fleet_scenarios import PROXY_PREFIX, Arrival, _free_base, poisson_times, replay

SITES = ("use1-a100", "use1-l4", "usw2-h100")  # the sites serving llama-3-8b nearest to us-east
SLOW_SITE = "use1-l4"  # the cheapest: cost-first routing keeps choosing it
STALL = "mode=stall&share=0.08&stall_ms=1500"  # below the hedge budget (10 %): what hedging is for
MODEL = "llama-3-8b"
REGION = "us-east"
# Two routings. "cost-first, SLO": the embedded cost-first policy and a 300 ms TTFT SLO, so the router
# reacts to what it observes (a site predicted to miss the SLO is ranked after those that meet it).
# "cost-only, no SLO": TTFT neither weighed nor promised (capacity still spreads load), so traffic stays
# on the cheapest site, as cache or session affinity would hold it there: the effect of hedging alone.
POLICIES = {"cost-first": None, "cost-only": {"ttft": 0.0, "cost": 0.6, "affinity": 0.0, "capacity": 0.25,
                                              "proximity": 0.15}}
ROUTINGS = {"cost-first, SLO": ("cost-first", 300.0), "cost-only, no SLO": ("cost-only", 0.0)}
HEDGE = {"enabled": True, "after": "auto", "factor": 3.0, "min_ms": 50.0, "budget_percent": 10.0,
         "budget_burst": 5.0}


def make_hedge_trace(seed: int, duration_s: float, rate: float, max_tokens: int = 4) -> list[Arrival]:
    rng = random.Random(seed)
    vocab = ("route", "token", "cache", "power", "region", "batch", "prefill", "queue")
    return [Arrival(t, REGION, MODEL, max_tokens, tuple(rng.choice(vocab) for _ in range(12)))
            for t in poisson_times(rng, duration_s, rate)]


def _configs(base_port: int, tmp: Path) -> tuple[Any, dict[str, tuple[Path, Any]]]:
    """The fleet's config, and one proxy config file per variant (own listen and metrics ports)."""
    from fastpath.config import load_config, parse_config, with_ports

    base = load_config()
    raw = dict(base.raw)
    raw["backends"] = [b for b in raw["backends"] if b["name"] in SITES]
    cfg = with_ports(parse_config(raw, "hedge scenario"), base_port)
    files = {}
    port = base_port + 3 + 2 * len(cfg.backends)
    for k, (name, hedge) in enumerate((("no hedging", {"enabled": False}), ("hedging", HEDGE))):
        data = json.loads(json.dumps(cfg.raw))
        data["proxy"]["listen"] = f"127.0.0.1:{port + 2 * k}"
        data["proxy"]["metrics_listen"] = f"127.0.0.1:{port + 2 * k + 1}"
        data.setdefault("router", {})["hedge"] = hedge
        for pname, weights in POLICIES.items():
            if weights is not None:
                data.setdefault("policies", {})[pname] = weights
        pcfg = parse_config(data, name)
        files[name] = (pcfg.write(tmp / f"{name.replace(' ', '-')}.toml"), pcfg)
    return cfg, files


def _counters(metrics_listen: str) -> tuple[float, float]:
    """(hedges sent, hedges refused by the budget) from the proxy's /metrics, summed over workers."""
    text = urllib.request.urlopen(f"http://{metrics_listen}/metrics", timeout=5).read().decode()

    def total(family: str, label: str) -> float:
        return sum(float(m.group(1)) for m in re.finditer(r"^%s\{[^}]*%s[^}]*\} (\S+)" % (family, re.escape(label)),
                                                          text, re.M))

    return total("fastpath_hedges_total", 'outcome="sent"'), total("fastpath_budget_refusals_total", 'budget="hedge"')


def _start_proxy(path: Path) -> subprocess.Popen:
    from fastpath.launch import fastpath_argv

    proc = subprocess.Popen(fastpath_argv("proxy", "--config", str(path), "--no-controller", "--workers", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"proxy {path.name} did not start: {line.strip()!r}")
    return proc


def measure_hedge(quick: bool = False, seed: int = 7, progress: bool = False) -> list[dict[str, Any]]:
    """One row per variant ("no hedging", "hedging") over the same seeded trace."""
    import tempfile

    from fastpath.launch import stop_process
    from fastpath.sim.fleet import FleetProcess

    duration = 3.0 if quick else 15.0
    trace = make_hedge_trace(seed, duration, rate=15.0)  # within what the cheapest site alone can serve
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fastpath-hedge-") as tmp:
        cfg, files = _configs(_free_base(3 + 2 * len(SITES) + 4), Path(tmp))
        t0 = time.monotonic()
        with FleetProcess(cfg, faults={SLOW_SITE: STALL}):
            procs = {name: _start_proxy(path) for name, (path, _) in files.items()}
            try:
                if progress:
                    print(f"[hedge] fleet and proxies up in {time.monotonic() - t0:.1f} s; {SLOW_SITE} {STALL}; "
                          f"{len(trace)} arrivals per variant", file=sys.stderr, flush=True)
                for pi, (routing, (pname, slo)) in enumerate(ROUTINGS.items()):
                    policy = PROXY_PREFIX + pname
                    warm = make_hedge_trace(seed + 1 + pi, 1.0, rate=15.0)
                    before = {}
                    for k, (name, (_, pcfg)) in enumerate(files.items()):  # connections up, first observations
                        asyncio.run(replay(cfg, warm, policy, slo, deadline_s=10.0, tag=f"warm{pi}{k}s{seed}",
                                           proxy=pcfg.proxy.listen))
                        before[name] = _counters(pcfg.proxy.metrics_listen)
                    time.sleep(1.6)  # stalled warm-up calls finish
                    for k, (name, (_, pcfg)) in enumerate(files.items()):
                        row = asyncio.run(replay(cfg, trace, policy, slo, deadline_s=10.0,
                                                 tag=f"hedge{pi}{k}s{seed}", proxy=pcfg.proxy.listen))
                        sent, refused = (a - b for a, b in zip(_counters(pcfg.proxy.metrics_listen), before[name]))
                        row.update(layout="hedge", policy=f"{routing}, {name}", routing=routing, variant=name, seed=seed,
                                   trace_duration_s=duration, slow_site=SLOW_SITE, fault=STALL, hedged=int(sent),
                                   hedges_refused_by_budget=int(refused),
                                   hedged_share=round(sent / row["requests"], 4) if row["requests"] else None)
                        rows.append(row)
                        if progress:
                            print(f"[hedge] {row['policy']:32s} ttft p50 {row['ttft_p50_ms']} p99 {row['ttft_p99_ms']} "
                                  f"ms, cost/1k {row['cost_per_1k_tokens']}, hedged {row['hedged_share']} "
                                  f"(budget refused {int(refused)}), shed {row['shed']}, by site "
                                  f"{row['requests_by_site']}", file=sys.stderr, flush=True)
                        time.sleep(1.6)  # let the stalled calls of this variant drain
            finally:
                for proc in procs.values():
                    stop_process(proc)
    return rows


def hedge_plot(result: dict[str, Any], out: Path) -> Path | None:
    """TTFT p50/p99 with and without hedging, and the share of calls hedged, side by side."""
    rows = [r for r in (result.get("fleet") or {}).get("rows") or []
            if r.get("layout") == "hedge" and r.get("ttft_p50_ms") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["policy"] for r in rows]
    xs = list(range(len(rows)))
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(14, 4))
    a0.bar([x - 0.2 for x in xs], [r["ttft_p50_ms"] for r in rows], 0.4, label="TTFT p50")
    a0.bar([x + 0.2 for x in xs], [r.get("ttft_p99_ms") or 0 for r in rows], 0.4, label="TTFT p99")
    a0.set_ylabel("ms at the client")
    a0.legend(fontsize=7)
    a1.bar(xs, [r.get("hedged_share") or 0 for r in rows], 0.6, color="C3")
    a1.set_ylabel("share of calls hedged")
    a1.set_ylim(0, max(0.2, max(r.get("hedged_share") or 0 for r in rows) * 1.3))
    a2.bar(xs, [r.get("cost_per_1k_tokens") or 0 for r in rows], 0.6, color="C2")
    a2.set_ylabel("cost per 1k tokens")
    for a in (a0, a1, a2):
        a.set_xticks(xs)
        a.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")
        a.grid(True, axis="y", alpha=0.3)
    r0 = rows[0]
    fig.suptitle(f"{r0.get('slow_site')} stalls ({r0.get('fault')}); {r0['requests']} streaming calls per variant",
                 fontsize=9)
    from .plots import save

    return save(fig, out / "hedge_ttft.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.hedge_scenario", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 3 s trace")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--plot", metavar="DIR", help="write hedge_ttft.png into DIR")
    args = p.parse_args(argv)
    rows = measure_hedge(quick=args.quick, seed=args.seed, progress=True)
    if args.plot:
        from .plots import plot_rows

        print(f"plot: {plot_rows(hedge_plot, rows, args.plot)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['policy']:32s} ttft p50 {r['ttft_p50_ms']:>7} p99 {r['ttft_p99_ms']:>7} ms  "
                  f"cost/1k {r['cost_per_1k_tokens']}  hedged "
                  f"{r['hedged']}/{r['requests']} ({r['hedged_share']})  shed {r['shed']}  by site {r['requests_by_site']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
