"""Fleet scenarios: routing policies compared on the simulated GPU fleet.

One seeded arrival trace (clients in several regions, a mix of models, a burst
in the middle third that pushes the nearest sites toward saturation) is
replayed against the simulated fleet once per policy:
  round-robin       cycle over the sites that serve the model
  least-loaded      fewest in-flight requests per batch slot
  proximity-only    lowest RTT from the client's region
  five-axis/<p>     fastpath.router.Router with policy p (the config's default, and cost-first),
                    fed by this client's own observations (LiveStats), as the proxy runs
                    without a controller; the request carries its TTFT SLO
  fastpath/<p>      (full runs) the real product: `fastpath up`'s stack (fleet, controller
                    scraping the sites, proxy), requests sent to the proxy with
                    x-fastpath-region, x-fastpath-policy and x-fastpath-slo-ttft-ms
and per fleet layout: "distributed" (the config's regions) and "central"
(every site moved into one region).

The chat scenario ("chat" rows) replays multi-turn conversations over a few
long shared system prompts (each turn resends the whole conversation, so
prompts grow their prefix) against sites that model a prefix KV cache, and
compares: round-robin, least-loaded, session-only (the five-axis router
with session affinity, prefix axis off), sglang-cache-aware (SGLang router's
cache_aware policy: longest approximate prefix match above a threshold
unless the load is out of balance, then shortest queue) and
five-axis/prefix (the five-axis router reading the prompt's blocks). Rows
add the cache-hit share (prompt blocks found in the chosen site's cache). Each request is a real ModelStreamInfer
call to the chosen site, which adds the RTT from the client's region before
its first token. Per policy: TTFT p50/p99 at the client, token-weighted cost
per 1k tokens, requests shed (refused, failed or past the deadline), and the
share of all requests whose first token came within the SLO.

The substitute scenario ("substitute" rows) sends requests for a model that
some client regions have no site for (the default config: llama-3-70b, served
in us-east and us-west only, asked for mostly from eu-west, plus us-east and
ap-south) through the real proxy twice over the same seeded trace: once
asking for the exact model (eu-west goes across the Atlantic), once with
`x-fastpath-allow-substitute: true`, where the config's model group lets a
nearer site serve a substitute (llama-3-8b in eu-west) at a score penalty,
and the proxy rewrites `model_name` in the request on the way. Rows add the
share served by a substitute (the `x-fastpath-served-model` trailer), the
models that answered, and TTFT p50 per client region.

The hedging scenario ("hedge" rows, fastpath.bench.hedge_scenario): one site
intermittently slow to its first token, TTFT with and without TTFT hedging.

`measure(quick)` returns one row per (layout, policy); the harness runs it in
a child process. `python -m fastpath.bench.fleet_scenarios [--quick]` prints them.
The priority-burst rows (admission control; fastpath.bench.priority_burst) come last.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import importlib.util
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

REGION_MIX = {"us-east": 0.55, "eu-west": 0.2, "us-west": 0.15, "ap-south": 0.1}
MODEL_MIX = {"llama-3-8b": 0.5, "mistral-7b": 0.3, "llama-3-70b": 0.2}
BASELINES = ("round-robin", "least-loaded", "proximity-only")
CENTRAL_REGION = "us-east"


@dataclass(frozen=True)
class Arrival:
    t: float          # seconds from the start of the replay
    region: str       # client region
    model: str
    max_tokens: int
    words: tuple[str, ...]
    prompt: str = ""  # the whole prompt (chat turns); "" = built from words
    conversation: int = -1  # chat: which conversation this turn belongs to


SUBSTITUTE_MODEL = "llama-3-70b"  # requested; the default config's model group lets llama-3-8b serve it
SUBSTITUTE_REGIONS = {"eu-west": 0.6, "us-east": 0.25, "ap-south": 0.15}  # eu-west has no site for it
SUBSTITUTE_SUFFIX = "+substitute"  # a proxy row whose requests send x-fastpath-allow-substitute: true
SERVED_MODEL_TRAILER = "x-fastpath-served-model"

CHAT_POLICIES = ("round-robin", "least-loaded", "session-only", "sglang-cache-aware", "five-axis/prefix")
CHAT_MODEL = "llama-3-8b"
MAX_PROMPT_CHARS = 16 * 1024


def poisson_times(rng: random.Random, duration_s: float, rate: float,
                  burst_rate: float | None = None) -> Iterator[float]:
    """Arrival times of a Poisson process over [0, duration_s), at burst_rate in the middle third when
    given; one rng draw per arrival, so a caller drawing its own fields in between stays seeded."""
    t = 0.0
    while True:
        r = burst_rate if burst_rate is not None and duration_s / 3 <= t < 2 * duration_s / 3 else rate
        t += rng.expovariate(r)
        if t >= duration_s:
            return
        yield t


def make_chat_trace(models_served: set[str], seed: int, duration_s: float, rate: float, conversations: int = 40,
                    systems: int = 4, max_tokens: int = 4) -> list[Arrival]:
    """Poisson turns of `conversations` chats, each on one of `systems` long (~3 KiB) shared system
    prompts; every turn resends the conversation so far plus a new question (its prefix grows)."""
    rng = random.Random(seed)
    model = CHAT_MODEL if CHAT_MODEL in models_served else sorted(models_served)[0]
    vocab = ("route", "token", "cache", "power", "region", "batch", "prefill", "queue", "model", "site")
    system_prompts = [f"[system {k}] You are assistant {k}. " + " ".join(rng.choice(vocab) for _ in range(450))
                      for k in range(systems)]
    regions = list(REGION_MIX)
    convs = [(rng.choice(system_prompts), rng.choices(regions, weights=list(REGION_MIX.values()))[0])
             for _ in range(conversations)]
    history = [""] * conversations
    out: list[Arrival] = []
    for t in poisson_times(rng, duration_s, rate):
        c = rng.randrange(conversations)
        system, region = convs[c]
        question = f" user {c}: " + " ".join(rng.choice(vocab) for _ in range(40))
        prompt = (system + history[c] + question)[:MAX_PROMPT_CHARS]
        history[c] += question + f" assistant {c}: " + " ".join(rng.choice(vocab) for _ in range(20))
        out.append(Arrival(t, region, model, max_tokens, (), prompt, c))
    return out


def make_trace(models_served: set[str], seed: int, duration_s: float, base_rate: float, burst_rate: float,
               max_tokens: int) -> list[Arrival]:
    """Poisson arrivals at base_rate, at burst_rate in the middle third; seeded, so every policy sees the same."""
    rng = random.Random(seed)
    models = {m: w for m, w in MODEL_MIX.items() if m in models_served} or {sorted(models_served)[0]: 1.0}
    out: list[Arrival] = []
    for t in poisson_times(rng, duration_s, base_rate, burst_rate):
        region = rng.choices(list(REGION_MIX), weights=list(REGION_MIX.values()))[0]
        model = rng.choices(list(models), weights=list(models.values()))[0]
        words = tuple(rng.choice(("route", "token", "cache", "power", "region", "batch", "prefill", "queue"))
                      for _ in range(6))
        out.append(Arrival(t, region, model, max_tokens, words))
    return out


def make_substitute_trace(config, seed: int, duration_s: float, rate: float, max_tokens: int = 8,
                          model: str = SUBSTITUTE_MODEL) -> list[Arrival]:
    """Poisson requests for `model` from SUBSTITUTE_REGIONS (the regions the config knows); seeded."""
    rng = random.Random(seed)
    regions = {r: w for r, w in SUBSTITUTE_REGIONS.items() if r in config.rtt_ms} or {sorted(config.rtt_ms)[0]: 1.0}
    out: list[Arrival] = []
    for t in poisson_times(rng, duration_s, rate):
        region = rng.choices(list(regions), weights=list(regions.values()))[0]
        words = tuple(rng.choice(("route", "token", "cache", "power", "region", "batch", "prefill", "queue"))
                      for _ in range(6))
        out.append(Arrival(t, region, model, max_tokens, words))
    return out


def substitute_groups(config) -> dict[str, tuple[str, ...]]:
    """The config's model groups whose requested model is missing from some site region that one
    of its substitutes covers: where the substitute scenario can show a switch."""
    out = {}
    for model, g in config.model_groups.items():
        have = {b.region for b in config.backends if model in b.models}
        subs = {b.region for b in config.backends if any(s in b.models for s in g.substitutes)}
        if have and subs - have:
            out[model] = g.substitutes
    return out


def central_layout(config):
    """The same sites, all moved into one region (what a single central deployment looks like)."""
    from fastpath.config import parse_config

    data = copy.deepcopy(config.raw)
    for b in data["backends"]:
        b["region"] = CENTRAL_REGION
    return parse_config(data, config.source + " (central)")


def _free_base(count: int) -> int:
    from fastpath.ports import free_port_block

    return free_port_block(count)


# ---------------------------------------------------------------- choosers

class Chooser:
    """Picks a backend index per arrival and hears how each request went."""

    def __init__(self, config):
        self.config = config
        self.n = len(config.backends)
        self.inflight = [0] * self.n
        self.serves = {m: [i for i, b in enumerate(config.backends) if m in b.models] for m in config.models}

    def choose(self, a: Arrival) -> int | None:
        raise NotImplementedError

    def started(self, i: int) -> None:
        self.inflight[i] += 1

    def first_token(self, i: int, ttft_ms: float) -> None:
        pass

    def finished(self, i: int, ok: bool) -> None:
        self.inflight[i] -= 1


class RoundRobin(Chooser):
    def __init__(self, config):
        super().__init__(config)
        self.next = {m: 0 for m in self.serves}

    def choose(self, a: Arrival) -> int | None:
        c = self.serves.get(a.model) or []
        if not c:
            return None
        i = c[self.next[a.model] % len(c)]
        self.next[a.model] += 1
        return i


class LeastLoaded(Chooser):
    def choose(self, a: Arrival) -> int | None:
        c = self.serves.get(a.model) or []
        slots = [max(1, (b.sim.slots if b.sim else 1)) for b in self.config.backends]
        return min(c, key=lambda i: (self.inflight[i] / slots[i], i)) if c else None


class ProximityOnly(Chooser):
    def choose(self, a: Arrival) -> int | None:
        c = self.serves.get(a.model) or []
        rtt = self.config.rtt_ms.get(a.region, {})
        return min(c, key=lambda i: (rtt.get(self.config.backends[i].region, 1e9), i)) if c else None


class FiveAxis(Chooser):
    """fastpath's router, as the proxy runs it without a controller: LiveStats from its own calls."""

    def __init__(self, config, policy: str, slo_ms: float):
        super().__init__(config)
        from fastpath.router.features import RequestFeatures
        from fastpath.router.live import LiveStats
        from fastpath.router.router import Router
        from fastpath.router.snapshot import build_snapshot

        self.features = RequestFeatures
        self.router = Router(config)
        self.snap = build_snapshot(config, None)
        self.live = LiveStats(self.n)
        self.policy = policy
        self.slo_ms = slo_ms

    def choose(self, a: Arrival) -> int | None:
        d = self.router.route(self.features(model=a.model, region=a.region, policy=self.policy,
                                            slo_ttft_ms=self.slo_ms), self.snap, self.live)
        return d.ranked[0] if d.ranked else None

    def started(self, i: int) -> None:
        super().started(i)
        self.live.started(i)

    def first_token(self, i: int, ttft_ms: float) -> None:
        self.live.first_byte(i, ttft_ms)

    def finished(self, i: int, ok: bool) -> None:
        super().finished(i, ok)
        self.live.finished(i, ok)


