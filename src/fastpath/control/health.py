"""Probes each backend's gRPC readiness (KServe v2 `ServerReady`) on a fixed interval.

Routing around failed sites is one of the five axes; it has to rest on the
protocol the traffic uses, not on a side channel, so a probe is a real
`inference.GRPCInferenceService/ServerReady` call with a deadline. A refused
connection marks a backend unhealthy at once (nothing listens); other
failures (timeouts, resets, "not ready") after `fall` probes in a row, so one
lost probe on a busy machine does not move traffic. A backend becomes healthy
again after `rise` good probes in a row. Transitions are logged once each.
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


@dataclass
class HealthState:
    healthy: bool = False
    detail: str = "not probed yet"
    probed: bool = False
    failures_in_row: int = 0
    successes_in_row: int = 0
    probes: int = 0
    last_probe_unix_ms: int = 0


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

    async def probe(self, name: str) -> ProbeResult:
        """One ServerReady call with the probe deadline."""
        try:
            reply = await self._stub(name).ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            return describe_rpc_error(e, self.timeout_s)
        except asyncio.TimeoutError:
            return ProbeResult(False, f"probe timeout after {self.timeout_s * 1000:.0f} ms")
        if not reply.ready:
            return ProbeResult(False, "server says not ready")
        return ProbeResult(True, "")

    def record(self, name: str, result: ProbeResult) -> None:
        """Folds one probe result into the backend's state; reports and logs transitions."""
        st = self.state[name]
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
