"""Turns a workload's results into what a person wants to know: where traffic went and what it cost.

`summarize` builds one JSON-ready dict (rows per client region, policy and
load; the burst's spill-over; per-policy and per-budget checks; sessions; the
errors) and a few sentences that say it in words; `render_table` prints it.
Everything is computed from what the clients saw (trailers, first-token times,
tokens received) and the config's prices, never from the proxy's own claims.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from fastpath.config import Config
from fastpath.workload import Plan, Result, nearest_sites


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def near_regions(config: Config, region: str, model: str) -> set[str]:
    return {b.region for b in nearest_sites(config, region, model)}


def stats(config: Config, results: list[Result]) -> dict:
    """Counts, where requests went, TTFT and cost over a set of results."""
    ok = [r for r in results if r.ok]
    sites = Counter(r.backend for r in ok if r.backend)
    tokens = sum(r.tokens for r in ok)
    cost = 0.0
    for r in ok:
        if r.backend:
            try:
                cost += r.tokens * config.backend(r.backend).cost_per_1k_tokens / 1000
            except KeyError:
                pass
    ttft = [r.ttft_ms for r in ok if r.spec.stream and r.tokens]
    unary = [r.total_ms for r in ok if not r.spec.stream]
    near = [r for r in ok if r.backend in {b.name for b in config.backends}]
    near_hits = sum(config.backend(r.backend).region in near_regions(config, r.spec.region, r.spec.model) for r in near)
    return {
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "sites": {s: round(n / len(ok), 3) for s, n in sites.most_common()} if ok else {},
        "near_share": round(near_hits / len(near), 3) if near else None,
        "streamed": len(ttft),
        "ttft_p50_ms": _r(percentile(ttft, 50)),
        "ttft_p99_ms": _r(percentile(ttft, 99)),
        "unary_p50_ms": _r(percentile(unary, 50)),
        "tokens": tokens,
        "cost_usd": round(cost, 6),
        "cost_per_1k_tokens": round(cost / tokens * 1000, 4) if tokens else None,
    }


def _policy_label(config: Config, r: Result) -> str:
    return r.spec.policy or config.default_policy


def _share_text(sites: dict[str, float], config: Config, limit: int = 3) -> str:
    parts = []
    for s, share in list(sites.items())[:limit]:
        region = config.backend(s).region if s in {b.name for b in config.backends} else "?"
        parts.append(f"{s} ({region}) {share:.0%}")
    return ", ".join(parts)


def burst_summary(config: Config, plan: Plan, results: list[Result]) -> dict | None:
    """How the burst behaved: when the near site's load made the router look elsewhere."""
    burst = [r for r in results if r.spec.phase == "burst"]
    if not burst or not plan.burst_site:
        return None
    site = config.backend(plan.burst_site)
    slots = site.sim.slots if site.sim else 0
    ok = sorted((r for r in burst if r.ok), key=lambda r: r.started_s)
    on_site = [r for r in ok if r.backend == site.name]
    spilled = [r for r in ok if r.backend and r.backend != site.name]
    every = [r for r in results if r.ok and r.backend == site.name]

    def in_flight(t: float) -> int:
        return sum(r.started_s < t < r.ended_s for r in every)

    peak = max((in_flight(r.started_s + 1e-6) for r in on_site), default=0)
    first = spilled[0] if spilled else None
    at_spill = in_flight(first.started_s) if first else None
    return {
        "region": plan.burst_region,
        "model": plan.burst_model,
        "site": site.name,
        "site_region": site.region,
        "slots": slots,
        "requests": len(burst),
        "ok": len(ok),
        "stayed": len(on_site),
        "spilled": dict(Counter(r.backend for r in spilled).most_common()),
        "in_flight_at_first_spill": at_spill,
        "peak_in_flight": peak,
        "ttft_p50_ms_stayed": _r(percentile([r.ttft_ms for r in on_site if r.tokens], 50)),
        "ttft_p50_ms_spilled": _r(percentile([r.ttft_ms for r in spilled if r.tokens], 50)),
    }


