"""The five scoring axes, each written once: vectorised, scalar and explained forms side by side.

Like the Gateway API Inference Extension's scorer plugins, an axis maps a
candidate to a score in [0, 1] (1 = best); the router weighs them with the
request's policy. Each axis keeps its formula here in the forms the router
needs: `vector` over numpy arrays (large fleets), `scalar` over floats (the
small-fleet loop and the row-by-row load updates, where a numpy call costs
more than the arithmetic), and `explain`, the per-backend value the decision
trailer shows. The two forms are the same arithmetic in the same order, so
both paths make the same decisions (checked by property tests).

The router composes these statically (no plugin registry lookups per
request): the per-request cost stays within its microsecond budget.
"""
from __future__ import annotations

from typing import Final

import numpy as np

# -- time to first token ---------------------------------------------------------------
RHO_KNEE: Final = 0.95  # above this utilisation queueing is extended linearly, not to infinity
KNEE_SLOPE: Final = 1.0 / (1.0 - RHO_KNEE) ** 2  # d/drho of 1/(1-rho) at the knee (continuous slope)
OBSERVED_WEIGHT: Final = 0.5  # share of an observed TTFT in the prediction
TTFT_SCALE_MS: Final = 100.0  # predicted TTFT that scores 0.5 when the request has no SLO


class TTFT:
    """ttft = S / (S + predicted TTFT); S = the request's SLO, else TTFT_SCALE_MS.

    Prediction (ms) at backend i for a client RTT r: model = prefill x queue(rho) + r,
    queue = 1/(1-rho) up to RHO_KNEE then linear; blended half and half with an
    observed TTFT when there is one. Stored as pred = c + a x r.
    """

    name = "ttft"

    @staticmethod
    def model_vector(prefill: np.ndarray, rho: np.ndarray) -> np.ndarray:
        return prefill * (1.0 / np.maximum(1.0 - rho, 1.0 - RHO_KNEE) + KNEE_SLOPE * np.maximum(rho - RHO_KNEE, 0.0))

    @staticmethod
    def model_scalar(prefill: float, rho: float) -> float:
        room = 1.0 - rho
        return prefill * (1.0 / (room if room > 1.0 - RHO_KNEE else 1.0 - RHO_KNEE)  # noqa: FURB136
                          + KNEE_SLOPE * (rho - RHO_KNEE if rho > RHO_KNEE else 0.0))

    @staticmethod
    def blend_vector(model: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) with pred = c + a x rtt: half model, half observation where there is one."""
        a = np.where(obs > 0.0, 1.0 - OBSERVED_WEIGHT, 1.0)
        return a, a * model + (1.0 - a) * obs

    @staticmethod
    def blend_scalar(model: float, obs: float) -> tuple[float, float]:
        if obs > 0.0:
            a = 1.0 - OBSERVED_WEIGHT
            return a, a * model + (1.0 - a) * obs
        return 1.0, model

    @staticmethod
    def regional(model, rtt, observed_w):  # noqa: ANN001, ANN205 - floats or arrays alike
        """Prediction with the controller's TTFT seen from the client's region (observed_w = weight x it)."""
        return (model + rtt) * (1.0 - OBSERVED_WEIGHT) + observed_w

    @staticmethod
    def weighted(w_scale, scale, pred):  # noqa: ANN001, ANN205 - floats or arrays alike
        """weight x score, with w_scale = weight x S (one division for both forms)."""
        return w_scale / (scale + pred)

    # The same two formulas typed for floats: the compiled build then does the small-fleet
    # loop's arithmetic unboxed instead of through generic number calls.
    @staticmethod
    def regional_scalar(model: float, rtt: float, observed_w: float) -> float:
        return (model + rtt) * (1.0 - OBSERVED_WEIGHT) + observed_w

    @staticmethod
    def weighted_scalar(w_scale: float, scale: float, pred: float) -> float:
        return w_scale / (scale + pred)

    @staticmethod
    def explain(scale: float, pred: float) -> float:
        return scale / (scale + pred)


# -- cost ------------------------------------------------------------------------------
class Cost:
    """cost = (ref - cost) / (ref - cheapest); ref = the request's max_cost, else the dearest backend."""

    name = "cost"

    @staticmethod
    def vector(cost: np.ndarray, ref: float, cheapest: float) -> np.ndarray:
        if not ref > cheapest:
            return np.ones(len(cost))
        return np.clip((ref - np.minimum(cost, ref)) / (ref - cheapest), 0.0, 1.0)

    @staticmethod
    def explain(cost_score: list[float], i: int) -> float:
        """Backend i's cost score, from the vector's values as a list (a numpy scalar read each
        call was ~2% of the proxy's CPU per unary call under perf)."""
        return cost_score[i]


