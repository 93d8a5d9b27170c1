"""Probes each backend's gRPC readiness (KServe v2 `ServerReady`) on a fixed interval.

Routing around failed sites is one of the five axes; it has to rest on the
protocol the traffic uses, not on a side channel, so a probe is a real
`inference.GRPCInferenceService/ServerReady` call with a deadline. Like
Envoy's active health checking with outlier detection:
- A refused connection marks a backend unhealthy at once (nothing listens);
  other failures (timeouts, resets, "not ready") only after `fall` in a row,
  so one lost probe on a busy machine does not move traffic.
- In-band evidence counts: proxies report calls a backend answered (a
  "backend success") and calls it failed (a "backend failure", as the data
  plane classifies them: a client's own bad or cancelled call is neither). A
  success resets the failure run and counts towards `rise` like a good probe,
  so a backend busy answering calls but too slow for probes keeps its traffic.
- Probe deadlines follow what the backend is observed to need: at least the
  configured timeout, else TIMEOUT_FACTOR x the EWMA of its probe round trips;
  a timed-out probe doubles the next deadline (up to MAX_TIMEOUT_FACTOR x the
  configured one), good probes bring it back.
- A backend becomes healthy again after `rise` good probes (or calls) in a row.
Transitions are logged once each. The router adds the last resort: below its
panic threshold of healthy backends it routes to all of them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc

from fastpath.config import Backend
from fastpath.gen import grpc_service_pb2, grpc_service_pb2_grpc

log = logging.getLogger("fastpath.control.health")


TIMEOUT_FACTOR = 4.0  # probe deadline = this x the EWMA of the backend's probe round trips (at least the configured one)
MAX_TIMEOUT_FACTOR = 8.0  # the deadline never exceeds this x the configured timeout
RTT_ALPHA = 0.2  # weight of the newest probe round trip in its EWMA


@dataclass
class HealthState:
    healthy: bool = False
    detail: str = "not probed yet"
    probed: bool = False
    failures_in_row: int = 0
    successes_in_row: int = 0
    probes: int = 0
    last_probe_unix_ms: int = 0
    in_band_ok: int = 0  # calls proxies saw this backend answer
    in_band_failed: int = 0
    probe_rtt_ms: float = 0.0  # EWMA of good probes' round trips (0 = none yet)
    timeout_s: float = 0.0  # the deadline of its next probe (0 = the configured one)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "" when ok
    definitive: bool = False  # a refused connection: no need to wait for more probes


def describe_rpc_error(e: grpc.aio.AioRpcError, timeout_s: float) -> ProbeResult:
    """A failed probe in words an operator understands."""
    code, details = e.code(), (e.details() or "")
    low = details.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ProbeResult(False, f"probe timeout after {timeout_s * 1000:.0f} ms")
    if code == grpc.StatusCode.UNAVAILABLE:
        if "refused" in low:
            return ProbeResult(False, "connection refused", definitive=True)
        if "reset" in low:
            return ProbeResult(False, "connection reset")
        if "timeout" in low or "deadline" in low:
            return ProbeResult(False, f"connect timeout after {timeout_s * 1000:.0f} ms")
        return ProbeResult(False, f"unavailable: {details[:160]}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return ProbeResult(False, "does not serve inference.GRPCInferenceService/ServerReady")
    return ProbeResult(False, f"probe failed: {code.name}: {details[:160]}")


class HealthProber:
    """One probe loop per backend over a kept gRPC channel."""

    def __init__(
        self,
        backends: Iterable[Backend],
        interval_s: float,
        timeout_s: float,
        on_change: Callable[[str], None] | None = None,
        fall: int = 2,
        rise: int = 2,
    ) -> None:
        self.backends = {b.name: b for b in backends}
        self.interval_s = max(interval_s, 0.01)
        self.timeout_s = max(timeout_s, 0.001)
        self.on_change = on_change or (lambda name: None)
        self.fall, self.rise = max(fall, 1), max(rise, 1)
        self.max_timeout_s = self.timeout_s * MAX_TIMEOUT_FACTOR
        self.state: dict[str, HealthState] = {name: HealthState() for name in self.backends}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, name: str) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        ch = self._channels.get(name)
        if ch is None:
            backoff_ms = int(max(100, min(1000, self.interval_s * 2000)))
            ch = grpc.aio.insecure_channel(
                self.backends[name].address,
                options=[
                    # Reconnect soon after a site comes back instead of backing off for minutes.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", backoff_ms),
                    ("grpc.enable_retries", 0),
                ],
            )
            self._channels[name] = ch
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(ch)

    def timeout_for(self, name: str) -> float:
        """This backend's probe deadline: what it has been observed to need, within bounds."""
        st = self.state[name]
        return min(max(self.timeout_s, st.timeout_s, TIMEOUT_FACTOR * st.probe_rtt_ms / 1000.0), self.max_timeout_s)

    async def probe(self, name: str) -> ProbeResult:
        """One ServerReady call with this backend's probe deadline."""
        timeout_s = self.timeout_for(name)
        t0 = time.monotonic()
        try:
            reply = await self._stub(name).ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            result = describe_rpc_error(e, timeout_s)
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._timed_out(name, timeout_s)
            return result
        except asyncio.TimeoutError:
            self._timed_out(name, timeout_s)
            return ProbeResult(False, f"probe timeout after {timeout_s * 1000:.0f} ms")
        st = self.state[name]
        rtt_ms = (time.monotonic() - t0) * 1000.0
        st.probe_rtt_ms = rtt_ms if st.probe_rtt_ms == 0.0 else st.probe_rtt_ms + RTT_ALPHA * (rtt_ms - st.probe_rtt_ms)
        st.timeout_s = 0.0  # answered in time: back to what its round trips say
        if not reply.ready:
            return ProbeResult(False, "server says not ready")
        return ProbeResult(True, "")

    def _timed_out(self, name: str, timeout_s: float) -> None:
        """A busy backend may need longer than we waited: wait twice as long next time (bounded)."""
        self.state[name].timeout_s = min(timeout_s * 2.0, self.max_timeout_s)

    def in_band(self, name: str, ok: bool) -> None:
        """A proxy saw a call to `name` end: ok = a backend success, else a backend failure.

        Feed it only outcomes the backend is answerable for (not a client's bad
        or cancelled call). Successes count like good probes; failures like failed ones.
        """
        st = self.state.get(name)
        if st is None:
            return
        if ok:
            st.in_band_ok += 1
            if st.probed:
                self.record(name, ProbeResult(True, ""), probe=False)
        else:
            st.in_band_failed += 1
            if st.probed and st.healthy:
                self.record(name, ProbeResult(False, "calls failing"), probe=False)

    def record(self, name: str, result: ProbeResult, probe: bool = True) -> None:
        """Folds one probe result (or, probe=False, one in-band outcome) into the backend's
        state; reports and logs transitions."""
        st = self.state[name]
        if probe:
            st.probes += 1
            st.last_probe_unix_ms = int(time.time() * 1000)
        was_healthy, was_detail, first = st.healthy, st.detail, not st.probed
        st.probed = True
        if result.ok:
            st.successes_in_row += 1
            st.failures_in_row = 0
            if first or st.successes_in_row >= self.rise:
                st.healthy, st.detail = True, ""
        else:
            st.failures_in_row += 1
            st.successes_in_row = 0
            if first or result.definitive or st.failures_in_row >= self.fall or not st.healthy:
                st.healthy, st.detail = False, result.detail
        if st.healthy != was_healthy or first:
            if st.healthy:
                log.info("%s is healthy%s", name, "" if first else " again")
            else:
                log.warning("%s is unhealthy: %s", name, st.detail)
        if (st.healthy, st.detail) != (was_healthy, was_detail):
            self.on_change(name)

    async def _loop(self, name: str) -> None:
        next_at = time.monotonic()
        while True:
            self.record(name, await self.probe(name))
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:
                next_at = now
            await asyncio.sleep(next_at - now)

    async def run(self) -> None:
        """Probes until cancelled."""
        try:
            await asyncio.gather(*(self._loop(name) for name in self.backends))
        finally:
            await self.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()