class SessionOnly(FiveAxis):
    """The five-axis router with session affinity only: the conversation is the session, no prompt blocks."""

    def __init__(self, config, slo_ms: float):
        import dataclasses

        from fastpath.config import PrefixConfig

        super().__init__(dataclasses.replace(config, prefix=PrefixConfig(enabled=False)), config.default_policy, slo_ms)

    def choose(self, a: Arrival) -> int | None:
        session = f"conversation-{a.conversation}" if a.conversation >= 0 else ""
        d = self.router.route(self.features(model=a.model, region=a.region, policy=self.policy, session=session,
                                            slo_ttft_ms=self.slo_ms), self.snap, self.live)
        if not d.ranked:
            return None
        if session:
            self.live.remember_session(session, d.ranked[0])
        return d.ranked[0]


class PrefixAware(FiveAxis):
    """The five-axis router reading the prompt's blocks, as the proxy does from the first DATA frame."""

    def __init__(self, config, slo_ms: float):
        super().__init__(config, config.default_policy, slo_ms)

    def choose(self, a: Arrival) -> int | None:
        from fastpath.router.prefix import prompt_blocks

        pc = self.config.prefix
        blocks = prompt_blocks(a.prompt.encode(), a.model, pc.block_bytes, pc.max_prompt_bytes) if a.prompt else ()
        d = self.router.route(self.features(model=a.model, region=a.region, policy=self.policy,
                                            slo_ttft_ms=self.slo_ms, prompt_blocks=blocks), self.snap, self.live)
        if not d.ranked:
            return None
        self.router.learn(d)
        return d.ranked[0]


