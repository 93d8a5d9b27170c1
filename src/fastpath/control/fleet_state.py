"""The controller's view of the fleet: scraped load, health, and what proxies observed.

Everything the proxies' router needs is folded into one versioned state, and
`snapshot()` turns it into the `FleetTelemetry` message WatchFleet streams.
The version grows on every change (and across controller restarts: it starts
from the clock), so a proxy can tell a new snapshot from a repeat; when nothing changes, a freshness change (a newer scrape time) still
bumps it at most once per `heartbeat_s`, so proxies can see telemetry is live.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from fastpath.config import Config
from fastpath.control.flow_table import FlowTable
from fastpath.control.health import HealthState
from fastpath.control.scraper import BackendMetrics
from fastpath.gen import control_pb2
from fastpath.router.prefix import PrefixIndex

MAX_SESSION_CHARS = 256
MAX_REGION_CHARS = 64
MAX_REGIONS_PER_BACKEND = 64
MAX_TTFT_MS = 3_600_000.0
MAX_PREFIX_BLOCKS = 256  # prompt blocks taken from one observation


@dataclass
class Observed:
    """EWMAs of what proxies saw calling one backend."""

    ttft_ms: float = 0.0
    error_rate: float = 0.0
    ttft_ms_by_region: dict[str, float] = field(default_factory=dict)
    calls: int = 0
    last_seen: float = 0.0  # time.monotonic() of the latest observation


def ewma(old: float, sample: float, alpha: float, first: bool) -> float:
    return sample if first else old + alpha * (sample - old)


class FleetState:
    """Per-backend telemetry, learned sessions and flows, with a change version."""

    def __init__(
        self,
        config: Config,
        metrics: dict[str, BackendMetrics],
        health: dict[str, HealthState],
        session_capacity: int = 4096,
        flow_capacity: int = 10000,
        ttft_alpha: float = 0.2,
        error_alpha: float = 0.1,
        heartbeat_s: float = 1.0,
        observation_ttl_s: float = 30.0,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.health = health
        self.observed: dict[str, Observed] = {b.name: Observed() for b in config.backends}
        self.sessions: OrderedDict[str, str] = OrderedDict()
        self.session_capacity = max(1, session_capacity)
        self.flows = FlowTable(flow_capacity)
        self.offload_requests: OrderedDict[str, str] = OrderedDict()  # session -> path asked for
        self.ttft_alpha, self.error_alpha = ttft_alpha, error_alpha
        self.heartbeat_s = heartbeat_s
        self.observation_ttl_s = observation_ttl_s
        # Starts at the wall clock in microseconds, so versions keep growing across controller restarts.
        self.version = int(time.time() * 1_000_000)
        self.rejected_observations = 0
        self._last_bump = time.monotonic()
        self._event = asyncio.Event()
        self._cache: tuple[int, control_pb2.FleetTelemetry] | None = None
        # When the latest version was made, and the latest version that must be pushed at once
        # (config and policy changes; telemetry is pushed at most once per scrape interval).
        self.changed_at = self._last_bump
        self.urgent_version = 0
        # Session affinity changes in order, so subscribers get deltas: (seq, session, backend or
        # "" when forgotten). A subscriber older than the log's start gets the whole map again.
        self.session_seq = 0
        self.session_log: deque[tuple[int, str, str]] = deque(maxlen=max(1024, 4 * self.session_capacity))
        # Prompt-prefix blocks every proxy sent to each backend, merged; shipped in snapshots.
        pc = config.prefix
        self.prefix = PrefixIndex(len(config.backends), pc.capacity_blocks, pc.ttl_s)
        self.prefix_ship = pc.ship_blocks
        self._prefix_cache: tuple[int, dict] | None = None
        self._backend_index = {b.name: i for i, b in enumerate(config.backends)}

    # -- change tracking -------------------------------------------------
    def bump(self, urgent: bool = False) -> None:
        """Something changed: a new version, and every waiter wakes (urgent: pushed without delay)."""
        self.version += 1
        self._last_bump = self.changed_at = time.monotonic()
        if urgent:
            self.urgent_version = self.version
        event, self._event = self._event, asyncio.Event()
        event.set()

    def refreshed(self) -> None:
        """Telemetry was re-read but did not change: bump at most once per heartbeat."""
        if time.monotonic() - self._last_bump >= self.heartbeat_s:
            self.bump()

    async def wait_newer(self, version: int, timeout_s: float | None = None) -> bool:
        """Waits until the version is past `version`; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.version <= version:
            event = self._event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except asyncio.TimeoutError:
                return self.version > version
        return True

    def backends_changed(self, old: Config, new: Config) -> None:
        """A reload changed the backend list: the prefix index is kept by name (its rows follow the backends)."""
        if [b.name for b in old.backends] == [b.name for b in new.backends] and old.prefix == new.prefix:
            return
        pc = new.prefix
        rows = [self._backend_index.get(b.name) for b in new.backends]
        self.prefix = self.prefix.remapped(rows, pc.capacity_blocks, pc.ttl_s)
        self.prefix_ship = pc.ship_blocks
        self._backend_index = {b.name: i for i, b in enumerate(new.backends)}
        self._prefix_cache = None

    # -- observations ----------------------------------------------------
    def observe(self, obs: control_pb2.Observation, proxy_id: str) -> bool:
        """Folds one observation in; False (and counted) when it cannot be used."""
        seen = self.observed.get(obs.backend)
        ttft = obs.ttft_ms
        if seen is None or not math.isfinite(ttft) or not 0 <= ttft <= MAX_TTFT_MS:
            self.rejected_observations += 1
            return False
        first = seen.calls == 0
        seen.calls += 1
        seen.last_seen = time.monotonic()
        seen.error_rate = ewma(seen.error_rate, 0.0 if obs.ok else 1.0, self.error_alpha, first)
        if obs.ok and ttft > 0:
            seen.ttft_ms = ewma(seen.ttft_ms, ttft, self.ttft_alpha, seen.ttft_ms == 0.0)
            region = obs.region[:MAX_REGION_CHARS]
            if region:
                old = seen.ttft_ms_by_region.get(region)
                if old is not None:
                    seen.ttft_ms_by_region[region] = ewma(old, ttft, self.ttft_alpha, False)
                elif len(seen.ttft_ms_by_region) < MAX_REGIONS_PER_BACKEND:
                    seen.ttft_ms_by_region[region] = ttft
        if obs.ok and len(obs.prefix_blocks):
            self.prefix.learn(self._backend_index[obs.backend], obs.prefix_blocks[:MAX_PREFIX_BLOCKS])
        session = obs.session[:MAX_SESSION_CHARS]
        if session:
            if obs.ok:
                if self.sessions.get(session) != obs.backend:
                    self._log_session(session, obs.backend)
                self.sessions[session] = obs.backend
                self.sessions.move_to_end(session)
                while len(self.sessions) > self.session_capacity:
                    self._log_session(self.sessions.popitem(last=False)[0], "")
            elif self.sessions.get(session) == obs.backend:
                # The backend that held this session failed it: its cache is no reason to go back.
                del self.sessions[session]
                self._log_session(session, "")
            self.flows.touch(session, obs.region[:MAX_REGION_CHARS], obs.backend, proxy_id[:MAX_SESSION_CHARS])
        return True

    def _log_session(self, session: str, backend: str) -> None:
        self.session_seq += 1
        self.session_log.append((self.session_seq, session, backend))

    def forget_sessions_of(self, names: set[str]) -> int:
        """Drops learned sessions held by backends that left the config; returns how many."""
        gone = [s for s, b in self.sessions.items() if b in names]
        for s in gone:
            del self.sessions[s]
            self._log_session(s, "")
        return len(gone)

    def session_changes(self, since: int) -> dict[str, str] | None:
        """Sessions changed after seq `since` (latest backend, "" = forgotten); None when the log no longer reaches back."""
        log = self.session_log
        if since >= self.session_seq:
            return {}
        if not log or log[0][0] > since + 1:
            return None
        out: dict[str, str] = {}
        for seq, session, backend in reversed(log):
            if seq <= since:
                break
            out.setdefault(session, backend)
        return out

    # -- offload requests ----------------------------------------------
    def request_offload(self, session: str, path: str) -> None:
        """Asks the proxies (through the next snapshots) to move `session` to `path`."""
        self.offload_requests[session] = path
        self.offload_requests.move_to_end(session)
        while len(self.offload_requests) > self.flows.capacity:
            self.offload_requests.popitem(last=False)
        self.bump()

    def cancel_offload(self, session: str) -> None:
        if self.offload_requests.pop(session, None) is not None:
            self.bump()

    def settle_offloads(self) -> bool:
        """Drops requests that are done or whose session is gone; True when any was dropped."""
        done = [s for s, p in self.offload_requests.items() if (f := self.flows.get(s)) is None or f.path == p]
        for s in done:
            del self.offload_requests[s]
        return bool(done)

    def expire_observations(self, now: float | None = None) -> list[str]:
        """Forgets what proxies saw of backends nobody has called for observation_ttl_s.

        Without this a backend that was slow or failing once, and so gets no
        traffic, would keep its bad averages forever and never be tried again;
        forgotten, it is scored from its metrics until proxies observe it anew.
        """
        now = time.monotonic() if now is None else now
        expired = [name for name, o in self.observed.items()
                   if o.calls and now - o.last_seen > self.observation_ttl_s]
        for name in expired:
            self.observed[name] = Observed()
        if expired:
            self.bump()
        return expired

    # -- snapshot --------------------------------------------------------
    def backend_telemetry(self, name: str) -> control_pb2.BackendTelemetry:
        b = self.config.backend(name)
        m = self.metrics[name]
        h = self.health[name]
        o = self.observed[name]
        detail = h.detail
        if h.healthy and m.error:
            detail = m.error  # ready, but its load is not being read
        return control_pb2.BackendTelemetry(
            name=name,
            healthy=h.healthy,
            health_detail=detail,
            num_requests_waiting=m.num_requests_waiting,
            num_requests_running=m.num_requests_running,
            gpu_cache_usage_perc=m.gpu_cache_usage_perc,
            power_draw_watts=m.power_draw_watts,
            power_budget_watts=m.power_budget_watts or b.power_budget_watts,
            ttft_ms_observed=o.ttft_ms,
            error_rate=o.error_rate,
            max_num_seqs=m.max_num_seqs,
            scraped_unix_ms=m.scraped_unix_ms,
            has_metrics=m.has_metrics,
            ttft_ms_by_region=o.ttft_ms_by_region,
        )

    def prefix_resources(self) -> dict[tuple[str, str], control_pb2.Resource]:
        """The merged prompt-prefix index as pushed resources, one per backend holding blocks (built once per version).

        Each carries that backend's newest `ship_blocks` blocks; a subscriber's delta
        holds only the backends whose blocks changed since its last update.
        """
        if self._prefix_cache is not None and self._prefix_cache[0] == self.version:
            return self._prefix_cache[1]
        out: dict[tuple[str, str], control_pb2.Resource] = {}
        if self.prefix_ship > 0 and self.prefix.learned:
            for i, b in enumerate(self.config.backends):
                blocks = self.prefix.export(i, self.prefix_ship)
                if blocks:
                    out["prefix", b.name] = control_pb2.Resource(
                        type="prefix", name=b.name, prefix=control_pb2.PrefixBlocks(backend=b.name, blocks=blocks))
        self._prefix_cache = (self.version, out)
        return out

    def snapshot(self) -> control_pb2.FleetTelemetry:
        """The current FleetTelemetry (built once per version)."""
        if self._cache is not None and self._cache[0] == self.version:
            return self._cache[1]
        msg = control_pb2.FleetTelemetry(
            version=self.version,
            generated_unix_ms=int(time.time() * 1000),
            backends=[self.backend_telemetry(b.name) for b in self.config.backends],
            session_backend=self.sessions,
        )
        if self.offload_requests:
            msg.offload_sessions.extend(self.offload_requests)
        if self.prefix_ship > 0 and self.prefix.learned:
            for i, b in enumerate(self.config.backends):
                blocks = self.prefix.export(i, self.prefix_ship)
                if blocks:
                    msg.prefix_index.add(backend=b.name, blocks=blocks)
        self._cache = (self.version, msg)
        return msg