def substitute_summary(config: Config, results: list[Result]) -> dict | None:
    """The substitute phase: where requests allowing a substitute went and what served them, next to
    the same requests without the opt-in."""
    rs = [r for r in results if r.spec.phase == "substitute"]
    if not rs:
        return None

    def side(group: list[Result]) -> dict:
        st = stats(config, group)
        served = Counter((r.served_model or r.spec.model) for r in group if r.ok)
        total = sum(served.values()) or 1
        return {"requests": len(group), "ok": st["ok"], "sites": st["sites"],
                "served_models": {m: round(n / total, 3) for m, n in served.items()},
                "ttft_p50_ms": st["ttft_p50_ms"], "cost_per_1k_tokens": st["cost_per_1k_tokens"]}

    return {"region": rs[0].spec.region, "model": rs[0].spec.model,
            "allowed": side([r for r in rs if r.spec.allow_substitute]),
            "not_allowed": side([r for r in rs if not r.spec.allow_substitute])}


def summarize(config: Config, plan: Plan, results: list[Result], *, duration_s: float = 0.0,
              startup_s: float = 0.0) -> dict:
    """Everything the demo prints, as one JSON-ready dict.

    Keys: `totals` and `rows` (per client region, policy and load: requests, ok, errors, `sites` as
    site -> share, `near_share`, `ttft_p50_ms`/`ttft_p99_ms` of streamed calls, `unary_p50_ms`,
    `tokens`, `cost_usd`, `cost_per_1k_tokens`), `policies` (the same stats per policy over identical
    requests), `budget` (requests with x-fastpath-max-cost and any that landed above their ceiling),
    `sessions` (site per turn, KV-cache hits), `burst` (near site, slots, in flight at the first
    spill, where the rest went), `wrong_model`, `errors`/`error_examples`, `example_decision`, and
    `observations` (the sentences). `fastpath demo --json` adds `controller`, `proxy`, `died` and
    `results` (every request: spec, outcome, backend, decision trailer, TTFT, tokens, text).
    """
    rows = []
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        load = "burst" if r.spec.phase == "burst" else "low"
        groups[(r.spec.region, _policy_label(config, r), load)].append(r)
    policy_order = {p: i for i, p in enumerate([config.default_policy, *config.policies])}
    region_order = {r: i for i, r in enumerate(config.rtt_ms)}
    for (region, policy, load), rs in sorted(groups.items(), key=lambda kv: (
            region_order.get(kv[0][0], 99), kv[0][0], kv[0][2] == "burst", policy_order.get(kv[0][1], 99))):
        rows.append({"region": region, "policy": policy, "load": load, **stats(config, rs)})

    policies = {}
    for p in config.policies:
        rs = [r for r in results if r.spec.phase == "policy" and r.spec.policy == p]
        if rs:
            policies[p] = stats(config, rs)

    budget_rs = [r for r in results if r.spec.max_cost]
    over = [r for r in budget_rs if r.ok and r.backend
            and config.backend(r.backend).cost_per_1k_tokens > r.spec.max_cost + 1e-9]
    budget = {
        "requests": len(budget_rs),
        "ok": sum(r.ok for r in budget_rs),
        "over_ceiling": [{"index": r.spec.index, "max_cost": r.spec.max_cost, "backend": r.backend,
                          "price": config.backend(r.backend).cost_per_1k_tokens} for r in over],
        **{k: v for k, v in stats(config, budget_rs).items() if k in ("sites", "cost_per_1k_tokens")},
    }

    sessions = {}
    for r in results:
        if r.spec.session:
            s = sessions.setdefault(r.spec.session, {"region": r.spec.region, "model": r.spec.model,
                                                     "requests": 0, "backends": [], "kv_cache_hits": 0})
            s["requests"] += 1
            s["backends"].append(r.backend or "?")
            s["kv_cache_hits"] += bool(r.kv_cache_hit)

    wrong_model = [{"index": r.spec.index, "model": r.spec.model, "backend": r.backend} for r in results
                   if r.ok and r.backend and r.backend in {b.name for b in config.backends}
                   and (r.served_model or r.spec.model) not in config.backend(r.backend).models]
    errors = Counter(r.error.split(":", 1)[0] for r in results if not r.ok)
    examples = {}
    for r in results:
        if not r.ok:
            examples.setdefault(r.error.split(":", 1)[0], _clip(r.error, 320))
    unknown_backend = sum(1 for r in results if r.ok and not r.backend)
    summary = {
        "config": config.source,
        "seed": plan.seed,
        "requests": len(results),
        "planned": plan.total,
        "startup_s": round(startup_s, 2),
        "duration_s": round(duration_s, 2),
        "totals": stats(config, results),
        "rows": rows,
        "policies": policies,
        "budget": budget,
        "sessions": sessions,
        "burst": burst_summary(config, plan, results),
        "substitute": substitute_summary(config, results),
        "wrong_model": wrong_model,
        "errors": dict(errors),
        "error_examples": examples,
        "backend_unknown": unknown_backend,
        "example_decision": next(({"region": r.spec.region, "model": r.spec.model, "backend": r.backend,
                                   "decision": r.decision} for r in results if r.ok and r.decision), None),
    }
    summary["observations"] = observations(config, summary, results)
    return summary