class SGLangCacheAware(Chooser):
    """SGLang router's cache_aware policy, approximated: an LRU-bounded index of prompt blocks per site
    stands in for its approximate radix tree. Out of balance (max - min load > BALANCE_ABS and
    max > BALANCE_REL x min): shortest queue. Else the longest match if its rate exceeds
    CACHE_THRESHOLD, else the site that has seen least (most free cache)."""

    CACHE_THRESHOLD = 0.5  # SGLang's default
    BALANCE_ABS = 4  # SGLang's default is 32 requests, for batches far larger than these sites' 4-16 slots
    BALANCE_REL = 1.5

    def __init__(self, config):
        from fastpath.router.prefix import PrefixIndex

        super().__init__(config)
        self.index = PrefixIndex(self.n, capacity_blocks=4096, ttl_s=1e9)

    def choose(self, a: Arrival) -> int | None:
        from fastpath.router.prefix import prompt_blocks

        c = self.serves.get(a.model) or []
        if not c:
            return None
        blocks = prompt_blocks(a.prompt.encode(), a.model, 256) if a.prompt else ()
        loads = [self.inflight[i] for i in c]
        hi, lo = max(loads), min(loads)
        if hi - lo > self.BALANCE_ABS and hi > self.BALANCE_REL * lo:
            i = min(c, key=lambda j: (self.inflight[j], j))
        else:
            depth = self.index.matches(blocks, 1) if blocks else {}
            best = max(c, key=lambda j: (depth.get(j, 0), -j))
            if blocks and depth.get(best, 0) / len(blocks) > self.CACHE_THRESHOLD:
                i = best
            else:
                i = min(c, key=lambda j: (len(self.index.lru[j]), j))
        if blocks:
            self.index.learn(i, blocks, self.index.matches(blocks, 1).get(i, 0))
        return i


