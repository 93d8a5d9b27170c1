"""Per-backend load figures derived from a snapshot and the proxy's LiveStats.

These do not depend on the request (only on the backend), so they are kept
up to date incrementally: computed for every backend when a snapshot is first
used, then row by row for the backends LiveStats reports as changed. A route()
call then only adds the request-dependent parts (RTT from the client's region,
policy weights) on top.

Model of time to first token at backend i (ms), for a client RTT r:
    rho   = load / slots               load = in flight at the backend
    queue = 1 / (1 - rho)              for rho <= RHO_KNEE, then linear (finite, monotone)
    model = prefill * queue + r
    pred  = model                       without observations
          = (model + observed) / 2      with an observed TTFT (the proxy's own EWMA,
                                        else the controller's)
stored as pred = c + a * r with a in {1, 0.5}, so a request needs two array operations.
The controller's TTFT observed from the request's own client region, when it has
one, replaces `observed` (the router applies it per region, from `model`).
"""
from __future__ import annotations

import numpy as np

from fastpath.router.live import LiveStats
from fastpath.router.snapshot import FleetSnapshot

RHO_KNEE = 0.95  # above this utilisation queueing is extended linearly, not to infinity
KNEE_SLOPE = 1.0 / (1.0 - RHO_KNEE) ** 2  # d/drho of 1/(1-rho) at the knee (continuous slope)
OBSERVED_WEIGHT = 0.5  # share of an observed TTFT in the prediction
SLOT_SHARE = 0.5  # share of free batch slots in the capacity score (KV 0.25, power 0.25)
ROW_UPDATE_MAX = 6  # more changed backends than this: one vectorised recompute is cheaper


def queue_factor(rho: np.ndarray) -> np.ndarray:
    """1/(1-rho) below the knee, its tangent above: grows sharply near saturation, stays finite."""
    return 1.0 / np.maximum(1.0 - rho, 1.0 - RHO_KNEE) + KNEE_SLOPE * np.maximum(rho - RHO_KNEE, 0.0)


class LoadState:
    """Load-dependent arrays for one (snapshot, LiveStats) pair.

    Attributes (numpy, length N): model (queueing x prefill, ms), c and a (TTFT prediction pred = c + a * rtt),
    capacity (score in [0,1]), health (score in [0,1]), util (max of slot and KV
    utilisation, capped at 1, for affinity); model_l, a_l, c_l, capacity_l, health_l are
    the same as Python lists.
    """

    def __init__(self, snap: FleetSnapshot, live: LiveStats) -> None:
        if live.n != snap.n:
            raise ValueError(
                f"LiveStats has {live.n} backends but the snapshot has {snap.n}; "
                "create LiveStats with len(config.backends)"
            )
        self.snap = snap
        self.live = live
        # What the proxy had in flight when this snapshot was first used: the scrape
        # behind it already counted those, so only the difference is added to it.
        self.telemetry_load = np.where(snap.has_metrics, snap.waiting + snap.running, 0.0)
        self.load_offset = self.telemetry_load - live.inflight
        self.inv_slots = 1.0 / snap.slots
        # Python lists for the row-by-row path: list indexing is cheaper than numpy's.
        self._offset_l = self.load_offset.tolist()
        self._inv_slots_l = self.inv_slots.tolist()
        self._prefill_l = snap.prefill_ms.tolist()
        self._obs_l = snap.ttft_observed_ms.tolist()
        self._kv_l = snap.kv_usage.tolist()
        self._cap_static_l = snap.capacity_static.tolist()
        self._ok_l = (1.0 - snap.error_rate).tolist()
        self.position = live.changes_end
        self.recompute()

    def recompute(self) -> None:
        """Every backend at once (vectorised)."""
        snap, live = self.snap, self.live
        load = np.maximum(live.inflight, self.load_offset + live.inflight)
        rho = load * self.inv_slots
        rho_c = np.minimum(rho, 1.0)
        model = snap.prefill_ms * queue_factor(rho)
        self.model = model
        obs = np.where(live.ttft_ewma_ms > 0.0, live.ttft_ewma_ms, snap.ttft_observed_ms)
        self.a = np.where(obs > 0.0, 1.0 - OBSERVED_WEIGHT, 1.0)
        self.c = self.a * model + (1.0 - self.a) * obs
        self.capacity = snap.capacity_static + SLOT_SHARE * (1.0 - rho_c)
        self.health = (1.0 - snap.error_rate) * (1.0 - live.error_ewma)
        self.util = np.maximum(rho_c, snap.kv_usage)
        # Python mirrors for the router's small-fleet path (scalar reads from lists are cheap).
        self.model_l = model.tolist()
        self.a_l = self.a.tolist()
        self.c_l = self.c.tolist()
        self.capacity_l = self.capacity.tolist()
        self.health_l = self.health.tolist()
        self.position = live.changes_end

    def update_row(self, i: int) -> None:
        """Backend i only, with the same formulas as recompute() in scalar form.

        Conditional expressions rather than min()/max(): a builtin call costs
        more than the comparison, and this runs for every proxy event.
        """
        live = self.live
        inflight = float(live.inflight[i])
        load = self._offset_l[i] + inflight
        if load < inflight:  # noqa: PLR1730
            load = inflight
        rho = load * self._inv_slots_l[i]
        rho_c = rho if rho < 1.0 else 1.0  # noqa: FURB136
        room = 1.0 - rho
        model = self._prefill_l[i] * (
            1.0 / (room if room > 1.0 - RHO_KNEE else 1.0 - RHO_KNEE)  # noqa: FURB136
            + KNEE_SLOPE * (rho - RHO_KNEE if rho > RHO_KNEE else 0.0)
        )
        obs = float(live.ttft_ewma_ms[i])
        if not obs > 0.0:
            obs = self._obs_l[i]
        if obs > 0.0:
            a = 1.0 - OBSERVED_WEIGHT
            c = a * model + (1.0 - a) * obs
        else:
            a, c = 1.0, model
        capacity = self._cap_static_l[i] + SLOT_SHARE * (1.0 - rho_c)
        health = self._ok_l[i] * (1.0 - float(live.error_ewma[i]))
        kv = self._kv_l[i]
        self.model[i] = self.model_l[i] = model
        self.a[i] = self.a_l[i] = a
        self.c[i] = self.c_l[i] = c
        self.capacity[i] = self.capacity_l[i] = capacity
        self.health[i] = self.health_l[i] = health
        self.util[i] = rho_c if rho_c > kv else kv  # noqa: FURB136

    def refresh(self) -> None:
        """Brings the arrays up to date with LiveStats' changes since the last call."""
        live = self.live
        end = live.changes_end
        if end == self.position:
            return
        rows = live.changed_since(self.position)
        if rows is None or len(rows) > ROW_UPDATE_MAX:
            self.recompute()
            return
        for i in rows:
            self.update_row(i)
        self.position = end