# -- model and cache affinity ----------------------------------------------------------
WARM_KNOWN_MODEL: Final = 1.0  # a backend serving the model the request named
WARM_UNKNOWN_MODEL: Final = 0.5


class Affinity:
    """Session and prompt-prefix affinity.

    base: the session's backend 1 (0 when above affinity_max_utilisation), other
    backends 0.5 x warm; without a known session and without prompt blocks every
    backend scores warm (1 for a named model, 0.5 otherwise). A request with
    prompt blocks lifts each backend by its prefix share s: base + (1 - base) x s,
    where s = matched/total blocks (0 below the minimum match), discounted
    linearly to 0 as the backend's utilisation goes from the load bound to 1.
    """

    name = "affinity"

    @staticmethod
    def base(warm: float, sticky: bool, sticky_affinity: float, session_or_prefix: bool) -> float:
        if sticky:
            return sticky_affinity
        return 0.5 * warm if session_or_prefix else warm

    @staticmethod
    def prefix_shares(matched: dict[int, int], total: int, util: list[float], min_match: int,
                      load_bound: float) -> dict[int, float]:
        """prefix_share() over the backends with a match (the sparse form the router uses)."""
        out = {}
        span = 1.0 - load_bound
        for i, m in matched.items():
            if m < min_match:
                continue
            share = m / total
            u = util[i]
            if u > load_bound:
                share *= (1.0 - u) / span if span > 0.0 else 0.0
            if share > 0.0:
                out[i] = share
        return out

    @staticmethod
    def lift(base, share):  # noqa: ANN001, ANN205 - floats or arrays alike
        """How much a prefix share adds to the base affinity."""
        return (1.0 - base) * share

    @staticmethod
    def lift_scalar(base: float, share: float) -> float:
        return (1.0 - base) * share

    @staticmethod
    def explain(base: float, share: float) -> float:
        return base + Affinity.lift_scalar(base, share)


# -- capacity and power headroom -------------------------------------------------------
SLOT_SHARE: Final = 0.5  # share of free batch slots in the capacity score (KV 0.25, power 0.25)


class Capacity:
    """capacity = 0.5 x free batch slots + 0.25 x free KV cache + 0.25 x power headroom.

    The KV and power parts come with the snapshot (`static`); the slot part moves
    with the load, so it is recomputed as LiveStats changes.
    """

    name = "capacity"

    @staticmethod
    def static_vector(kv_usage: np.ndarray, power_headroom: np.ndarray) -> np.ndarray:
        return 0.25 * (1.0 - kv_usage) + 0.25 * np.clip(power_headroom, 0.0, 1.0)

    @staticmethod
    def vector(static: np.ndarray, rho_c: np.ndarray) -> np.ndarray:
        return static + SLOT_SHARE * (1.0 - rho_c)

    @staticmethod
    def scalar(static: float, rho_c: float) -> float:
        return static + SLOT_SHARE * (1.0 - rho_c)

    @staticmethod
    def explain(capacity: float) -> float:
        return capacity


# -- proximity and health --------------------------------------------------------------
PROXIMITY_SCALE_MS: Final = 50.0  # RTT at which the proximity score is 0.5
NEUTRAL: Final = 0.5  # score of an axis the router knows nothing about (unknown client region)


class Proximity:
    """proximity = RTT_SCALE / (RTT_SCALE + RTT) from the client region, x health.

    health = (1 - error rate in telemetry) x (1 - the proxy's own error EWMA).
    """

    name = "proximity"

    @staticmethod
    def of_rtt(rtt):  # noqa: ANN001, ANN205 - floats or arrays alike
        return PROXIMITY_SCALE_MS / (PROXIMITY_SCALE_MS + rtt)

    @staticmethod
    def health(ok_telemetry, error_ewma):  # noqa: ANN001, ANN205 - floats or arrays alike
        return ok_telemetry * (1.0 - error_ewma)

    @staticmethod
    def explain(proximity: float, health: float) -> float:
        return proximity * health


AXIS_ORDER: Final = (TTFT, Cost, Affinity, Capacity, Proximity)