PROXY_PREFIX = "fastpath/"


def make_chooser(name: str, config, slo_ms: float) -> Chooser | None:
    """The client-side chooser for a policy; None for the rows routed by the real proxy."""
    if name.startswith(PROXY_PREFIX):
        return None
    if name == "round-robin":
        return RoundRobin(config)
    if name == "least-loaded":
        return LeastLoaded(config)
    if name == "proximity-only":
        return ProximityOnly(config)
    if name == "session-only":
        return SessionOnly(config, slo_ms)
    if name == "sglang-cache-aware":
        return SGLangCacheAware(config)
    if name == "five-axis/prefix":
        return PrefixAware(config, slo_ms)
    if name.startswith("five-axis/"):
        return FiveAxis(config, name.split("/", 1)[1], slo_ms)
    raise ValueError(f"unknown policy {name!r}; policies: {', '.join(BASELINES)}, five-axis/<policy>")


# ---------------------------------------------------------------- replay

def _pct(xs: list[float], q: float) -> float | None:
    from .stats import percentile

    v = percentile(sorted(xs), q)
    return round(v, 1) if v is not None else None


async def replay(config, trace: list[Arrival], policy: str, slo_ms: float, deadline_s: float, tag: str,
                 proxy: str = "") -> dict[str, Any]:
    """Sends every arrival of the trace at its time to the site the policy picks (or, for the
    fastpath/<p> rows, to the proxy at `proxy`); returns the policy's row."""
    import grpc

    from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
    from fastpath.sim.llm_request import make_request, response_parameter, text_output

    chooser = make_chooser(policy, config, slo_ms)
    via_proxy = chooser is None
    if via_proxy and not proxy:
        raise ValueError(f"policy {policy!r} needs the address of a running fastpath proxy")
    targets = [proxy] if via_proxy else [b.address for b in config.backends]
    channels = [grpc.aio.insecure_channel(t, options=[("grpc.use_local_subchannel_pool", 1)]) for t in targets]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 10) for ch in channels))
    stubs = [pb_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
    index = {b.name: i for i, b in enumerate(config.backends)}
    proxy_md: tuple[tuple[str, str], ...] = ()
    if via_proxy:
        name = policy[len(PROXY_PREFIX):]
        substitute = name.endswith(SUBSTITUTE_SUFFIX)
        name = name.removesuffix(SUBSTITUTE_SUFFIX)
        proxy_md = (("x-fastpath-policy", name), ("x-fastpath-slo-ttft-ms", f"{slo_ms:g}"))
        if substitute:
            proxy_md += (("x-fastpath-allow-substitute", "true"),)
    served_models: dict[str, int] = {}  # model_name of the responses (the model that answered)
    substituted = 0  # calls whose trailers name a substitute model
    ttfts_by_region: dict[str, list[float]] = {}
    ttfts: list[float] = []
    tokens_by_site = [0] * len(config.backends)
    requests_by_site = [0] * len(config.backends)
    shed = {"no_route": 0, "failed": 0}
    blocks_cached = blocks_total = 0
    first_errors: list[str] = []
    within = 0

    async def one(k: int, a: Arrival) -> None:
        nonlocal within, blocks_cached, blocks_total, substituted
        if via_proxy:
            i = -1  # the proxy chooses; the site names itself in every response
            stub = stubs[0]
        else:
            i = chooser.choose(a)
            if i is None:
                shed["no_route"] += 1
                return
            requests_by_site[i] += 1
            chooser.started(i)
            stub = stubs[i]
        t0 = time.monotonic()
        ok = False
        got = 0
        try:
            if a.prompt:  # chat: the conversation, salted per replay so no cache warmth carries across policies
                prompt = f"[{tag}] " + a.prompt
            else:
                prompt = f"{tag}-{k} " + " ".join(a.words)  # unique per replay: no cache warmth carried across policies

            async def reqs() -> AsyncIterator[Any]:
                yield make_request(a.model, prompt, a.max_tokens, request_id=f"{tag}-{k}")

            call = stub.ModelStreamInfer(reqs(), metadata=(("x-fastpath-region", a.region), *proxy_md),
                                         timeout=deadline_s)
            async for msg in call:
                if msg.error_message:
                    raise RuntimeError(msg.error_message)
                r = msg.infer_response
                if i < 0:
                    site = response_parameter(r, "fastpath_site")
                    if isinstance(site, str) and site in index:
                        i = index[site]
                        requests_by_site[i] += 1
                if response_parameter(r, "triton_final_response"):
                    cached, total = response_parameter(r, "kv_cached_blocks"), response_parameter(r, "kv_prompt_blocks")
                    if isinstance(cached, int) and isinstance(total, int):
                        blocks_cached += cached
                        blocks_total += total
                    continue
                if text_output(r):
                    if got == 0:
                        ttft = (time.monotonic() - t0) * 1000
                        ttfts.append(ttft)
                        ttfts_by_region.setdefault(a.region, []).append(ttft)
                        served_models[r.model_name] = served_models.get(r.model_name, 0) + 1
                        if chooser is not None:
                            chooser.first_token(i, ttft)
                        if ttft <= slo_ms:
                            within += 1
                    got += 1
            ok = got > 0 and i >= 0
            if via_proxy and ok:
                trailers = {key: value for key, value in (await call.trailing_metadata() or ())}
                if trailers.get(SERVED_MODEL_TRAILER):
                    substituted += 1
        except Exception as e:  # refused, reset, past the deadline: the request is shed
            if len(first_errors) < 3:
                where = config.backends[i].name if i >= 0 else "proxy"
                first_errors.append(f"{where}: {type(e).__name__}: {str(e)[:160]}")
        finally:
            if chooser is not None:
                chooser.finished(i, ok)
        if ok:
            tokens_by_site[i] += got
        else:
            shed["failed"] += 1

    t_start = time.monotonic()
    tasks = []
    for k, a in enumerate(trace):
        delay = t_start + a.t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(k, a)))
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close()
    total_tokens = sum(tokens_by_site)
    cost = sum(t * b.cost_per_1k_tokens / 1000 for t, b in zip(tokens_by_site, config.backends))
    n = len(trace)
    n_shed = shed["no_route"] + shed["failed"]
    return {
        "type": "fleet", "policy": policy, "requests": n, "served": n - n_shed,
        "shed": n_shed, "shed_share": round(n_shed / n, 4) if n else None,
        "shed_no_route": shed["no_route"], "shed_failed": shed["failed"],
        "ttft_p50_ms": _pct(ttfts, 50), "ttft_p99_ms": _pct(ttfts, 99),
        "within_slo_share": round(within / n, 4) if n else None, "slo_ttft_ms": slo_ms,
        "cost_per_1k_tokens": round(cost / total_tokens * 1000, 4) if total_tokens else None,
        "tokens": total_tokens,
        "cache_hit_share": round(blocks_cached / blocks_total, 4) if blocks_total else None,
        "requests_by_site": {b.name: c for b, c in zip(config.backends, requests_by_site) if c},
        "served_models": dict(sorted(served_models.items())),
        "substitute_share": round(substituted / n, 4) if n and via_proxy else None,
        "ttft_p50_by_region_ms": {r: _pct(v, 50) for r, v in sorted(ttfts_by_region.items())},
        "first_errors": first_errors,
    }


