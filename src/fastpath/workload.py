"""A seeded, mixed inference workload driven through fastpath with stock KServe v2 clients.

What it exercises is what a fleet sees: clients in several regions
(`x-fastpath-region`), a mix of models, unary ModelInfer and streamed
ModelStreamInfer (TTFT measured at the client as time to the first token),
sessions that come back (`x-fastpath-session`), each routing policy
(`x-fastpath-policy`), cost ceilings (`x-fastpath-max-cost`), and a burst that
drives the nearest site of one region toward saturation so spill-over shows,
and, when the config has model groups, the same requests from a region
without a model with and without `x-fastpath-allow-substitute`.
Every call's trailing metadata (`x-fastpath-backend`, `x-fastpath-decision`) is
kept, so a report can say where requests went and why. The same seed gives the
same plan; counts and deadlines bound the run.
"""
from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass

import grpc

from fastpath.config import Backend, Config
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc

WORDS = ("route", "token", "cache", "region", "batch", "prefill", "stream", "model", "latency", "budget",
         "power", "queue", "fleet", "session", "kernel", "socket")


@dataclass(frozen=True)
class RequestSpec:
    """One planned request: who sends it, for what, with which routing metadata."""

    index: int
    phase: str  # "mixed", "policy", "budget", "session", "substitute", "burst"
    region: str
    model: str
    stream: bool
    max_tokens: int
    prompt: str
    policy: str = ""  # "" = the config's default policy
    session: str = ""
    max_cost: float = 0.0  # per 1k tokens; 0 = no ceiling
    allow_substitute: bool = False  # x-fastpath-allow-substitute: a model of its group may serve it

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = [("x-fastpath-region", self.region)]
        if self.policy:
            md.append(("x-fastpath-policy", self.policy))
        if self.session:
            md.append(("x-fastpath-session", self.session))
        if self.max_cost:
            md.append(("x-fastpath-max-cost", f"{self.max_cost:g}"))
        if self.allow_substitute:
            md.append(("x-fastpath-allow-substitute", "true"))
        return tuple(md)

    def request(self) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=self.model, id=f"req-{self.index}")
        req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            self.prompt.encode())
        req.parameters["max_tokens"].int64_param = self.max_tokens
        return req


@dataclass
class Result:
    """What happened to one request, as the client saw it."""

    spec: RequestSpec
    ok: bool = False
    error: str = ""
    backend: str = ""  # x-fastpath-backend trailer, else the site named in the response
    backend_from: str = ""  # "trailer", "response" or "" (unknown)
    decision: str = ""  # x-fastpath-decision trailer
    served_model: str = ""  # x-fastpath-served-model trailer: the substitute that served it ("" = its model)
    ttft_ms: float = 0.0  # first token (streamed) or whole answer (unary), at the client
    total_ms: float = 0.0
    tokens: int = 0
    text: str = ""  # the completion as received (streamed tokens joined)
    kv_cache_hit: bool | None = None
    started_s: float = 0.0  # seconds since the workload began
    ended_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = asdict(self.spec)
        return d


@dataclass
class Phase:
    name: str
    specs: list[RequestSpec]
    concurrency: int
    spacing_s: float = 0.0  # pause between starts (the burst ramps up instead of landing at once)
    sequential_groups: bool = False  # session phase: each session's requests run one after another


@dataclass
class Plan:
    phases: list[Phase]
    seed: int
    burst_region: str = ""
    burst_model: str = ""
    burst_site: str = ""  # the nearest site the burst drives toward saturation

    @property
    def total(self) -> int:
        return sum(len(p.specs) for p in self.phases)


# -- planning ------------------------------------------------------------
def sites_for(config: Config, model: str) -> list[Backend]:
    return [b for b in config.backends if model in b.models]


def nearest_sites(config: Config, region: str, model: str) -> list[Backend]:
    """The sites serving `model` in the site region closest (by RTT) to client `region`."""
    cands = sites_for(config, model)
    rtt = config.rtt_ms.get(region, {})
    if not cands or not rtt:
        return cands
    best = min(rtt.get(b.region, float("inf")) for b in cands)
    return [b for b in cands if rtt.get(b.region, float("inf")) == best]


def choose_burst(config: Config) -> tuple[str, str, Backend] | None:
    """A (client region, model, site) where one near site would be saturated and others can take the spill.

    Prefers the first client region of the config, then the model whose near
    site is alone in its region, so the spill-over has exactly one place to
    start from.
    """
    for region in config.rtt_ms:
        for model in config.models:
            near = nearest_sites(config, region, model)
            if len(near) == 1 and near[0].sim is not None and len(sites_for(config, model)) > 1:
                if config.rtt_ms[region].get(near[0].region, 1e9) <= min(config.rtt_ms[region].values()):
                    return region, model, near[0]
    return None


