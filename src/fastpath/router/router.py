"""Picks the backends for one request: filter, score five axes, weight, rank.

A pure function of (request features, fleet snapshot, the proxy's LiveStats):
no I/O, no awaits, no logging. Work is split by how often its inputs change:
- per snapshot (LoadState, built on first use): per-backend load figures,
  then updated row by row as LiveStats reports changes;
- per request shape (an entry cached per policy, client region, model,
  allow-list and cost limit): which backends pass the hard filters and the
  weighted static axes (cost, model affinity, proximity), with excluded
  backends set to +inf;
- per request: TTFT score, capacity and health from the load figures, session
  affinity, ranking. Three ways, chosen per request shape, same arithmetic in
  the same order (so the same decisions, checked by property tests): up to
  SCALAR_MAX candidates a plain Python loop (numpy's per-call overhead
  dominates there); otherwise about ten numpy operations over the fleet, or
  over the gathered candidates when they are a small part of a large fleet.

The shape follows the Gateway API Inference Extension's endpoint picker:
filters (fastpath.router.filters) -> scorers (fastpath.router.axes, each
axis written once in its vector, scalar and explained forms) -> weights ->
picker (rank, plus a bounded share of exploration), composed statically.

Semantics, in order:
1. Hard filters, in order: model, allowed regions, max cost, health (with a
   panic threshold: below it every backend left by the other filters is a
   candidate, and the trailer says panic=HEALTHY/TOTAL), the proxy's failure
   cool-down. No candidate left: `ranked` is empty and `reason` names the
   filter that emptied the set and why.
2. Axes, each in [0, 1] (1 = best):
   ttft      S / (S + predicted TTFT), S = the request's SLO, else TTFT_SCALE_MS;
             the prediction is in fastpath.router.load (queueing 1/(1-rho),
             prefill, RTT from the client region, blended with observed TTFT:
             the controller's figure for the client's region when it has one,
             else the proxy's own, else the controller's overall figure);
   cost      (ref - cost) / (ref - cheapest in fleet), ref = the request's
             max_cost, else the dearest backend in the fleet;
   affinity  1 on the session's previous backend (the proxy's own memory, else
             the controller's session map) unless its utilisation is above
             config.affinity_max_utilisation, where it drops to 0; other
             backends 0.5 for a model the request named (they serve it), 0.25
             for an unknown model; without a known session: 1 / 0.5; a request
             with prompt blocks (prefix affinity) starts every backend at the
             0.5 / 0.25 level and lifts each towards 1 by its matched share of
             the prompt's blocks (see fastpath.router.axes.Affinity);
   capacity  0.5 x free batch slots + 0.25 x free KV cache + 0.25 x power
             headroom (draw vs budget);
   proximity RTT_SCALE / (RTT_SCALE + RTT) from the client region (0.5 for
             an unknown region), times health (1 - error rate, from the
             telemetry and from the proxy's own failures).
3. Score = sum of weights x axes (the policy's weights, normalised); ranked
   best first; exact ties go to the backend listed first in the config.
4. SLO (x-fastpath-slo-ttft-ms) is soft: backends predicted to meet it come
   first, by score; when none does, the request is not refused: the rest
   follow as fallbacks ordered by predicted TTFT, and the decision header
   says slo=missed. An SLO that can only be refused would turn a slow answer
   into no answer.
5. Exploration: one request in config.explore_every whose candidates include
   a backend the proxy has not observed yet (new, or back from cool-down or
   from unhealthy) and at most EXPLORE_RTT_SLACK_MS farther than the winner
   goes to the best-scored such backend first, so a backend scored only from
   priors gets observed; the trailer says explore=1. Requests whose winner
   holds their prompt's prefix are not used to explore.

route() changes nothing but its caches; learn(decision) then records the
request's prompt blocks for the backend it was sent to (the prefix index
learns from its own decisions, as the endpoint picker's does).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from fastpath.config import AXES, Config, Policy
from fastpath.router.axes import NEUTRAL, TTFT, TTFT_SCALE_MS, WARM_KNOWN_MODEL, WARM_UNKNOWN_MODEL
from fastpath.router.axes import Affinity, Capacity, Cost, Proximity
from fastpath.router.features import RequestFeatures
from fastpath.router.fixed3 import fixed3
from fastpath.router.filters import CooldownFilter, Shape, apply_static
from fastpath.router.live import LiveStats
from fastpath.router.load import OBSERVED_WEIGHT, LoadState
from fastpath.router.prefix import PrefixIndex
from fastpath.router.snapshot import FleetSnapshot

__all__ = ["TTFT_SCALE_MS", "Decision", "Router"]
MAX_RANKED: Final = 16  # candidates returned for failover
TIE_EPS: Final = 1e-9  # per config position: exact ties go to the earlier backend
SLO_MISS: Final = 1e6  # offset that ranks SLO misses after every SLO hit
MAX_ENTRIES: Final = 4096  # cached request shapes per snapshot before the cache is cleared
PARTITION_MIN: Final = 256  # fleets at least this large use argpartition for the top candidates
# In fleets of at least PARTITION_MIN, a request shape whose candidates are at most
# 1/SUBSET_RATIO of the fleet is scored on its candidates only (gathered first).
SUBSET_RATIO: Final = 4
# Up to this many candidates a plain Python loop beats numpy's per-call overhead
# (measured with bench/router_cost.py; see Router.scalar_max).
SCALAR_MAX = 16
# Exploration tries a not yet observed backend only when it is at most this much farther
# (RTT from the client's region) than the winner: a farther one is scored fairly by its RTT.
EXPLORE_RTT_SLACK_MS: Final = 5.0
# Byte map that turns anything but visible ASCII and space into "?" (header values).
_HEADER_SAFE: Final = bytes(b if 0x20 <= b < 0x7F else 0x3F for b in range(256))
_NO_SHARES: Final[dict[int, float]] = {}


@dataclass(slots=True)
class _Entry:
    """What the router precomputes for one request shape on one snapshot."""

    policy: str
    weights: tuple[float, float, float, float, float]  # AXES order
    valid: np.ndarray  # bool: passes the static filters
    valid_l: list[bool]
    n_valid: int
    bad: np.ndarray  # -(static part of the score) + tie-break; +inf if not valid
    bad_session: np.ndarray  # same, with the affinity baseline of a request with a session or prompt blocks
    cost_score: np.ndarray
    proximity: np.ndarray
    w_proximity: np.ndarray  # weight x proximity score
    rtt: np.ndarray | None  # None: unknown client region
    region_observed: np.ndarray | None  # bool: the controller has a TTFT seen from this region
    region_observed_w: np.ndarray | None  # OBSERVED_WEIGHT x that TTFT
    warm: float  # affinity of a backend that serves the model
    reason: str = ""  # set for an unknown policy (the request's fault)
    refusal: str = ""  # set when a static filter emptied the set
    panic: str = ""  # "HEALTHY/TOTAL" when the health filter is in panic
    shape: Shape | None = None
    # The same per candidate, as Python lists, for the small-fleet path.
    cand: list[int] = field(default_factory=list)
    bad_c: list[float] = field(default_factory=list)
    bad_session_c: list[float] = field(default_factory=list)
    rtt_c: list[float] = field(default_factory=list)
    w_proximity_c: list[float] = field(default_factory=list)
    region_observed_w_c: list[float] = field(default_factory=list)  # -1: none for this candidate
    # Candidate indices when the numpy arrays above (valid, bad, bad_session, w_proximity,
    # rtt, region_observed, region_observed_w) hold candidates only; None = whole fleet.
    sub: np.ndarray | None = None
    tie: np.ndarray | None = None  # index x TIE_EPS (in the same index space as bad)
    valid_all: np.ndarray | None = None  # bool[N] after the static filters (for refusals)
    served: list[str] | None = None  # model each backend would serve (substitution allowed), by backend
    penalty: np.ndarray | None = None  # score subtracted for serving a substitute, by backend
    pos: dict[int, int] = field(default_factory=dict)  # backend -> position in `sub` (when sub is set)
    cand_mask: int = 0  # the candidates as a bitmask (bit i = backend i), for the prefix index
    # cost_score, proximity and penalty as lists, made when a decision of this shape is first
    # explained (reading numpy scalars per trailer cost more than the whole list once per shape)
    explain_l: tuple[list[float], list[float], list[float] | None] | None = None


class _Explain:
    """Decision-time figures kept so header() can show why, after the fact.

    Plain classes with their own __init__ (here and Decision): a dataclass's generated
    __init__ runs as interpreted Python even in the compiled build, two per route().
    """

    def __init__(self, entry: _Entry, scale_ms: float, pred: np.ndarray | dict[int, float],
                 capacity: np.ndarray | dict[int, float], health: np.ndarray | dict[int, float],
                 sticky: int, sticky_affinity: float, sub: np.ndarray | None = None, base: float = 0.0,
                 shares: dict[int, float] | None = None, matched: dict[int, int] | None = None,
                 total: int = 0, blocks: tuple[int, ...] = ()) -> None:
        self.entry = entry
        self.scale_ms = scale_ms
        self.pred = pred  # by backend index
        self.capacity = capacity
        self.health = health
        self.sticky = sticky  # session's backend, -1 = none
        self.sticky_affinity = sticky_affinity
        self.sub = sub  # pred/capacity/health hold these backends only (sorted)
        self.base = base  # affinity base of every backend but the sticky one
        self.shares: dict[int, float] = {} if shares is None else shares  # prefix share by backend (0 when absent)
        self.matched: dict[int, int] = {} if matched is None else matched  # prompt blocks each backend holds
        self.total = total  # the request's prompt blocks
        self.blocks = blocks


class Decision:
    """Where one request goes (ranked candidates) and why (explain, for the trailer)."""

    def __init__(self, ranked: list[int], policy: str, reason: str = "", slo_met: int = -1,
                 explain: _Explain | None = None, invalid: bool = False, panic: str = "",
                 explore: bool = False) -> None:
        self.ranked = ranked  # candidate backend indices, best first (failover walks this list); [] = none
        self.policy = policy
        self.reason = reason  # "" when there are candidates; else why not
        self.slo_met = slo_met  # how many leading entries of `ranked` are predicted to meet the SLO; -1 = no SLO
        self.explain = explain
        # True when the request itself is at fault (an unknown policy name): the proxy
        # should answer INVALID_ARGUMENT, not UNAVAILABLE.
        self.invalid = invalid
        self.panic = panic  # "HEALTHY/TOTAL" when routed in panic (too few healthy backends)
        self.explore = explore  # ranked[0] is a not yet observed backend tried on purpose
        # _row(0) and header(0), kept: the trailer and the decision metrics both read row 0, and the
        # proxy builds the trailer while the backend works, not when the response is back
        self.row0: tuple[float, float, float, float, float, float, float] | None = None
        self.header0: bytes | None = None

    def __repr__(self) -> str:
        return (f"Decision(ranked={self.ranked!r}, policy={self.policy!r}, reason={self.reason!r}, "
                f"slo_met={self.slo_met!r}, invalid={self.invalid!r}, panic={self.panic!r}, explore={self.explore!r})")

    def _row(self, position: int) -> tuple[float, float, float, float, float, float, float]:
        """(score, ttft, cost, affinity, capacity, proximity, predicted TTFT ms) of ranked[position]."""
        if position == 0 and self.row0 is not None:
            return self.row0
        row = self._compute_row(position)
        if position == 0:
            self.row0 = row
        return row

    def _compute_row(self, position: int) -> tuple[float, float, float, float, float, float, float]:
        x = self.explain
        if x is None or not 0 <= position < len(self.ranked):
            raise IndexError(f"no candidate at position {position}: {len(self.ranked)} ranked")
        e = x.entry
        i = self.ranked[position]
        k = i if x.sub is None else int(np.searchsorted(x.sub, i))
        base = x.sticky_affinity if i == x.sticky else x.base
        affinity = Affinity.explain(base, x.shares.get(i, 0.0))
        pred = float(x.pred[k])
        ttft = TTFT.explain(x.scale_ms, pred)
        lists = e.explain_l
        if lists is None:
            lists = e.explain_l = (e.cost_score.tolist(), e.proximity.tolist(),
                                   None if e.penalty is None else e.penalty.tolist())
        cost_score, proximity_score, penalty = lists
        cost = Cost.explain(cost_score, i)
        capacity = Capacity.explain(float(x.capacity[k]))
        proximity = Proximity.explain(proximity_score[i], float(x.health[k]))
        w = e.weights
        score = w[0] * ttft + w[1] * cost + w[2] * affinity + w[3] * capacity + w[4] * proximity
        if penalty is not None:
            score = max(0.0, score - penalty[i])
        return score, ttft, cost, affinity, capacity, proximity, pred

    @property
    def substitutes(self) -> bool:
        """Substitution was allowed and the requested model has a group: a ranked backend may serve
        another model (see served_model)."""
        x = self.explain
        return x is not None and x.entry.served is not None
    def predicted_ttft_ms(self, position: int = 0) -> float:
        """The TTFT the router predicted for ranked[position] (0.0 when not known); what hedging
        multiplies, without computing the other axes."""
        x = self.explain
        if x is None or not 0 <= position < len(self.ranked):
            return 0.0
        i = self.ranked[position]
        k = i if x.sub is None else int(np.searchsorted(x.sub, i))
        return float(x.pred[k])

    def served_model(self, position: int = 0) -> str:
        """The model ranked[position] serves the request with: a substitute when substitution
        was allowed and won; "" when the request's own model (no rewrite needed)."""
        x = self.explain
        if x is None or not 0 <= position < len(self.ranked):
            return ""
        e = x.entry
        served = e.served
        if served is None:
            return ""
        m = served[self.ranked[position]]
        return "" if e.shape is None or m == e.shape.model else m

    def axes(self, position: int = 0) -> dict[str, float]:
        """The five axis scores, the weighted score and the predicted TTFT of ranked[position]."""
        row = self._row(position)
        return dict(zip(("score", *AXES, "predicted_ttft_ms"), row))

    def prefix(self, position: int = 0) -> tuple[int, int]:
        """(matched, total) prompt blocks at ranked[position]; (0, 0) without prompt blocks."""
        x = self.explain
        if x is None or not x.total or not 0 <= position < len(self.ranked):
            return 0, 0
        return x.matched.get(self.ranked[position], 0), x.total

    def header(self, position: int = 0) -> bytes:
        """Value of the x-fastpath-decision trailer for ranked[position]."""
        if position == 0:
            if self.header0 is None:
                self.header0 = self._header(0)
            return self.header0
        return self._header(position)

    def _header(self, position: int) -> bytes:
        if not self.ranked:
            # The reason quotes telemetry text (health details): keep the value a legal header.
            text = self.reason.replace(";", ",").encode("ascii", "replace").translate(_HEADER_SAFE)
            return b"policy=" + self.policy.encode("ascii", "replace").translate(_HEADER_SAFE) + b";reason=" + text
        score, ttft, cost, affinity, capacity, proximity, _ = self._row(position)
        out = b"".join((b"policy=", self.policy.encode("ascii", "replace"), b";score=", fixed3(score),
                        b";ttft=", fixed3(ttft), b";cost=", fixed3(cost), b";affinity=", fixed3(affinity),
                        b";capacity=", fixed3(capacity), b";proximity=", fixed3(proximity)))
        if 0 <= self.slo_met <= position:
            out += b";slo=missed"
        x = self.explain
        if x is not None and x.total:
            out += b";prefix=%d/%d" % (x.matched.get(self.ranked[position], 0), x.total)
        if self.panic:
            out += b";panic=" + self.panic.encode("ascii")
        served = self.served_model(position)
        if served:
            out += b";served=" + served.encode("ascii", "replace").translate(_HEADER_SAFE)
        if self.explore and position == 0:
            out += b";explore=1"
        return out


