"""An immutable view of the fleet that the router scores against.

The slow path builds one whenever telemetry changes and swaps it in; the fast
path only reads it. Everything that does not depend on a request is computed
here, once per snapshot, as read-only numpy arrays in config order: model
masks, proximity per client region, cost scores, the static part of the
capacity score. A request then costs a handful of array operations.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from fastpath.config import Config
from fastpath.gen import control_pb2
from fastpath.router.axes import NEUTRAL, PROXIMITY_SCALE_MS, Capacity, Proximity

__all__ = ["NEUTRAL", "PROXIMITY_SCALE_MS", "FleetSnapshot", "build_snapshot"]
DEFAULT_SLOTS = 8.0  # batch slots assumed when neither telemetry nor config says
DEFAULT_PREFILL_MS = 30.0  # prefill time assumed for a backend without a sim spec
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
    session_backend: Mapping[str, int]  # session -> backend index (SessionMap or empty)
    index: Mapping[str, int]  # backend name -> i
    # Prompt-prefix blocks the controller merged from every proxy: (backend index, blocks newest first).
    prefix_blocks: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def n(self) -> int:
        return len(self.names)


def _clamp(x: float, top: float) -> float:
    """x within [0, top]; NaN and negatives give 0 (a broken exporter must not break scoring)."""
    return 0.0 if not x > 0.0 else (x if x < top else top)  # noqa: FURB136 (NaN must give 0)


@dataclass(frozen=True)
class _Static:
    """The parts of a snapshot that come from the config alone, shared by every snapshot of it."""

    config: Config
    names: tuple[str, ...]
    index: Mapping[str, int]
    regions: tuple[str, ...]
    addresses: tuple[str, ...]
    models: tuple[frozenset[str], ...]
    model_mask: Mapping[str, np.ndarray]
    cost: np.ndarray
    cost_score: np.ndarray
    cost_min: float
    cost_max: float
    prefill_ms: np.ndarray
    slots: list[float]
    power_budget_watts: list[float]
    rtt_ms: Mapping[str, np.ndarray]
    proximity_score: Mapping[str, np.ndarray]


_last_static: _Static | None = None
_NO_SESSIONS: Mapping[str, int] = MappingProxyType({})


class SessionMap(Mapping[str, int]):
    """The controller's session -> backend map, read in place from the telemetry message.

    Copying it would cost ~0.6 µs per session on every snapshot (the controller
    may know 100k sessions); the router looks up one session per request instead.
    The telemetry message must not be changed after the snapshot is built.
    Sessions pinned to a backend this config does not have read as absent.
    """

    __slots__ = ("_index", "_names")

    def __init__(self, names: Mapping[str, str], index: Mapping[str, int]) -> None:
        self._names = names
        self._index = index

    def get(self, session: str, default=None):  # type: ignore[override]
        name = self._names.get(session)
        if name is None:
            return default
        return self._index.get(name, default)

    def __getitem__(self, session: str) -> int:
        i = self.get(session)
        if i is None:
            raise KeyError(session)
        return i

    def __contains__(self, session: object) -> bool:
        return isinstance(session, str) and self.get(session) is not None

    def __iter__(self):
        return (s for s, name in self._names.items() if name in self._index)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _static(config: Config) -> _Static:
    global _last_static
    cached = _last_static
    if cached is not None and cached.config is config:
        return cached
    backends = config.backends
    n = len(backends)
    names = tuple(b.name for b in backends)
    regions = tuple(b.region for b in backends)
    cost = np.array([b.cost_per_1k_tokens for b in backends], dtype=np.float64)
    priced = np.minimum(cost, MAX_COST)  # scores stay finite even for an "inf" price in the config
    cmin, cmax = float(priced.min()), float(priced.max())
    cost_score = np.ones(n) if cmax <= cmin else (cmax - priced) / (cmax - cmin)
    masks: dict[str, np.ndarray] = {}
    for i, b in enumerate(backends):
        for m in b.models:
            masks.setdefault(m, np.zeros(n, dtype=bool))[i] = True
    rtt: dict[str, np.ndarray] = {}
    proximity: dict[str, np.ndarray] = {}
    for client, row in config.rtt_ms.items():
        if not row:
            continue
        worst = max(row.values())  # a site region missing from the row: assume the worst known RTT
        r = np.array([_clamp(row.get(region, worst), MAX_MS) for region in regions], dtype=np.float64)
        rtt[client] = _ro(r)
        proximity[client] = _ro(Proximity.of_rtt(r))
    static = _Static(
        config=config,
        names=names,
        index=MappingProxyType({name: i for i, name in enumerate(names)}),
        regions=regions,
        addresses=tuple(b.address for b in backends),
        models=tuple(frozenset(b.models) for b in backends),
        model_mask=MappingProxyType({m: _ro(a) for m, a in masks.items()}),
        cost=_ro(cost),
        cost_score=_ro(np.asarray(cost_score, dtype=np.float64)),
        cost_min=cmin,
        cost_max=cmax,
        prefill_ms=_ro(np.array([_clamp(b.sim.prefill_ms if b.sim else DEFAULT_PREFILL_MS, MAX_MS)
                                 for b in backends], dtype=np.float64)),
        slots=[float(min(b.sim.slots, MAX_REQUESTS)) if b.sim else DEFAULT_SLOTS for b in backends],
        power_budget_watts=[_clamp(b.power_budget_watts, MAX_WATTS) for b in backends],
        rtt_ms=MappingProxyType(rtt),
        proximity_score=MappingProxyType(proximity),
    )
    _last_static = static
    return static


def build_snapshot(config: Config, telemetry: control_pb2.FleetTelemetry | None = None) -> FleetSnapshot:
    """Static parts from the config, live parts from the controller's telemetry.

    A backend missing from the telemetry, or reported without metrics, is
    scored from the proxy's own observations (LiveStats) alone; it is healthy
    unless the telemetry says otherwise. Telemetry for unknown backend names
    and sessions pinned to unknown backends are ignored. Figures are clamped to
    sane ranges (NaN and negatives read as 0).
    """
    st = _static(config)
    n = len(st.names)
    index = st.index
    slots = list(st.slots)
    budget = list(st.power_budget_watts)
    healthy = [True] * n
    detail = [""] * n
    has_metrics = [False] * n
    waiting = [0.0] * n
    running = [0.0] * n
    kv = [0.0] * n
    draw = [0.0] * n
    observed = [0.0] * n
    error = [0.0] * n
    by_region: dict[str, list[float]] = {}
    sessions: Mapping[str, int] = _NO_SESSIONS
    version = 0

    if telemetry is not None:
        version = int(telemetry.version)
        for t in telemetry.backends:
            i = index.get(t.name)
            if i is None:
                continue
            healthy[i] = t.healthy
            detail[i] = t.health_detail
            error[i] = _clamp(t.error_rate, 1.0)
            observed[i] = _clamp(t.ttft_ms_observed, MAX_MS)
            for region, ms in t.ttft_ms_by_region.items():
                row = by_region.get(region)
                if row is None:
                    row = by_region[region] = [0.0] * n
                row[i] = _clamp(ms, MAX_MS)
            if t.power_budget_watts > 0:
                budget[i] = _clamp(t.power_budget_watts, MAX_WATTS)
            if 1.0 <= t.max_num_seqs < math.inf:
                slots[i] = min(t.max_num_seqs, MAX_REQUESTS)
            if t.has_metrics:
                has_metrics[i] = True
                waiting[i] = _clamp(t.num_requests_waiting, MAX_REQUESTS)
                running[i] = _clamp(t.num_requests_running, MAX_REQUESTS)
                kv[i] = _clamp(t.gpu_cache_usage_perc, 1.0)
                draw[i] = _clamp(t.power_draw_watts, MAX_WATTS)
        if len(telemetry.session_backend):
            sessions = SessionMap(telemetry.session_backend, index)

    kv_a = np.array(kv)
    headroom = [1.0 - d / b if b > 0.0 and d > 0.0 else 1.0 for d, b in zip(draw, budget)]
    capacity_static = Capacity.static_vector(kv_a, np.array(headroom))
    prefix: list[tuple[int, tuple[int, ...]]] = []
    if telemetry is not None:
        for p in getattr(telemetry, "prefix_index", ()):
            i = index.get(p.backend)
            if i is not None and len(p.blocks):
                prefix.append((i, tuple(p.blocks)))

    return FleetSnapshot(
        names=st.names,
        addresses=st.addresses,
        version=version,
        regions=st.regions,
        models=st.models,
        model_mask=st.model_mask,
        cost=st.cost,
        cost_score=st.cost_score,
        cost_min=st.cost_min,
        cost_max=st.cost_max,
        prefill_ms=st.prefill_ms,
        slots=_ro(np.array(slots)),
        healthy=_ro(np.array(healthy, dtype=bool)),
        health_detail=tuple(detail),
        has_metrics=_ro(np.array(has_metrics, dtype=bool)),
        waiting=_ro(np.array(waiting)),
        running=_ro(np.array(running)),
        kv_usage=_ro(kv_a),
        power_draw_watts=_ro(np.array(draw)),
        power_budget_watts=_ro(np.array(budget)),
        ttft_observed_ms=_ro(np.array(observed)),
        ttft_observed_by_region=MappingProxyType({r: _ro(np.array(a)) for r, a in by_region.items()}),
        error_rate=_ro(np.array(error)),
        rtt_ms=st.rtt_ms,
        proximity_score=st.proximity_score,
        capacity_static=_ro(capacity_static),
        session_backend=sessions,
        index=st.index,
        prefix_blocks=tuple(prefix),
    )
