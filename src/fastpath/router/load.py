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
                                        else the controller's, else, for a backend
                                        without metrics, the median of its peers')
stored as pred = c + a * r with a in {1, 0.5}, so a request needs two array operations.
The controller's TTFT observed from the request's own client region, when it has
one, replaces `observed` (the router applies it per region, from `model`).
"""
from __future__ import annotations

from typing import Final

import numpy as np

from fastpath.router.axes import KNEE_SLOPE, OBSERVED_WEIGHT, RHO_KNEE, SLOT_SHARE, TTFT, Capacity, Proximity
from fastpath.router.live import LiveStats
from fastpath.router.snapshot import FleetSnapshot

__all__ = ["KNEE_SLOPE", "OBSERVED_WEIGHT", "RHO_KNEE", "SLOT_SHARE", "LoadState", "queue_factor"]
ROW_UPDATE_MAX: Final = 6  # more changed backends than this: one vectorised recompute is cheaper
STALE_MAX: Final = 64  # rows the arrays may lag behind the lists by before they are rebuilt whole


def queue_factor(rho: np.ndarray) -> np.ndarray:
    """1/(1-rho) below the knee, its tangent above: grows sharply near saturation, stays finite."""
    return TTFT.model_vector(np.ones_like(rho), rho)


class LoadState:
    """Load-dependent arrays for one (snapshot, LiveStats) pair.

    Attributes (numpy, length N): model (queueing x prefill, ms), c and a (TTFT prediction pred = c + a * rtt),
    capacity (score in [0,1]), health (score in [0,1]), util (max of slot and KV
    utilisation, capped at 1, for affinity); model_l, a_l, c_l, capacity_l, health_l, util_l are
    the same as Python lists, updated first (the arrays catch up when read).
    """

    # Declared so the compiled build reads them as lists of floats (numpy's tolist() is untyped).
    model_l: list[float]
    a_l: list[float]
    c_l: list[float]
    capacity_l: list[float]
    health_l: list[float]
    util_l: list[float]
    _offset_l: list[float]
    _inv_slots_l: list[float]
    _prefill_l: list[float]
    _prior_l: list[float]
    _obs_l: list[float]
    _kv_l: list[float]
    _cap_static_l: list[float]
    _ok_l: list[float]

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
        self.load_offset = self.telemetry_load - np.array(live.inflight)
        self.inv_slots = 1.0 / snap.slots
        # Python lists for the row-by-row path: list indexing is cheaper than numpy's.
        self._offset_l = self.load_offset.tolist()
        self._inv_slots_l = self.inv_slots.tolist()
        self._prefill_l = snap.prefill_ms.tolist()
        # A backend nobody has observed and that exports no metrics is scored from its
        # peers: the median TTFT the controller saw elsewhere stands in for an observation
        # (conservative: peers' figures include their RTT), until the backend is observed.
        seen = snap.ttft_observed_ms[snap.ttft_observed_ms > 0.0]
        self.peer_prior_ms = float(np.median(seen)) if len(seen) else 0.0
        self.prior_ms = np.where(snap.has_metrics, 0.0, self.peer_prior_ms)
        self._prior_l = self.prior_ms.tolist()
        self._obs_l = snap.ttft_observed_ms.tolist()
        self._kv_l = snap.kv_usage.tolist()
        self._cap_static_l = snap.capacity_static.tolist()
        self._ok_l = (1.0 - snap.error_rate).tolist()
        self.position = live.changes_end
        self._stale: list[int] = []  # rows whose arrays lag their lists (see sync)
        self._all_stale = False  # more than STALE_MAX of them: rebuild the arrays
        self.recompute()

    def recompute(self) -> None:
        """Every backend at once (vectorised)."""
        snap, live = self.snap, self.live
        inflight = np.array(live.inflight)
        load = np.maximum(inflight, self.load_offset + inflight)
        rho = load * self.inv_slots
        rho_c = np.minimum(rho, 1.0)
        model = TTFT.model_vector(snap.prefill_ms, rho)
        self._model = model
        ewma = np.array(live.ttft_ewma_ms)
        obs = np.where(ewma > 0.0, ewma, snap.ttft_observed_ms)
        obs = np.where(obs > 0.0, obs, self.prior_ms)
        self._a, self._c = TTFT.blend_vector(model, obs)
        self._capacity = Capacity.vector(snap.capacity_static, rho_c)
        self._health = Proximity.health(1.0 - snap.error_rate, np.array(live.error_ewma))
        self._util = np.maximum(rho_c, snap.kv_usage)
        # Python mirrors for the router's small-fleet path (scalar reads from lists are cheap).
        self.model_l = model.tolist()
        self.a_l = self._a.tolist()
        self.c_l = self._c.tolist()
        self.capacity_l = self._capacity.tolist()
        self.health_l = self._health.tolist()
        self.util_l = self._util.tolist()
        self._stale = []
        self._all_stale = False
        self.position = live.changes_end

    # The arrays, for the router's numpy path: rows updated since they were last read are
    # copied in from the lists first (the small-fleet path reads only the lists, and a numpy
    # scalar write costs ~100 ns: six per changed row, per proxy event, otherwise).
    @property
    def model(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._model

    @property
    def a(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._a

    @property
    def c(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._c

    @property
    def capacity(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._capacity

    @property
    def health(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._health

    @property
    def util(self) -> np.ndarray:
        if self._stale:
            self.sync()
        return self._util

    def sync(self) -> None:
        """Copies the rows update_row() changed from the lists into the arrays."""
        if self._all_stale:
            self._model = np.array(self.model_l)
            self._a = np.array(self.a_l)
            self._c = np.array(self.c_l)
            self._capacity = np.array(self.capacity_l)
            self._health = np.array(self.health_l)
            self._util = np.array(self.util_l)
            self._stale = []
            self._all_stale = False
            return
        for i in self._stale:
            self._model[i] = self.model_l[i]
            self._a[i] = self.a_l[i]
            self._c[i] = self.c_l[i]
            self._capacity[i] = self.capacity_l[i]
            self._health[i] = self.health_l[i]
            self._util[i] = self.util_l[i]
        self._stale = []

    def update_row(self, i: int) -> None:
        """Backend i only, with the same formulas as recompute() in scalar form.

        Conditional expressions rather than min()/max(): a builtin call costs
        more than the comparison, and this runs for every proxy event.
        """
        live = self.live
        inflight = live.inflight[i]
        load = self._offset_l[i] + inflight
        if load < inflight:  # noqa: PLR1730
            load = inflight
        rho = load * self._inv_slots_l[i]
        rho_c = rho if rho < 1.0 else 1.0  # noqa: FURB136
        model = TTFT.model_scalar(self._prefill_l[i], rho)
        obs = live.ttft_ewma_ms[i]
        if not obs > 0.0:
            obs = self._obs_l[i]
            if not obs > 0.0:
                obs = self._prior_l[i]
        a, c = TTFT.blend_scalar(model, obs)
        capacity = Capacity.scalar(self._cap_static_l[i], rho_c)
        health = Proximity.health(self._ok_l[i], live.error_ewma[i])
        kv = self._kv_l[i]
        self.model_l[i] = model
        self.a_l[i] = a
        self.c_l[i] = c
        self.capacity_l[i] = capacity
        self.health_l[i] = health
        self.util_l[i] = rho_c if rho_c > kv else kv  # noqa: FURB136
        stale = self._stale  # the arrays follow when next read
        if len(stale) < STALE_MAX:
            stale.append(i)
        else:
            self._all_stale = True

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