@contextlib.contextmanager
def _fleet(cfg, with_proxy: bool) -> Iterator[str]:
    """The simulated fleet of cfg; with_proxy: `fastpath up`'s whole stack. Yields the proxy address or ""."""
    if with_proxy:
        from fastpath.up import Stack

        with Stack(cfg, log_level="WARNING") as stack:
            yield stack.proxy_address
    else:
        from fastpath.sim.fleet import FleetProcess

        with FleetProcess(cfg):
            yield ""


def measure(quick: bool = False, seed: int = 7, progress: bool = False, slo_ms: float = 300.0) -> list[dict[str, Any]]:
    """One row per (layout, policy) over the same seeded trace."""
    from fastpath.config import load_config, with_ports

    missing = [m for m in ("fastpath.sim.fleet", "fastpath.router.router") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(f"fleet scenarios need {', '.join(missing)}, not in this install yet")

    base = load_config()
    duration = 1.2 if quick else 5.0
    layouts = {"distributed": base, "central": central_layout(base)}
    policies = list(BASELINES) + [f"five-axis/{base.default_policy}", "five-axis/cost-first"]
    if "cost-first" not in base.policies:
        policies.remove("five-axis/cost-first")
    via_proxy = not quick and importlib.util.find_spec("fastpath.up") is not None
    if via_proxy:
        policies += [PROXY_PREFIX + p.split("/", 1)[1] for p in policies if p.startswith("five-axis/")]
    rows: list[dict[str, Any]] = []
    for li, (layout, cfg) in enumerate(layouts.items()):
        cfg = with_ports(cfg, _free_base(3 + 2 * len(cfg.backends)))
        trace = make_trace(set(cfg.models), seed, duration, base_rate=40.0, burst_rate=140.0, max_tokens=8)
        t0 = time.monotonic()
        with _fleet(cfg, via_proxy) as proxy:
            if progress:
                print(f"[{layout}] fleet up in {time.monotonic() - t0:.1f} s; {len(trace)} arrivals per policy",
                      file=sys.stderr, flush=True)
            order = policies[li % len(policies):] + policies[:li % len(policies)]
            for pi, policy in enumerate(order):
                row = asyncio.run(replay(cfg, trace, policy, slo_ms, deadline_s=5.0, tag=f"{layout}{pi}s{seed}",
                                         proxy=proxy))
                row.update(layout=layout, seed=seed, trace_duration_s=duration)
                rows.append(row)
                if progress:
                    print(f"[{layout}] {policy:24s} ttft p50 {row['ttft_p50_ms']} p99 {row['ttft_p99_ms']} ms, "
                          f"cost/1k {row['cost_per_1k_tokens']}, shed {row['shed']}, in SLO {row['within_slo_share']}",
                          file=sys.stderr, flush=True)
                time.sleep(0.2)  # let the sites' queues empty between policies
    order_key = {p: i for i, p in enumerate(policies)}
    rows.sort(key=lambda r: (list(layouts).index(r["layout"]), order_key[r["policy"]]))
    from .hedge_scenario import measure_hedge
    from .priority_burst import measure as measure_priority_burst

    rows += measure_chat(quick=quick, seed=seed, progress=progress, slo_ms=slo_ms)
    rows += measure_substitute(quick=quick, seed=seed, progress=progress, slo_ms=slo_ms)
    rows += measure_hedge(quick=quick, seed=seed, progress=progress)
    return rows + measure_priority_burst(quick=quick, seed=seed, progress=progress)


def measure_chat(quick: bool = False, seed: int = 7, progress: bool = False, slo_ms: float = 300.0,
                 duration_s: float | None = None, rate: float | None = None) -> list[dict[str, Any]]:
    """The chat scenario: one row per CHAT_POLICIES entry over the same seeded conversations."""
    from fastpath.config import load_config, with_ports
    from fastpath.sim.fleet import FleetProcess

    base = load_config()
    cfg = with_ports(base, _free_base(3 + 2 * len(base.backends)))
    duration = duration_s or (2.0 if quick else 8.0)
    trace = make_chat_trace(set(cfg.models), seed, duration, rate or (25.0 if quick else 30.0))
    rows: list[dict[str, Any]] = []
    with FleetProcess(cfg):
        for pi, policy in enumerate(CHAT_POLICIES):
            row = asyncio.run(replay(cfg, trace, policy, slo_ms, deadline_s=10.0, tag=f"chat{pi}s{seed}"))
            row.update(layout="chat", seed=seed, trace_duration_s=duration)
            rows.append(row)
            if progress:
                print(f"[chat] {policy:24s} cache hit {row['cache_hit_share']}, ttft p50 {row['ttft_p50_ms']} "
                      f"p99 {row['ttft_p99_ms']} ms, cost/1k {row['cost_per_1k_tokens']}, shed {row['shed']}",
                      file=sys.stderr, flush=True)
            time.sleep(0.3)  # let the sites' queues empty between policies
    return rows


def measure_substitute(quick: bool = False, seed: int = 7, progress: bool = False, slo_ms: float = 300.0,
                       duration_s: float | None = None, rate: float | None = None) -> list[dict[str, Any]]:
    """The substitute scenario: the same seeded trace through the real proxy, exact model vs substitutes allowed."""
    from fastpath.config import load_config, with_ports

    base = load_config()
    groups = substitute_groups(base)
    if SUBSTITUTE_MODEL not in groups:
        raise ValueError(f"the config declares no model group for {SUBSTITUTE_MODEL!r} with a substitute in a region "
                         f"that lacks it (groups: {sorted(base.model_groups)}): nothing to switch")
    if importlib.util.find_spec("fastpath.up") is None:
        raise ModuleNotFoundError("the substitute scenario runs through the proxy: fastpath.up is not in this install")
    cfg = with_ports(base, _free_base(3 + 2 * len(base.backends)))
    duration = duration_s or (1.5 if quick else 5.0)
    trace = make_substitute_trace(cfg, seed, duration, rate or 20.0)
    policy = PROXY_PREFIX + cfg.default_policy
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with _fleet(cfg, True) as proxy:
        if progress:
            print(f"[substitute] stack up in {time.monotonic() - t0:.1f} s; {len(trace)} requests for "
                  f"{SUBSTITUTE_MODEL} (substitutes {list(groups[SUBSTITUTE_MODEL])}) per row", file=sys.stderr, flush=True)
        # Warm-up, not measured: the stack's first calls pay for connections and the controller's first
        # scrapes, which would count against whichever row ran first.
        asyncio.run(replay(cfg, trace[:12], policy, slo_ms, deadline_s=5.0, tag=f"subwarm{seed}", proxy=proxy))
        time.sleep(0.3)
        for pi, name in enumerate((policy, policy + SUBSTITUTE_SUFFIX)):
            row = asyncio.run(replay(cfg, trace, name, slo_ms, deadline_s=5.0, tag=f"sub{pi}s{seed}", proxy=proxy))
            row.update(layout="substitute", seed=seed, trace_duration_s=duration, requested_model=SUBSTITUTE_MODEL)
            rows.append(row)
            if progress:
                print(f"[substitute] {name:30s} ttft p50 {row['ttft_p50_ms']} p99 {row['ttft_p99_ms']} ms, "
                      f"cost/1k {row['cost_per_1k_tokens']}, served by substitute {row['substitute_share']}, "
                      f"models {row['served_models']}, shed {row['shed']}", file=sys.stderr, flush=True)
            time.sleep(0.3)  # let the sites' queues empty between rows
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.bench.fleet_scenarios", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short traces; no proxy rows but the substitute scenario's "
                   "(the rewrite happens in the proxy)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--chat-only", action="store_true", help="only the chat scenario (prefix affinity)")
    p.add_argument("--substitute-only", action="store_true", help="only the substitute scenario (model switching)")
    p.add_argument("--plot", metavar="DIR", help="write the chat and substitute scenarios' plots "
                   "(chat_prefix.png, substitute_region.png) into DIR")
    args = p.parse_args(argv)
    run = measure_chat if args.chat_only else measure_substitute if args.substitute_only else measure
    rows = run(quick=args.quick, seed=args.seed, progress=True)
    if args.plot:
        from .plots import chat_prefix, plot_rows, substitute_region

        for plot in (chat_prefix, substitute_region):
            made = plot_rows(plot, rows, args.plot)
            if made is not None:
                print(f"plot: {made}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['layout']:11s} {r['policy']:24s} ttft p50 {r['ttft_p50_ms']:>7} p99 {r['ttft_p99_ms']:>7} ms  "
                  f"cost/1k {r['cost_per_1k_tokens']}  shed {r['shed']}/{r['requests']}  in SLO {r['within_slo_share']}"
                  + (f"  cache hit {r['cache_hit_share']}" if r.get("cache_hit_share") is not None else "")
                  + (f"  by substitute {r['substitute_share']} {r['served_models']}" if r.get("layout") == "substitute"
                     else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