def observations(config: Config, s: dict, results: list[Result]) -> list[str]:
    """A few sentences a person can read, each backed by the numbers in the summary."""
    lines: list[str] = []
    low = [r for r in results if r.spec.phase not in ("burst", "substitute") and not r.spec.max_cost]
    by_region: dict[str, list[Result]] = defaultdict(list)
    for r in low:
        by_region[r.spec.region].append(r)
    site_regions = {b.region for b in config.backends}
    for region in config.rtt_ms:
        rs = by_region.get(region)
        if not rs:
            continue
        st = stats(config, rs)
        if not st["ok"]:
            continue
        where = _share_text(st["sites"], config)
        near = st["near_share"]
        elsewhere = sorted({r.spec.model for r in rs if region not in near_regions(config, region, r.spec.model)})
        note = ""
        if elsewhere and region in site_regions:
            note = " " + "; ".join(f"{m} has no {region} site, its nearest is "
                                   f"{'/'.join(sorted(near_regions(config, region, m)))}" for m in elsewhere) + "."
        if region in site_regions:
            lines.append(f"{region}: at low load {near:.0%} of its requests went to the nearest region serving "
                         f"their model ({where}).{note}")
        else:
            rtt = config.rtt_ms[region]
            best = min(rtt, key=rtt.get)
            lines.append(f"{region} has no site of its own: {near:.0%} went to the nearest region serving their "
                         f"model ({best} is {rtt[best]:.0f} ms away; {where}).")
    b = s.get("burst")
    if b and b["ok"]:
        if b["spilled"] and not b["stayed"]:
            spill = ", ".join(f"{n} to {site} ({config.backend(site).region})" for site, n in b["spilled"].items())
            lines.append(f"burst: none of the {b['ok']} answered {b['region']} {b['model']} requests went to the "
                         f"nearest site {b['site']} ({b['site_region']}): {spill}.")
        elif b["spilled"]:
            spill = ", ".join(f"{n} to {site} ({config.backend(site).region})" for site, n in b["spilled"].items())
            util = f" ({b['in_flight_at_first_spill'] / b['slots']:.0%} of its {b['slots']} slots)" if b["slots"] else ""
            ttft = ""
            if b["ttft_p50_ms_stayed"] is not None and b["ttft_p50_ms_spilled"] is not None:
                ttft = (f" TTFT p50 {b['ttft_p50_ms_stayed']:.0f} ms on {b['site']}, "
                        f"{b['ttft_p50_ms_spilled']:.0f} ms spilled.")
            lines.append(f"burst: {b['region']} {b['model']} traffic stayed on {b['site']} ({b['site_region']}) until "
                         f"it had {b['in_flight_at_first_spill']} requests in flight{util}, then spilled: {spill}; "
                         f"{b['stayed']} of {b['ok']} stayed.{ttft}")
        else:
            lines.append(f"burst: all {b['stayed']} of {b['ok']} {b['region']} {b['model']} requests stayed on "
                         f"{b['site']} (peak {b['peak_in_flight']} in flight for {b['slots']} slots): no spill-over.")
    sub = s.get("substitute")
    if sub and sub["allowed"]["ok"] and sub["not_allowed"]["ok"]:
        a, n = sub["allowed"], sub["not_allowed"]
        ttft = ""
        if a["ttft_p50_ms"] is not None and n["ttft_p50_ms"] is not None:
            ttft = f" TTFT p50 {a['ttft_p50_ms']:.0f} ms against {n['ttft_p50_ms']:.0f} ms."
        lines.append(f"model switching: {sub['region']} {sub['model']} requests that allowed a substitute were "
                     f"served {', '.join(f'{m} {v:.0%}' for m, v in a['served_models'].items())} on {_share_text(a['sites'], config)}; "
                     f"without the opt-in they went to {_share_text(n['sites'], config)}.{ttft}")
    pol = s.get("policies") or {}
    if len(pol) > 1:
        parts = []
        for p, st in pol.items():
            if st["ok"]:
                price = f"${st['cost_per_1k_tokens']:.2f}/1k tokens" if st["cost_per_1k_tokens"] is not None else "no tokens"
                ttft = f"TTFT p50 {st['ttft_p50_ms']:.0f} ms" if st["ttft_p50_ms"] is not None else "no TTFT"
                parts.append(f"{p} {price}, {ttft}")
        if parts:
            lines.append("same requests under each policy: " + "; ".join(parts) + ".")
    bud = s.get("budget") or {}
    if bud.get("ok"):
        if bud["over_ceiling"]:
            lines.append(f"max-cost: {len(bud['over_ceiling'])} of {bud['ok']} answered requests went to a site "
                         f"priced above their x-fastpath-max-cost.")
        else:
            lines.append(f"max-cost: all {bud['ok']} answered requests with x-fastpath-max-cost went to sites within "
                         f"their ceiling ({_share_text(bud.get('sites') or {}, config)}).")
    sess = s.get("sessions") or {}
    if sess and any(r.ok for r in results if r.spec.session):
        sticky = sum(len(set(v["backends"])) == 1 for v in sess.values())
        repeats = sum(v["requests"] - 1 for v in sess.values())
        hits = sum(v["kv_cache_hits"] for v in sess.values())
        pinned = sum(1 for r in results if r.spec.session and r.backend_from == "response")
        lines.append(f"sessions: {sticky} of {len(sess)} stayed on one site for all their requests; "
                     f"{hits} of {repeats} repeats found a warm KV cache"
                     + (f"; {pinned} session calls rode a pinned connection (relayed verbatim, so no trailer: "
                        "the site named in the response is shown)." if pinned else "."))
    if s.get("wrong_model"):
        lines.append(f"WRONG: {len(s['wrong_model'])} requests were answered by a site that does not serve their model.")
    if s.get("errors"):
        lines.append("errors: " + "; ".join(f"{n}× {s['error_examples'][k]}" for k, n in s["errors"].items()))
    return lines


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def render_table(s: dict) -> str:
    """The summary as a table and sentences, for a terminal."""
    head = ("region", "policy", "load", "reqs", "err", "where it went (site: share)", "near",
            "TTFT p50", "p99 ms", "$/1k tok")
    body = []
    for r in s["rows"]:
        where = ", ".join(f"{k}: {v:.0%}" for k, v in r["sites"].items()) or "-"
        body.append((r["region"], r["policy"], r["load"], str(r["requests"]), str(r["errors"]), where,
                     _fmt(r["near_share"] * 100 if r["near_share"] is not None else None) + ("%" if r["near_share"] is not None else ""),
                     _fmt(r["ttft_p50_ms"]), _fmt(r["ttft_p99_ms"]), _fmt(r["cost_per_1k_tokens"], ".2f")))
    t = s["totals"]
    body.append(("all", "", "", str(t["requests"]), str(t["errors"]), "", 
                 _fmt(t["near_share"] * 100 if t["near_share"] is not None else None) + ("%" if t["near_share"] is not None else ""),
                 _fmt(t["ttft_p50_ms"]), _fmt(t["ttft_p99_ms"]), _fmt(t["cost_per_1k_tokens"], ".2f")))
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    numeric = {3, 4, 6, 7, 8, 9}

    def line(cells: Iterable[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line("-" * w for w in widths)]
    out += [line(row) for row in body[:-1]]
    out += [line("-" * w for w in widths), line(body[-1])]
    out.append("")
    out.append("TTFT is measured at the client: time to the first token of streamed calls (- = none streamed). "
               "near = share answered in the closest region that serves the model. "
               "$/1k tok = config price × tokens received.")
    out.append("")
    out += [f"* {o}" for o in s["observations"]]
    if s.get("example_decision"):
        d = s["example_decision"]
        out.append(f"* why, for example: {d['region']} {d['model']} -> {d['backend']}: x-fastpath-decision {d['decision']}")
    out.append("")
    unsent = f" ({s['planned'] - t['requests']} planned requests not sent: time budget spent)" \
        if s["planned"] > t["requests"] else ""
    out.append(f"{t['requests']} requests ({t['ok']} answered){unsent} in {s['duration_s']:.1f} s after a "
               f"{s['startup_s']:.1f} s start-up; seed {s['seed']}, config {s['config']}.")
    return "\n".join(out)