def _prompt(rng: random.Random, words: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def substitute_showcase(config: Config) -> tuple[str, str, str] | None:
    """(client region, model, substitute) where a model group's substitute is nearest by the widest
    margin (at least 20 ms of RTT) over the model itself; None when no group makes a difference."""
    best: tuple[float, str, str, str] | None = None
    for model, group in config.model_groups.items():
        own = sites_for(config, model)
        for region, rtt in config.rtt_ms.items():
            far = min((rtt.get(b.region, 1e9) for b in own), default=1e9)
            for sub in group.substitutes:
                near = min((rtt.get(b.region, 1e9) for b in sites_for(config, sub)), default=1e9)
                gain = far - near
                if gain >= 20.0 and near < 1e9 and (best is None or gain > best[0]):
                    best = (gain, region, model, sub)
                break  # the first substitute a region has is the one that would serve it
    return best[1:] if best else None


def plan_workload(config: Config, requests: int = 120, seed: int = 7) -> Plan:
    """A deterministic plan of about `requests` requests in five phases (six with a model group)."""
    if requests < 20:
        raise ValueError(f"--requests {requests}: need at least 20 to cover every phase")
    rng = random.Random(seed)
    regions = list(config.rtt_ms) or sorted({b.region for b in config.backends})
    models = config.models
    idx = iter(range(10**9))
    policies = list(config.policies)

    def spec(phase: str, region: str, model: str, **kw) -> RequestSpec:
        stream = kw.pop("stream", rng.random() < 0.6)
        max_tokens = kw.pop("max_tokens", rng.choice((8, 12, 16)))
        return RequestSpec(next(idx), phase, region, model, stream, max_tokens, _prompt(rng), **kw)

    burst = choose_burst(config)
    n_burst = 0
    if burst:
        # Enough to fill the near site twice over when the request count allows it.
        slots = burst[2].sim.slots if burst[2].sim else 8
        n_burst = min(max(int(requests * 0.25), min(2 * slots + 4, int(requests * 0.4))), 3 * slots + 4)
    per_policy = max(1, int(requests * 0.15) // len(policies))
    n_budget = max(1, int(requests * 0.1))
    n_session_groups = 3 if requests >= 60 else 1
    per_session = max(2, int(requests * 0.1) // n_session_groups)
    showcase = substitute_showcase(config)
    n_substitute = 4 if showcase else 0
    n_mixed = max(1, requests - n_burst - per_policy * len(policies) - n_budget - n_session_groups * per_session
                  - n_substitute)

    phases: list[Phase] = []
    # Low load: every region, every model, unary and streamed, the default policy.
    mixed = [spec("mixed", regions[i % len(regions)], rng.choice(models)) for i in range(n_mixed)]
    phases.append(Phase("mixed", mixed, concurrency=4))

    # The same requests under each policy, so the policies can be compared like for like.
    pol_specs: list[RequestSpec] = []
    # Streamed, so TTFT compares like for like across policies.
    base = [(rng.choice(regions), rng.choice(models)) for _ in range(per_policy)]
    for p in policies:
        pol_specs += [spec("policy", r, m, policy=p, stream=True, max_tokens=12) for r, m in base]
    phases.append(Phase("policy", pol_specs, concurrency=3))

    # Cost ceilings: the median price of the sites serving the model (at least one site fits).
    budget: list[RequestSpec] = []
    for _ in range(n_budget):
        m = rng.choice(models)
        prices = sorted(b.cost_per_1k_tokens for b in sites_for(config, m))
        ceiling = prices[(len(prices) - 1) // 2]
        budget.append(spec("budget", rng.choice(regions), m, max_cost=ceiling))
    phases.append(Phase("budget", budget, concurrency=3))

    # Sessions: each comes back several times, one request after another.
    sess: list[RequestSpec] = []
    for g in range(n_session_groups):
        r, m = regions[g % len(regions)], rng.choice(models)
        sid = f"sess-{seed}-{g}"
        prompt_head = _prompt(rng, 4)
        for k in range(per_session):
            s = spec("session", r, m, session=sid, stream=True)
            sess.append(RequestSpec(s.index, s.phase, s.region, s.model, s.stream, s.max_tokens,
                                    f"{prompt_head} turn {k}", session=sid))
    phases.append(Phase("session", sess, concurrency=n_session_groups, sequential_groups=True))

    if showcase:
        # Model switching: the same requests from a region without the model, with and without
        # the opt-in (streamed and unary), so the demo shows the switch and what it changes.
        region, model, _ = showcase
        specs = [spec("substitute", region, model, stream=k < 2, max_tokens=12, allow_substitute=k % 2 == 0)
                 for k in range(n_substitute)]
        phases.append(Phase("substitute", specs, concurrency=2))

    plan = Plan(phases, seed)
    if burst:
        region, model, site = burst
        plan.burst_region, plan.burst_model, plan.burst_site = region, model, site.name
        # Long enough answers that the burst overlaps: ~0.4 s of tokens at the site's speed.
        tps = site.sim.tokens_per_s if site.sim else 100.0
        max_tokens = max(16, min(64, int(tps * 0.4)))
        specs = [spec("burst", region, model, stream=True, max_tokens=max_tokens) for _ in range(n_burst)]
        phases.append(Phase("burst", specs, concurrency=n_burst, spacing_s=0.012))
    return plan


# -- running -------------------------------------------------------------
def _tensor_text(resp: pb.ModelInferResponse) -> list[str]:
    """The BYTES elements of output text_output, from contents or raw_output_contents."""
    out: list[str] = []
    for i, t in enumerate(resp.outputs):
        if t.name != "text_output":
            continue
        if t.contents.bytes_contents:
            out += [b.decode(errors="replace") for b in t.contents.bytes_contents]
        elif i < len(resp.raw_output_contents):
            raw = resp.raw_output_contents[i]
            pos = 0
            while pos + 4 <= len(raw):  # Triton's BYTES layout: 4-byte little-endian length, then bytes
                n = int.from_bytes(raw[pos:pos + 4], "little")
                out.append(raw[pos + 4:pos + 4 + n].decode(errors="replace"))
                pos += 4 + n
    return out


def _param(resp: pb.ModelInferResponse, name: str):
    if name not in resp.parameters:
        return None
    p = resp.parameters[name]
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def _trailers(md) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in md or ():
        out[k] = v.decode(errors="replace") if isinstance(v, bytes) else v
    return out


class Runner:
    """Runs a Plan against a proxy address; one channel per client region and one per session."""

    def __init__(self, target: str, *, deadline_s: float = 15.0,
                 progress: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self.progress = progress or (lambda _m: None)
        self.results: list[Result] = []
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._t0 = 0.0
        self._done = 0
        self._errors = 0
        self._budget_end = float("inf")
        self.unsent = 0  # requests the time budget left unsent
        self._total = 0

    @staticmethod
    def _channel(target: str, key: str) -> grpc.aio.Channel:
        # A local subchannel pool: each client gets its own TCP connection, as separate clients would.
        return grpc.aio.insecure_channel(target, options=[
            ("grpc.use_local_subchannel_pool", 1), ("grpc.primary_user_agent", f"fastpath-demo/{key}")])

    def _stub(self, spec: RequestSpec) -> tuple[pb_grpc.GRPCInferenceServiceStub, grpc.aio.Channel | None]:
        """The stub for a request, and a channel to close after it (a session turn's own connection).

        Each turn of a session comes back on a new connection, as a client that reconnects would:
        the proxy must recognise the session (and may hand it to the kernel) from its metadata alone.
        Other traffic shares one connection per client region.
        """
        if spec.session:
            ch = self._channel(self.target, f"session:{spec.session}:{spec.index}")
            return pb_grpc.GRPCInferenceServiceStub(ch), ch
        key = f"region:{spec.region}"
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = self._channel(self.target, key)
        return pb_grpc.GRPCInferenceServiceStub(ch), None

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    async def one(self, spec: RequestSpec) -> Result:
        res = Result(spec)
        stub, own_channel = self._stub(spec)
        t_start = time.monotonic()
        res.started_s = t_start - self._t0
        site = ""
        call = None
        try:
            if spec.stream:
                async def requests() -> AsyncIterator[pb.ModelInferRequest]:
                    yield spec.request()

                call = stub.ModelStreamInfer(requests(), metadata=spec.metadata(), timeout=self.deadline_s)
                async for msg in call:
                    if msg.error_message:
                        res.error = f"stream error: {msg.error_message}"
                        continue
                    r = msg.infer_response
                    site = site or str(_param(r, "fastpath_site") or "")
                    if res.kv_cache_hit is None and _param(r, "kv_cache_hit") is not None:
                        res.kv_cache_hit = bool(_param(r, "kv_cache_hit"))
                    toks = [t for t in _tensor_text(r) if t]
                    if toks and res.tokens == 0:
                        res.ttft_ms = (time.monotonic() - t_start) * 1000
                    res.tokens += len(toks)
                    res.text += "".join(toks)
            else:
                call = stub.ModelInfer(spec.request(), metadata=spec.metadata(), timeout=self.deadline_s)
                r = await call
                res.ttft_ms = (time.monotonic() - t_start) * 1000
                site = str(_param(r, "fastpath_site") or "")
                hit = _param(r, "kv_cache_hit")
                res.kv_cache_hit = None if hit is None else bool(hit)
                res.text = "".join(_tensor_text(r))
                res.tokens = len(res.text.split())
            trailers = _trailers(await call.trailing_metadata())
            res.ok = not res.error
        except grpc.aio.AioRpcError as e:
            res.error = f"{e.code().name}: {e.details()}"
            trailers = _trailers(e.trailing_metadata())
        except Exception as e:  # noqa: BLE001 - a broken call must not stop the workload
            res.error = f"{type(e).__name__}: {e}"
            trailers = {}
        res.total_ms = (time.monotonic() - t_start) * 1000
        res.ended_s = time.monotonic() - self._t0
        if own_channel is not None:
            await own_channel.close()
        res.decision = trailers.get("x-fastpath-decision", "")
        res.served_model = trailers.get("x-fastpath-served-model", "")
        if trailers.get("x-fastpath-backend"):
            res.backend, res.backend_from = trailers["x-fastpath-backend"], "trailer"
        elif site:
            res.backend, res.backend_from = site, "response"
        if res.ok and spec.stream and res.tokens == 0:
            res.ok, res.error = False, "stream ended without a token"
        return res

    def _record(self, res: Result) -> None:
        self.results.append(res)
        self._done += 1
        self._errors += not res.ok
        step = max(1, self._total // 10)
        if self._done % step == 0 or self._done == self._total:
            self.progress(f"{self._done}/{self._total} requests answered, {self._errors} errors "
                          f"({time.monotonic() - self._t0:.1f} s)")

    async def run_phase(self, phase: Phase) -> None:
        sem = asyncio.Semaphore(max(1, phase.concurrency))

        async def go(spec: RequestSpec) -> None:
            async with sem:
                if time.monotonic() > self._budget_end:
                    self.unsent += 1  # the time budget is spent: requests not yet started are not sent
                    return
                self._record(await self.one(spec))

        if phase.sequential_groups:
            groups: dict[str, list[RequestSpec]] = {}
            for s in phase.specs:
                groups.setdefault(s.session, []).append(s)

            async def chain(specs: list[RequestSpec]) -> None:
                for s in specs:
                    await go(s)

            await asyncio.gather(*(chain(g) for g in groups.values()))
            return
        tasks = []
        for s in phase.specs:
            tasks.append(asyncio.create_task(go(s)))
            if phase.spacing_s:
                await asyncio.sleep(phase.spacing_s)
        await asyncio.gather(*tasks)

    async def run(self, plan: Plan, time_budget_s: float = 45.0) -> list[Result]:
        """Runs every phase in order. No request starts after `time_budget_s`; those started finish
        within their own deadline, so the whole run ends by budget + deadline. Unsent ones are counted."""
        self._t0 = time.monotonic()
        self._budget_end = self._t0 + time_budget_s
        self._total = plan.total
        try:
            for phase in plan.phases:
                if time.monotonic() > self._budget_end:
                    self.unsent += len(phase.specs)
                    self.progress(f"time budget of {time_budget_s:.0f} s spent: phase {phase.name} not run")
                    continue
                self.progress(f"phase {phase.name}: {len(phase.specs)} requests, concurrency {phase.concurrency}")
                before = self.unsent
                await self.run_phase(phase)
                if self.unsent > before:
                    self.progress(f"phase {phase.name} cut short by the time budget: "
                                  f"{self.unsent - before} requests not sent")
        finally:
            await self.close()
        self.results.sort(key=lambda r: r.spec.index)
        return self.results


def run_workload(target: str, plan: Plan, *, time_budget_s: float = 45.0, deadline_s: float = 15.0,
                 progress: Callable[[str], None] | None = None) -> list[Result]:
    """Runs `plan` against the proxy at `target` in a fresh event loop; returns one Result per request."""
    runner = Runner(target, deadline_s=deadline_s, progress=progress)
    return asyncio.run(runner.run(plan, time_budget_s))


def stderr_progress(prefix: str = "workload") -> Callable[[str], None]:
    return lambda msg: print(f"{prefix}: {msg}", file=sys.stderr, flush=True)


__all__ = ["RequestSpec", "Result", "Phase", "Plan", "plan_workload", "choose_burst", "nearest_sites",
           "sites_for", "Runner", "run_workload", "stderr_progress"]
