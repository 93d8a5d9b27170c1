"""Hard filters: which backends may take a request at all, each naming its own refusal.

Like the Gateway API Inference Extension's filter plugins, each filter narrows
the candidate set; they run in a fixed order, and when one leaves nothing, the
refusal names that filter and says why in its own words (so "no backend" tells
the operator which filter emptied the set). `mask` runs once per request shape
and snapshot (the router caches it); `refusal` only when the set is empty.

The health filter has a panic threshold (Envoy's `healthy_panic_threshold`):
when fewer than that share of the backends left by the other filters is
healthy, it lets all of them through rather than concentrating every call on
the few left, or refusing every call when none is; the trailer says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastpath.router.live import LiveStats
from fastpath.router.snapshot import FleetSnapshot


@dataclass(frozen=True, slots=True)
class Shape:
    """The request fields the static filters read (one cache entry per distinct shape)."""

    model: str
    allow_regions: tuple[str, ...]
    max_cost: float
    substitutes: tuple[str, ...] = ()  # models allowed to serve it instead, in order of preference

    @property
    def what(self) -> str:
        return f"model {self.model!r}" if self.model else "this request"

    @property
    def where(self) -> str:
        return f" in regions [{', '.join(self.allow_regions)}]" if self.allow_regions else ""


class ModelFilter:
    name = "model"

    @staticmethod
    def mask(snap: FleetSnapshot, s: Shape) -> np.ndarray | None:
        if not s.model:
            return None
        out = np.zeros(snap.n, dtype=bool)
        for model in (s.model, *s.substitutes):
            m = snap.model_mask.get(model)
            if m is not None:
                out |= m
        return out

    @staticmethod
    def refusal(snap: FleetSnapshot, live: LiveStats, before: np.ndarray, s: Shape) -> str:
        nor = f" nor its substitutes {list(s.substitutes)}" if s.substitutes else ""
        return f"no backend serves model {s.model!r}{nor}; the fleet serves {sorted(snap.model_mask)}"


class RegionFilter:
    name = "allow-regions"

    @staticmethod
    def mask(snap: FleetSnapshot, s: Shape) -> np.ndarray | None:
        if not s.allow_regions:
            return None
        return np.array([r in s.allow_regions for r in snap.regions], dtype=bool)

    @staticmethod
    def refusal(snap: FleetSnapshot, live: LiveStats, before: np.ndarray, s: Shape) -> str:
        elsewhere = sorted({snap.regions[i] for i in np.flatnonzero(before)})
        return (f"no backend serves {s.what} in regions [{', '.join(s.allow_regions)}]; "
                f"it is served in [{', '.join(elsewhere)}]")


class CostFilter:
    name = "max-cost"

    @staticmethod
    def mask(snap: FleetSnapshot, s: Shape) -> np.ndarray | None:
        if not s.max_cost > 0.0:
            return None
        return snap.cost <= s.max_cost

    @staticmethod
    def refusal(snap: FleetSnapshot, live: LiveStats, before: np.ndarray, s: Shape) -> str:
        cost, name = min((float(snap.cost[i]), snap.names[i]) for i in np.flatnonzero(before))
        return (f"no backend serves {s.what}{s.where} within max cost {s.max_cost:g} per 1k tokens; "
                f"the cheapest is {name} at {cost:g}")


class HealthFilter:
    """Healthy in the controller's telemetry (probes, with their rise/fall thresholds)."""

    name = "health"

    @staticmethod
    def mask(snap: FleetSnapshot, s: Shape) -> np.ndarray | None:
        return snap.healthy

    @staticmethod
    def refusal(snap: FleetSnapshot, live: LiveStats, before: np.ndarray, s: Shape) -> str:
        down = [f"{snap.names[i]} is unhealthy ({snap.health_detail[i] or 'unhealthy'})" for i in np.flatnonzero(before)]
        return f"no healthy backend serves {s.what}{s.where}: " + "; ".join(down)


class CooldownFilter:
    """Not in the proxy's own failure cool-down (LiveStats); applied per request, not cached."""

    name = "cooldown"

    @staticmethod
    def refusal(snap: FleetSnapshot, live: LiveStats, before: np.ndarray, s: Shape) -> str:
        down = []
        for i in np.flatnonzero(before).tolist():
            if live.is_cooling(i):
                down.append(f"{snap.names[i]} is cooling down after {int(live.consecutive_failures[i])} "
                            "failures in a row")
        return f"no healthy backend serves {s.what}{s.where}: " + "; ".join(down)


STATIC_FILTERS = (ModelFilter, RegionFilter, CostFilter, HealthFilter)


@dataclass(slots=True)
class Filtered:
    valid: np.ndarray  # bool[N]: candidates after every static filter
    panic: str = ""  # "H/N" when the health filter let unhealthy backends through
    refused_by: str = ""  # name of the filter that emptied the set ("" = not empty)
    reason: str = ""


def apply_static(snap: FleetSnapshot, live: LiveStats, s: Shape, panic_threshold: float) -> Filtered:
    """Runs the static filters in order; stops at the first that empties the set."""
    valid = np.ones(snap.n, dtype=bool)
    panic = ""
    for flt in STATIC_FILTERS:
        m = flt.mask(snap, s)
        if m is None:
            continue
        after = valid & m
        if flt is HealthFilter:
            total = int(np.count_nonzero(valid))
            healthy = int(np.count_nonzero(after))
            if total and healthy < panic_threshold * total:
                panic = f"{healthy}/{total}"
                continue  # panic: every backend left by the other filters stays a candidate
        if not after.any():
            return Filtered(after, panic, flt.name, flt.refusal(snap, live, valid, s))
        valid = after
    return Filtered(valid, panic)