class Router:
    """Ranks backends for requests; one per proxy process (it caches per snapshot)."""

    def __init__(self, config: Config, *, max_ranked: int = MAX_RANKED, scalar_max: int | None = None,
                 explore_every: int | None = None) -> None:
        """max_ranked: candidates kept for failover; scalar_max: request shapes with at most
        this many candidates are scored in plain Python, larger ones with numpy (same results);
        explore_every: overrides config.explore_every (0 = never explore)."""
        self.config = config
        self.max_ranked = max_ranked
        self.scalar_max = SCALAR_MAX if scalar_max is None else scalar_max
        self.affinity_max_utilisation = config.affinity_max_utilisation
        self.panic_threshold = config.panic_threshold
        self.explore_every = config.explore_every if explore_every is None else explore_every
        self.model_groups = config.model_groups
        # Policies whose requests opt in to substitutes without the header; kept by name from the
        # config, so a policy's weights pushed later (SetPolicy) keep its opt-in.
        self.substitute_policies = frozenset(n for n, p in config.policies.items() if p.allow_substitute)
        self._routed = 0
        pc = config.prefix
        self.prefix_on = pc.enabled
        self.min_match = pc.min_match_blocks
        self.load_bound = pc.load_bound
        self.prefix = PrefixIndex(len(config.backends), pc.capacity_blocks, pc.ttl_s)
        self.set_policies(config.policies, config.default_policy)
        self._state: LoadState | None = None
        self._healthy: np.ndarray | None = None
        self._merged: tuple = ()

    def set_policies(self, policies: Mapping[str, Policy], default_policy: str) -> None:
        """Replaces the named weight sets (e.g. after the control API's SetPolicy)."""
        if default_policy not in policies:
            raise ValueError(f"default policy {default_policy!r} is not among {sorted(policies)}")
        weights: dict[str, tuple[float, float, float, float, float]] = {}
        for name, p in policies.items():
            w = [max(0.0, float(p.weights.get(a, 0.0))) for a in AXES]
            total = sum(w)
            if not total > 0:
                raise ValueError(f"policy {name!r}: at least one weight must be positive")
            weights[name] = tuple(x / total for x in w)  # type: ignore[assignment]
        self.weights = weights
        self.default_policy = default_policy
        self._entries: dict[tuple, _Entry] = {}

    # -- per snapshot ------------------------------------------------------------------

    def _new_state(self, snap: FleetSnapshot, live: LiveStats) -> LoadState:
        state = self._state = LoadState(snap, live)
        self._entries = {}
        old = self._healthy
        if old is not None and len(old) == snap.n:
            for j in np.flatnonzero(snap.healthy & ~old).tolist():
                live.mark_unobserved(j)  # back from unhealthy: explore it again
        self._healthy = snap.healthy
        if snap.prefix_blocks and snap.prefix_blocks is not self._merged:
            self._merged = snap.prefix_blocks
            index = self.prefix
            for i, blocks in snap.prefix_blocks:
                if i < index.n:
                    index.merge_new(i, blocks)
        return state

    def load_share(self, i: int) -> float:
        """Backend i's load over its batch slots as of the latest route() (>= 1: every slot busy);
        admission control's headroom test (fastpath.router.call_class)."""
        state = self._state
        if state is None:
            return 0.0
        inflight = float(state.live.inflight[i])
        load = state.load_offset[i] + inflight
        return float(max(load, inflight) * state.inv_slots[i])

    # -- per request -------------------------------------------------------------------

    def route(self, f: RequestFeatures, snap: FleetSnapshot, live: LiveStats) -> Decision:
        state = self._state
        if state is None or state.snap is not snap or state.live is not live:
            state = self._new_state(snap, live)
        elif state.position != live.changes_end:
            state.refresh()
        policy = f.policy or self.default_policy
        key: tuple = (policy, f.region, f.model, f.allow_regions, f.max_cost)
        if (f.allow_substitute or (self.substitute_policies and policy in self.substitute_policies)) \
                and f.model in self.model_groups:
            key = (*key, True)  # a request shape of its own: more candidates, penalised substitutes
        e = self._entries.get(key)
        if e is None:
            e = self._entry(key, snap, live)
        if e.n_valid == 0:
            if e.reason:
                return Decision([], policy, e.reason, invalid=True)
            return Decision([], policy, e.refusal)

        scale = f.slo_ttft_ms if f.slo_ttft_ms > 0.0 else TTFT_SCALE_MS
        sticky = -1
        if f.session:
            j = live.sessions.get(f.session)
            if j is None:
                j = snap.session_backend.get(f.session)
            if j is not None and 0 <= j < snap.n and e.valid_l[j]:
                sticky = j
        blocks = f.prompt_blocks
        total = len(blocks) if self.prefix_on else 0
        matched: dict[int, int] = {}
        shares = _NO_SHARES
        if total >= self.min_match:
            matched = self.prefix.matches(blocks, self.min_match, None, e.cand_mask)
            if matched:
                shares = Affinity.prefix_shares(matched, total, state.util_l, self.min_match, self.load_bound)
        else:
            total = 0
        if e.n_valid <= self.scalar_max:
            d = self._route_scalar(f, e, state, live, snap, policy, scale, sticky, total, shares)
        else:
            d = self._route_vector(f, e, state, live, snap, policy, scale, sticky, total, shares)
        if total and d.explain is not None:
            d.explain.matched = matched
            d.explain.blocks = blocks
        return d

    def learn(self, d: Decision, position: int = 0) -> None:
        """The request of `d` is being sent to ranked[position]: its prompt blocks will be in
        that backend's KV cache (the prefix index learns from its own decisions, after them)."""
        x = d.explain
        if x is None or not x.total or not 0 <= position < len(d.ranked):
            return
        i = d.ranked[position]
        self.prefix.learn(i, x.blocks, x.matched.get(i, 0))

    def _route_vector(self, f: RequestFeatures, e: _Entry, state: LoadState, live: LiveStats,
                      snap: FleetSnapshot, policy: str, scale: float, sticky: int, total: int,
                      shares: dict[int, float]) -> Decision:
        """route() over numpy arrays: about ten array operations over the fleet or the candidates."""
        w_ttft, _, w_aff, w_cap, _ = e.weights
        sub = e.sub
        if sub is None:
            a, c = state.a, state.c
            capacity = state.capacity.copy()
            health = state.health.copy()
            at = sticky
        else:  # few candidates in a large fleet: gather them, score only them
            a, c = state.a[sub], state.c[sub]
            capacity = state.capacity[sub]
            health = state.health[sub]
            at = int(np.searchsorted(sub, sticky)) if sticky >= 0 else -1
        if e.rtt is not None:
            pred = a * e.rtt
            pred += c
        else:
            pred = c.copy()
        if e.region_observed is not None:
            model = state.model if sub is None else state.model[sub]
            regional = TTFT.regional(model, e.rtt if e.rtt is not None else 0.0, e.region_observed_w)
            pred = np.where(e.region_observed, regional, pred)
        sticky_affinity = 0.0
        ttft_w = TTFT.weighted(w_ttft * scale, scale, pred)
        base = 0.5 * e.warm if (sticky >= 0 or total) else e.warm
        if sticky < 0 and not total:
            bad = e.bad - ttft_w
        else:
            bad = e.bad_session - ttft_w
            if sticky >= 0:
                if state.util[sticky] <= self.affinity_max_utilisation:
                    sticky_affinity = 1.0
                bad[at] -= w_aff * (sticky_affinity - base)
        if shares:
            for i, s in shares.items():
                k = i if sub is None else e.pos.get(i, -1)
                if k >= 0:
                    bad[k] -= w_aff * Affinity.lift(sticky_affinity if i == sticky else base, s)
        bad -= w_cap * capacity
        bad -= e.w_proximity * health

        n_valid = e.n_valid
        if live.n_cooling:
            cooling = live.cooling()
            if cooling is not None:
                if sub is not None:
                    cooling = cooling[sub]
                bad[cooling] = np.inf
                n_valid -= int(np.count_nonzero(cooling & e.valid))
                if n_valid == 0:
                    return self._cooled(e, snap, live, policy)

        explain = _Explain(e, scale, pred, capacity, health, sticky, sticky_affinity, sub, base, shares, {}, total)
        slo_met = -1
        if f.slo_ttft_ms > 0.0:
            miss = pred > f.slo_ttft_ms
            if miss.any():
                # Misses rank after every hit, best-predicted first; excluded stay at +inf.
                late = SLO_MISS + pred
                late += e.tie
                bad = np.maximum(np.where(miss, late, bad), bad)
                top = self._top(bad, n_valid)
                slo_met = int((bad[top] < SLO_MISS).sum())
            else:
                top = self._top(bad, n_valid)
                slo_met = len(top)
        else:
            top = self._top(bad, n_valid)
        ranked = top.tolist() if sub is None else sub[top].tolist()
        d = Decision(ranked, policy, "", slo_met, explain, panic=e.panic)
        if self.explore_every > 0 and live.n_unobserved and ranked[0] not in shares:
            self._routed += 1
            if self._routed >= self.explore_every:
                unobserved = live.unobserved if sub is None else live.unobserved[sub]
                if e.rtt is not None:  # only backends as near as the winner: a farther one is no surprise
                    unobserved = unobserved & (e.rtt <= e.rtt[top[0]] + EXPLORE_RTT_SLACK_MS)
                pick = np.where(unobserved, bad, np.inf)
                k = int(pick.argmin())
                if pick[k] < (SLO_MISS if slo_met >= 0 else np.inf):
                    self._routed = 0
                    self._explore(d, k if sub is None else int(sub[k]))
        return d

    def _route_scalar(self, f: RequestFeatures, e: _Entry, state: LoadState, live: LiveStats,
                      snap: FleetSnapshot, policy: str, scale: float, sticky: int, total: int,
                      shares: dict[int, float]) -> Decision:
        """route() for few candidates: the same arithmetic, in the same order, per candidate."""
        w_ttft, _, w_aff, w_cap, _ = e.weights
        w_scale = w_ttft * scale
        a, c, capacity, health, model = state.a_l, state.c_l, state.capacity_l, state.health_l, state.model_l
        regional = e.region_observed_w_c if e.region_observed is not None else None
        cooling = live.cooling() if live.n_cooling else None
        slo = f.slo_ttft_ms
        sticky_affinity = 0.0
        base = 0.5 * e.warm if (sticky >= 0 or total) else e.warm
        if sticky >= 0 or total:
            statics = e.bad_session_c
        else:
            statics = e.bad_c
        sticky_adjust = 0.0
        if sticky >= 0:
            if state.util_l[sticky] <= self.affinity_max_utilisation:
                sticky_affinity = 1.0
            sticky_adjust = w_aff * (sticky_affinity - base)
        preds: dict[int, float] = {}
        caps: dict[int, float] = {}
        oks: dict[int, float] = {}
        items: list[tuple[float, int]] = []
        for k, (i, b, r, wp) in enumerate(zip(e.cand, statics, e.rtt_c, e.w_proximity_c)):
            if cooling is not None and cooling[i]:
                continue
            if regional is not None and regional[k] >= 0.0:
                p = TTFT.regional_scalar(model[i], r, regional[k])
            else:
                p = a[i] * r + c[i]
            b = b - TTFT.weighted_scalar(w_scale, scale, p)
            if i == sticky:
                b -= sticky_adjust
            if shares:
                s = shares.get(i)
                if s is not None:
                    b -= w_aff * Affinity.lift_scalar(sticky_affinity if i == sticky else base, s)
            cp = capacity[i]
            hl = health[i]
            b -= w_cap * cp
            b -= wp * hl
            if slo > 0.0 and p > slo:
                b = max(SLO_MISS + p + i * TIE_EPS, b)
            preds[i] = p
            caps[i] = cp
            oks[i] = hl
            items.append((b, i))
        if not items:
            return self._cooled(e, snap, live, policy)
        items.sort()
        top = items[: self.max_ranked]
        slo_met = -1 if slo <= 0.0 else sum(1 for b, _ in top if b < SLO_MISS)
        d = Decision([i for _, i in top], policy, "", slo_met,
                     _Explain(e, scale, preds, caps, oks, sticky, sticky_affinity, None, base, shares, {}, total),
                     panic=e.panic)
        if self.explore_every > 0 and live.n_unobserved and top[0][1] not in shares:
            self._routed += 1
            if self._routed >= self.explore_every:
                unobserved = live.unobserved
                limit = SLO_MISS if slo_met >= 0 else float("inf")
                rtt = {i: r for i, r in zip(e.cand, e.rtt_c)} if e.rtt is not None else None
                near = rtt[top[0][1]] + EXPLORE_RTT_SLACK_MS if rtt is not None else 0.0
                for b, i in items:
                    if b >= limit:
                        break
                    if unobserved[i] and (rtt is None or rtt[i] <= near):
                        self._routed = 0
                        self._explore(d, i)
                        break
        return d

    @staticmethod
    def _explore(d: Decision, i: int) -> None:
        """Puts backend i (not yet observed; the best-scored such candidate) first.

        With an SLO only a backend predicted to meet it is explored, so the
        entries meeting it stay a prefix of `ranked` and slo_met is unchanged
        (a candidate outside the top list that meets it means every entry does).
        """
        ranked = d.ranked
        if i in ranked:
            ranked.remove(i)
        else:
            ranked.pop()
        ranked.insert(0, i)
        d.explore = True

    def _cooled(self, e: _Entry, snap: FleetSnapshot, live: LiveStats, policy: str) -> Decision:
        """Every candidate is in the proxy's failure cool-down."""
        shape = e.shape or Shape("", (), 0.0)
        valid = e.valid_all if e.valid_all is not None else e.valid
        return Decision([], policy, f"filter {CooldownFilter.name}: "
                        + CooldownFilter.refusal(snap, live, valid, shape), panic=e.panic)

    def _top(self, bad: np.ndarray, n_valid: int) -> np.ndarray:
        """Indices of the k lowest `bad` values (k = min(n_valid, max_ranked)), in order."""
        k = min(n_valid, self.max_ranked)
        if len(bad) >= PARTITION_MIN and k < len(bad):
            part = bad.argpartition(k - 1)[:k]
            part.sort()
            return part[bad[part].argsort(kind="stable")]
        # Stable, so exact ties go to the lower index as in the Python path; the method,
        # because np.argsort() adds a dispatch layer.
        return bad.argsort(kind="stable")[:k]

    # -- per request shape (cached) ------------------------------------------------------

    def _entry(self, key: tuple, snap: FleetSnapshot, live: LiveStats) -> _Entry:
        policy, region, model, allow, max_cost = key[:5]
        group = self.model_groups.get(model) if len(key) > 5 else None
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {}
        n = snap.n
        weights = self.weights.get(policy)
        if weights is None:
            e = _Entry(
                policy, (0.0,) * 5, np.zeros(n, bool), [False] * n, 0, np.full(n, np.inf), np.full(n, np.inf),
                np.zeros(n), np.zeros(n), np.zeros(n), None, None, None, 0.0,
                reason=f"unknown policy {policy!r}: configured policies are {sorted(self.weights)}; "
                f"name one in x-fastpath-policy or omit the header for the default {self.default_policy!r}",
            )
            self._entries[key] = e
            return e
        shape = Shape(model, allow, max_cost, group.substitutes if group else ())
        filtered = apply_static(snap, live, shape, self.panic_threshold)
        valid = filtered.valid
        cost_score = Cost.vector(snap.cost, max_cost, snap.cost_min) if max_cost > 0.0 else snap.cost_score
        proximity = snap.proximity_score.get(region)
        if proximity is None:
            proximity = np.full(n, NEUTRAL)
        rtt = snap.rtt_ms.get(region)
        observed = snap.ttft_observed_by_region.get(region)
        region_observed = region_observed_w = None
        if observed is not None and (observed > 0.0).any():
            region_observed = observed > 0.0
            region_observed_w = OBSERVED_WEIGHT * observed
        warm = WARM_KNOWN_MODEL if model else WARM_UNKNOWN_MODEL
        _, w_cost, w_aff, _, w_prox = weights
        static = w_cost * cost_score + w_aff * warm
        served: list[str] | None = None
        penalty = None
        if group is not None:  # each backend serves the first model of the group it has, penalised by its rank
            order = (model, *group.substitutes)
            served = [next((m for m in order if m in snap.models[i]), "") for i in range(n)]
            penalty = np.array([group.penalty * order.index(m) if m else 0.0 for m in served])
            static = static - penalty
        tie = np.arange(n, dtype=np.float64) * TIE_EPS
        bad = np.where(valid, tie - static, np.inf)
        bad_session = np.where(valid, bad + w_aff * 0.5 * warm, np.inf)
        cand = np.flatnonzero(valid)
        e = _Entry(
            policy=policy,
            weights=weights,
            valid=valid,
            valid_l=valid.tolist(),
            n_valid=int(np.count_nonzero(valid)),
            bad=bad,
            bad_session=bad_session,
            cost_score=cost_score,
            proximity=proximity,
            w_proximity=w_prox * proximity,
            rtt=rtt,
            region_observed=region_observed,
            region_observed_w=region_observed_w,
            warm=warm,
            refusal=f"filter {filtered.refused_by}: {filtered.reason}" if filtered.refused_by else "",
            panic=filtered.panic,
            shape=shape,
            cand=cand.tolist(),
            bad_c=bad[cand].tolist(),
            bad_session_c=bad_session[cand].tolist(),
            rtt_c=(rtt[cand] if rtt is not None else np.zeros(len(cand))).tolist(),
            w_proximity_c=(w_prox * proximity)[cand].tolist(),
            region_observed_w_c=(np.where(region_observed, region_observed_w, -1.0)[cand].tolist()
                                 if region_observed is not None and region_observed_w is not None else []),
            valid_all=valid,
            served=served,
            penalty=penalty,
        )
        e.tie = tie
        mask = 0
        for i in e.cand:
            mask |= 1 << i
        e.cand_mask = mask
        if n >= PARTITION_MIN and e.n_valid * SUBSET_RATIO <= n:
            e.sub = cand
            e.pos = dict(zip(e.cand, range(len(e.cand))))
            e.tie = tie[cand]
            e.valid = valid[cand]
            e.bad = bad[cand]
            e.bad_session = bad_session[cand]
            e.w_proximity = e.w_proximity[cand]
            if rtt is not None:
                e.rtt = rtt[cand]
            if region_observed is not None and region_observed_w is not None:
                e.region_observed = region_observed[cand]
                e.region_observed_w = region_observed_w[cand]
        self._entries[key] = e
        return e

