"""An immutable view of the fleet that the router scores against.

The slow path builds one whenever telemetry changes and swaps it in; the fast
path only reads it. Everything that does not depend on a request is computed
here, once per snapshot, as read-only numpy arrays in config order: model
masks, proximity per client region, cost scores, the static part of the
capacity score. A request then costs a handful of array operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from fastpath.config import Config
from fastpath.gen import control_pb2

DEFAULT_SLOTS = 8.0  # batch slots assumed when neither telemetry nor config says
DEFAULT_PREFILL_MS = 30.0  # prefill time assumed for a backend without a sim spec
PROXIMITY_SCALE_MS = 50.0  # RTT at which the proximity score is 0.5
NEUTRAL = 0.5  # score of an axis the router knows nothing about
# Telemetry is clamped to these so that no figure, however wrong, can overflow a
# score to inf or NaN (a scrape reading 1e308 requests waiting is a broken exporter).
MAX_REQUESTS = 1e6
MAX_MS = 1e7
MAX_WATTS = 1e9
MAX_COST = 1e12


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class FleetSnapshot:
    """Per-backend arrays (index i = config.backends[i]) plus learned sessions."""

    names: tuple[str, ...]
    addresses: tuple[str, ...]
    version: int
    regions: tuple[str, ...]  # site region of each backend
    models: tuple[frozenset[str], ...]
    model_mask: Mapping[str, np.ndarray]  # model -> bool[N]
    cost: np.ndarray  # cost per 1k tokens
    cost_score: np.ndarray  # cheapest in the fleet 1 .. dearest 0
    cost_min: float
    cost_max: float
    prefill_ms: np.ndarray
    slots: np.ndarray  # batch slots (max_num_seqs), >= 1
    healthy: np.ndarray  # bool, from telemetry (True without telemetry)
    health_detail: tuple[str, ...]
    has_metrics: np.ndarray  # bool
    waiting: np.ndarray
    running: np.ndarray
    kv_usage: np.ndarray  # 0..1
    power_draw_watts: np.ndarray  # 0 = unknown
    power_budget_watts: np.ndarray  # 0 = no budget
    ttft_observed_ms: np.ndarray  # 0 = none
    ttft_observed_by_region: Mapping[str, np.ndarray]  # client region -> ms, 0 = none
    error_rate: np.ndarray  # 0..1
    rtt_ms: Mapping[str, np.ndarray]  # client region -> RTT to each backend
    proximity_score: Mapping[str, np.ndarray]  # client region -> score in [0, 1]
    capacity_static: np.ndarray  # the part of the capacity score that load does not move
    session_backend: Mapping[str, int]
    index: Mapping[str, int]  # backend name -> i

    @property
    def n(self) -> int:
        return len(self.names)


def _clip01(a: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _nonneg(x: float) -> float:
    return x if x > 0.0 else 0.0  # also maps NaN to 0


def build_snapshot(config: Config, telemetry: control_pb2.FleetTelemetry | None = None) -> FleetSnapshot:
    """Static parts from the config, live parts from the controller's telemetry.

    A backend missing from the telemetry, or reported without metrics, is
    scored from the proxy's own observations (LiveStats) alone; it is healthy
    unless the telemetry says otherwise. Telemetry for unknown backend names
    and sessions pinned to unknown backends are ignored.
    """
    backends = config.backends
    n = len(backends)
    names = tuple(b.name for b in backends)
    index = {name: i for i, name in enumerate(names)}
    regions = tuple(b.region for b in backends)

    cost = np.array([b.cost_per_1k_tokens for b in backends], dtype=np.float64)
    priced = np.minimum(cost, MAX_COST)  # scores stay finite even for an "inf" price in the config
    cmin, cmax = float(priced.min()), float(priced.max())
    cost_score = np.ones(n) if cmax <= cmin else (cmax - priced) / (cmax - cmin)

    masks: dict[str, np.ndarray] = {}
    for i, b in enumerate(backends):
        for m in b.models:
            masks.setdefault(m, np.zeros(n, dtype=bool))[i] = True

    prefill = np.array([b.sim.prefill_ms if b.sim else DEFAULT_PREFILL_MS for b in backends], dtype=np.float64)
    slots = np.array([b.sim.slots if b.sim else DEFAULT_SLOTS for b in backends], dtype=np.float64)
    budget = np.array([b.power_budget_watts for b in backends], dtype=np.float64)
    healthy = np.ones(n, dtype=bool)
    detail = [""] * n
    has_metrics = np.zeros(n, dtype=bool)
    waiting = np.zeros(n)
    running = np.zeros(n)
    kv = np.zeros(n)
    draw = np.zeros(n)
    observed = np.zeros(n)
    by_region: dict[str, np.ndarray] = {}
    error = np.zeros(n)
    sessions: dict[str, int] = {}
    version = 0

    if telemetry is not None:
        version = int(telemetry.version)
        for t in telemetry.backends:
            i = index.get(t.name)
            if i is None:
                continue
            healthy[i] = t.healthy
            detail[i] = t.health_detail
            error[i] = _nonneg(t.error_rate)
            observed[i] = _nonneg(t.ttft_ms_observed)
            for region, ms in t.ttft_ms_by_region.items():
                by_region.setdefault(region, np.zeros(n))[i] = _nonneg(ms)
            if t.power_budget_watts > 0:
                budget[i] = t.power_budget_watts
            if t.max_num_seqs >= 1:
                slots[i] = t.max_num_seqs
            if t.has_metrics:
                has_metrics[i] = True
                waiting[i] = _nonneg(t.num_requests_waiting)
                running[i] = _nonneg(t.num_requests_running)
                kv[i] = _nonneg(t.gpu_cache_usage_perc)
                draw[i] = _nonneg(t.power_draw_watts)
        for session, name in telemetry.session_backend.items():
            i = index.get(name)
            if i is not None:
                sessions[session] = i
    slots = np.where(np.isfinite(slots) & (slots >= 1), np.minimum(slots, MAX_REQUESTS), DEFAULT_SLOTS)
    kv = _clip01(kv)
    error = _clip01(error)
    for a, top in ((waiting, MAX_REQUESTS), (running, MAX_REQUESTS), (observed, MAX_MS), (prefill, MAX_MS),
                   (draw, MAX_WATTS), (budget, MAX_WATTS), *((r, MAX_MS) for r in by_region.values())):
        np.clip(np.nan_to_num(a, copy=False, nan=0.0, posinf=top), 0.0, top, out=a)

    rtt: dict[str, np.ndarray] = {}
    proximity: dict[str, np.ndarray] = {}
    for client, row in config.rtt_ms.items():
        if not row:
            continue
        worst = max(row.values())  # a site region missing from the row: assume the worst known RTT
        r = np.array([row.get(region, worst) for region in regions], dtype=np.float64)
        np.clip(np.nan_to_num(r, nan=MAX_MS, posinf=MAX_MS), 0.0, MAX_MS, out=r)
        rtt[client] = _ro(r)
        proximity[client] = _ro(PROXIMITY_SCALE_MS / (PROXIMITY_SCALE_MS + r))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        power_headroom = np.where((budget > 0) & (draw > 0), 1.0 - draw / budget, 1.0)
    capacity_static = 0.25 * (1.0 - kv) + 0.25 * _clip01(power_headroom)

    return FleetSnapshot(
        names=names,
        addresses=tuple(b.address for b in backends),
        version=version,
        regions=regions,
        models=tuple(frozenset(b.models) for b in backends),
        model_mask=MappingProxyType({m: _ro(a) for m, a in masks.items()}),
        cost=_ro(cost),
        cost_score=_ro(np.asarray(cost_score, dtype=np.float64)),
        cost_min=cmin,
        cost_max=cmax,
        prefill_ms=_ro(prefill),
        slots=_ro(slots),
        healthy=_ro(healthy),
        health_detail=tuple(detail),
        has_metrics=_ro(has_metrics),
        waiting=_ro(waiting),
        running=_ro(running),
        kv_usage=_ro(kv),
        power_draw_watts=_ro(draw),
        power_budget_watts=_ro(budget),
        ttft_observed_ms=_ro(observed),
        ttft_observed_by_region=MappingProxyType({r: _ro(a) for r, a in by_region.items()}),
        error_rate=_ro(error),
        rtt_ms=MappingProxyType(rtt),
        proximity_score=MappingProxyType(proximity),
        capacity_static=_ro(capacity_static),
        session_backend=MappingProxyType(sessions),
        index=MappingProxyType(index),
    )
