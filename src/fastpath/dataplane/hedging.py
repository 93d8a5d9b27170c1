"""TTFT hedging: a call whose first response byte is late is reset and replayed once on its next candidate.

A call is invisible to its client until the first response byte (`Call` keeps
every request byte for replay until then), so a backend that is slow to
start answering can be given up on without the client seeing anything but
the time it took. When the deadline passes the attempt's stream is reset
(RST_STREAM CANCEL: the backend stops working on it) and the buffered request
is replayed on the next ranked candidate, exactly once per call; the
trailers carry `x-fastpath-hedged: FROM -> TO after N ms`.

Reset and replay, not a race: racing both attempts doubles the GPU work of
every hedged call and needs the proxy to pick a winner byte-for-byte; an
inference backend that has not produced a first token by k x its predicted
TTFT is usually queued or stalled, and what it has computed so far is lost
either way. Resetting frees its slot at once. The price: when the abandoned
backend would have answered just after the reset, that answer is lost.

The deadline (`hedge_delay_ms`, pure): with `after = "slo"` the request's
TTFT SLO (x-fastpath-slo-ttft-ms) counted from the call's start; with
"predicted" the router's predicted TTFT of the attempt's backend x `factor`,
counted from the attempt; "auto" takes the earlier of the two. Never earlier
than `min_ms` (nor 1 ms). A call with neither SLO nor prediction is not hedged, nor is
one without a next candidate or whose replay buffer overflowed.

A "predicted" deadline moves with the router's TTFT model, which counts calls
in flight as queueing: calls stalled at a backend raise its prediction, and so
the deadline of the next call there. In the hedging scenario (no SLO, 8 % of
one site's calls stalled 1.5 s) that left about half the stalls unhedged and
p99 where it was, while an SLO deadline cut p99 from ~1.57 s to ~0.33 s.
Give calls an SLO where the tail matters.

Budget (`HedgeBudget`, pure): a token bucket as gRPC's retry throttling and
Envoy's retry budgets keep. Every armed call earns `budget_percent`/100 of a
token, up to `budget_burst`; a hedge spends one. So hedges stay under that
share of calls plus a burst, and hedging cannot double the load of a fleet
that is late because it is overloaded. A hedge refused for the budget is
counted (`fastpath_budget_refusals_total{budget="hedge"}`).

The abandoned backend is not charged a failure (a slow first byte is not a
fault: no cool-down, no error rate). An occasional late start leaves its TTFT
estimate alone: folding each wait in made the estimate, and with it the next
"predicted" deadline, climb after every hedge until stalls outlasted it
(measured in the hedging scenario: 5 % of calls hedged, p99 unchanged). After
`fail_threshold` (3) abandonments in a row with no first byte between them the
backend looks stalled, not unlucky, and each further wait enters its TTFT
estimate as a lower bound (`LiveStats.abandoned`), so it is chosen less until
it answers again.

Timers: one heap of (deadline, seq, call, attempt position) and a single
`loop.call_at` for its earliest entry. Arming is a heap push; a call that
commits or ends leaves its entry to be skipped when it comes due (no cancel
on the hot path). With hedging off no `Hedger` exists and calls pay nothing.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from typing import TYPE_CHECKING, Any

from .call import FORWARDING
from .conn import flush_dirty

if TYPE_CHECKING:
    from fastpath.config import HedgeConfig

    from .call import Call

log = logging.getLogger("fastpath.dataplane")

HEDGED_HEADER = b"x-fastpath-hedged"


def hedge_delay_ms(after: str, factor: float, min_ms: float, slo_ms: float, predicted_ms: float,
                   since_start_ms: float) -> float:
    """How long after an attempt starts it is hedged, in ms; 0.0 = never.

    `slo_ms` counts from the call's start (`since_start_ms` ago), the prediction from the attempt.
    """
    slo = slo_ms - since_start_ms if slo_ms > 0.0 else math.inf
    pred = factor * predicted_ms if predicted_ms > 0.0 else math.inf
    if after == "slo":
        d = slo
    elif after == "predicted":
        d = pred
    else:
        d = slo if slo < pred else pred
    if d == math.inf:
        return 0.0
    floor = min_ms if min_ms > 1.0 else 1.0  # an SLO already past: hedge at once (1 ms), not never
    return d if d > floor else floor


class HedgeBudget:
    """Token bucket: each armed call earns `percent`/100 of a token (up to `burst`); a hedge costs one."""

    __slots__ = ("ratio", "burst", "tokens")

    def __init__(self, percent: float, burst: float) -> None:
        self.ratio = percent / 100.0
        self.burst = burst
        self.tokens = burst

    def earn(self) -> None:
        t = self.tokens + self.ratio
        self.tokens = t if t < self.burst else self.burst

    def spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Hedger:
    """Arms a deadline per uncommitted attempt; when one passes, `Call.hedge()` (if the budget allows)."""

    def __init__(self, cfg: "HedgeConfig", metrics: Any) -> None:
        self.cfg = cfg
        self.after = cfg.after
        self.factor = cfg.factor
        self.min_ms = cfg.min_ms
        self.budget = HedgeBudget(cfg.budget_percent, cfg.budget_burst)
        self.metrics = metrics
        self.heap: list[tuple[float, int, Call, int]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf

    def arm(self, call: "Call") -> None:
        """The call's attempt at `call.position` just started: hedge it if its first byte is late."""
        decision = call.decision
        pos = call.position
        if call.hedged_from >= 0 or call.replay is None or decision is None or pos + 1 >= len(decision.ranked):
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        f = call.features
        slo = f.slo_ttft_ms if f is not None else 0.0
        pred = decision.predicted_ttft_ms(pos) if self.after != "slo" else 0.0
        # loop.time() and the call's clock are both CLOCK_MONOTONIC (asyncio and uvloop alike).
        delay = hedge_delay_ms(self.after, self.factor, self.min_ms, slo, pred, (now - call.t_start) * 1000.0)
        if delay <= 0.0:
            return
        self.budget.earn()
        at = now + delay / 1000.0
        heapq.heappush(self.heap, (at, next(self._seq), call, pos))
        if at < self._handle_at:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = loop.call_at(at, self._fire)
            self._handle_at = at

    def _fire(self) -> None:
        self._handle = None
        self._handle_at = math.inf
        loop = self._loop
        assert loop is not None
        heap = self.heap
        now = loop.time() + 0.0005  # timers fire up to a clock tick early
        hedged = 0
        while heap and heap[0][0] <= now:
            _, _, call, pos = heapq.heappop(heap)
            if call.state != FORWARDING or call.position != pos or call.hedged_from >= 0:
                continue  # answered, ended or moved on since it was armed
            if not self.budget.spend():
                self.metrics.budget_refused("hedge")
                continue
            if call.hedge():
                hedged += 1
        if hedged:
            flush_dirty()
        if heap:
            at = heap[0][0]
            self._handle = loop.call_at(at, self._fire)
            self._handle_at = at

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._handle_at = math.inf
        self.heap.clear()


def hedged_trailer(from_name: bytes, to_name: bytes, after_ms: float) -> tuple[bytes, bytes]:
    """(name, value) of the trailer saying the call was hedged."""
    return HEDGED_HEADER, b"%s -> %s after %d ms" % (from_name, to_name, round(after_ms))
