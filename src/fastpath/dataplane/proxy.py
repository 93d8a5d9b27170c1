"""The proxy: wires listeners, the routing state, the upstream pool, calls and pinned sessions.

The fast path reads `snapshot` (immutable, swapped whole when the controller
sends new telemetry) and `live` (what this process observes itself), and calls
the router synchronously: no awaits and no I/O between a HEADERS frame and
its stream leaving for a backend. Calls see the proxy only through
`call_services` (`fastpath.dataplane.services`); pinned connections through
`pinned` (`fastpath.dataplane.pinned.PinnedSessions`).

Entry points other modules use: `Proxy(config, limits=None, proxy_id=None)`,
`await start(listen, metrics_listen)` -> (host, port), `await drain(timeout)`,
`set_telemetry`, `set_policies`, `flows`, `flow_messages`, `render_metrics`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

from fastpath.config import Config, ConfigError, split_hostport
from fastpath.router.features import RequestFeatures, model_from_infer_request, model_from_path
from fastpath.router.live import LiveStats
from fastpath.router.router import Router
from fastpath.router.snapshot import FleetSnapshot, build_snapshot

from .conn import flush_dirty
from .downstream import DownstreamConnection
from .limits import Limits
from .metrics import ProxyCollector, ProxyMetrics
from .pinned import PinnedSessions
from .services import ProxyCallServices, Wiring, with_model
from .upstream import UpstreamPool

log = logging.getLogger("fastpath.dataplane")


class _Wired:
    """A Proxy attribute kept in its `wiring` (fastpath.dataplane.services.Wiring), where calls read it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.wiring, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.wiring, self.name, value)


class Proxy:
    router: Router = _Wired()  # type: ignore[assignment]
    snapshot: FleetSnapshot = _Wired()  # type: ignore[assignment]
    live: LiveStats = _Wired()  # type: ignore[assignment]
    pool: UpstreamPool = _Wired()  # type: ignore[assignment]
    name_bytes: list[bytes] = _Wired()  # type: ignore[assignment]
    watcher: Any = _Wired()

    def __init__(self, config: Config, limits: Limits | None = None, proxy_id: str | None = None) -> None:
        self.wiring = Wiring()
        self.config = config
        # The config's [limits] over the given (or default) ones; kept apart so a reload can drop an override.
        self._limits_base = limits or Limits(upstream_connect_timeout_s=config.proxy.connect_timeout_ms / 1000.0)
        self.limits = dataclasses.replace(self._limits_base, **config.limits)
        self.proxy_id = proxy_id or f"proxy-{os.getpid()}"
        self.router = Router(config)
        self.snapshot = build_snapshot(config, None)
        self.live = LiveStats(len(config.backends))
        self.names = [b.name for b in config.backends]
        self.name_bytes = [n.encode() for n in self.names]
        self.addresses = [split_hostport(b.address, b.name) for b in config.backends]
        self.models = frozenset(config.models)
        self.pool = UpstreamPool(self, config.proxy.upstream_connections)
        self.connections: set[DownstreamConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.metrics = ProxyMetrics()
        self.metrics.backend_names = self.names
        self.metrics.gauges = self.metric_gauges
        self.metrics.open_flows = self.flows
        self.draining = False
        self.watcher = None  # fastpath.control.watcher.FleetWatcher when a controller is used
        self.servers: list[asyncio.base_events.Server] = []
        self._unreachable: dict[int, str] = {}
        self._last_log = 0.0
        self._last_limit_log = 0.0
        self.malformed = 0  # requests refused as malformed (RFC 9113 §8.1.1), never forwarded
        self.pin_sessions = config.proxy.pin_sessions
        self.offload: Any = None  # the steering table (fastpath.offload), opened by start()
        self.pinned = PinnedSessions(self)
        self.gate: Any = None  # admission control and budgets, only when configured (fastpath.dataplane.call_gate)
        if config.admission is not None or config.budgets:
            from .call_gate import CallGate

            self.gate = CallGate(self)
        self.call_services = ProxyCallServices(self)
        self.config_regions = [b.region for b in config.backends]  # for rendezvous.session_backend
        self.reuse_port = False  # True in a worker: the listener shares its port (SO_REUSEPORT)
        self._registry: Any = None
        self.telemetry: Any = None  # the latest fleet telemetry from the controller

    # -- routing inputs (kept for callers outside the call path) ----------------
    def features_for(self, headers: list) -> RequestFeatures:
        return self.call_services.features(headers)

    @staticmethod
    def with_model(f: RequestFeatures, model: str) -> RequestFeatures:
        return with_model(f, model)

    def model_for_path(self, path: bytes) -> str:
        model = model_from_path(path)
        return model if model in self.models else ""

    @staticmethod
    def model_from_body(pending: Any) -> str | None:
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        return model_from_infer_request(data)

    def set_telemetry(self, telemetry: Any) -> None:
        """Swaps in a new fleet snapshot (called by the controller watcher)."""
        self.telemetry = telemetry
        self.snapshot = build_snapshot(self.config, telemetry)
        wanted = getattr(telemetry, "offload_sessions", None)
        if wanted:
            self.offload_sessions(set(wanted))
        for i, b in enumerate(self.names):
            if i in self._unreachable and self.snapshot_healthy(i):
                del self._unreachable[i]

    def set_policies(self, policy_list: Any) -> None:
        """Applies the controller's policies (SetPolicy) to this proxy's router."""
        from fastpath.config import AXES, Policy

        policies = {p.name: Policy(p.name, {a: float(getattr(p, a)) for a in AXES}) for p in policy_list.policies}
        default = policy_list.default_policy or self.config.default_policy
        try:
            self.router.set_policies(policies, default)
        except ValueError as e:
            log.warning("policies from the controller not applied: %s", e)
            return
        log.info("policies now %s (default %s)", sorted(policies), default)

    def apply_config(self, config: Config) -> None:
        """Takes backends and router settings pushed by the controller (a reload); calls in flight go on.

        Backends are only ever appended, never moved (the controller link keeps a
        removed one in place, reported unhealthy), so every backend index held by a
        call, a pinned flow or an upstream connection stays valid. A changed address
        applies to connections opened from now on.
        """
        names = [b.name for b in config.backends]
        if names[:len(self.names)] != self.names:
            log.warning("pushed config not applied: it reorders backends %s -> %s", self.names, names)
            return
        old_n = len(self.names)
        self.config = config
        self.names.extend(names[old_n:])  # in place: the metrics and call services read this list
        self.name_bytes = [n.encode() for n in self.names]
        self.addresses = [split_hostport(b.address, b.name) for b in config.backends]
        self.config_regions = [b.region for b in config.backends]
        self.models = frozenset(config.models)
        if len(names) > old_n:
            old, live = self.live, LiveStats(len(names))
            for a in ("inflight", "ttft_ewma_ms", "error_ewma", "consecutive_failures", "cooldown_until",
                      "abandoned_in_row"):
                getattr(live, a)[:old_n] = getattr(old, a)
            live.n_cooling, live.sessions = old.n_cooling, old.sessions
            self.live = live
        # New connections get the new limits; open ones keep what they were told in SETTINGS.
        self.limits = dataclasses.replace(self._limits_base, **config.limits)
        self.call_services.replay_limit = self.limits.replay_limit
        self.router = Router(config)  # the pushed policies are in the config
        self.call_services.set_hedge(config.hedge)
        self.snapshot = build_snapshot(config, self.telemetry)  # new backends: healthy until telemetry says
        log.info("config from the controller applied: %d backends (%s)", len(names), ", ".join(names))

    def snapshot_healthy(self, i: int) -> bool:
        healthy = getattr(self.snapshot, "healthy", None)
        return bool(healthy[i]) if healthy is not None else True

    def backend_address(self, i: int) -> tuple[str, int]:
        return self.addresses[i]

    def backend_unreachable(self, i: int, why: str) -> None:
        if self._unreachable.get(i) != why:
            self._unreachable[i] = why
            log.warning("backend %s %s", self.names[i], why)

    def note_malformed(self, conn: Any, sid: int, message: str) -> None:
        """A request the proxy refused as malformed (RST_STREAM PROTOCOL_ERROR); never forwarded."""
        self.malformed += 1
        now = time.monotonic()
        if now - self._last_limit_log > 1.0:
            self._last_limit_log = now
            log.info("client %s stream %d: %s (%d so far)", conn.peer, sid, message, self.malformed)

    def note_stream_error(self, conn: Any, sid: int, code: int, message: str) -> None:
        self.metrics.resets += 1
        log.info("reset stream %d from %s: %s", sid, conn.peer, message)

    def note_limit(self, conn: Any, limit: str) -> None:
        self.metrics.limits_hit[limit] += 1
        now = time.monotonic()
        if now - self._last_limit_log > 1.0:  # one line a second at most, whatever the flood
            self._last_limit_log = now
            log.warning("client %s hit limit %s (%d times so far)", conn.peer, limit, self.metrics.limits_hit[limit])

    def connection_opened(self, conn: DownstreamConnection) -> bool:
        """Admits a client connection; False (close it) past max_connections."""
        if len(self.connections) >= self.limits.max_connections:
            self.note_limit(conn, "max_connections")
            return False
        self.connections.add(conn)
        self.metrics.connections_total += 1
        self.metrics.connections_open = len(self.connections)
        return True

    def connection_closed(self, conn: DownstreamConnection) -> None:
        self.connections.discard(conn)
        self.metrics.connections_open = len(self.connections)

    def metric_gauges(self) -> dict[str, float]:
        return {
            "fastpath_streams_active": sum(len(c.streams) for c in self.connections),
            "fastpath_upstream_connections": sum(len(v) for v in self.pool.conns.values()),
            "fastpath_snapshot_version": getattr(self.snapshot, "version", 0),
            "fastpath_malformed_requests": self.malformed,
        }

    def metrics_registry(self) -> Any:
        """The prometheus_client registry /metrics serves (made on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(ProxyCollector(self.metrics))
        return self._registry

    def render_metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.metrics_registry()).decode()

    async def render_metrics_off_loop(self) -> bytes:
        """/metrics: counters copied here, rendered by prometheus_client in a worker thread (see metrics_http)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(ProxyCollector(self.metrics.frozen()))
        return await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)

    # -- pinned mode (fastpath.dataplane.pinned.PinnedSessions) -------------------
    def offload_sessions(self, sessions: set[str]) -> int:
        return self.pinned.offload_sessions(sessions)

    def flow_messages(self) -> list[Any]:
        return self.pinned.flow_messages()

    def flows(self) -> list[dict[str, Any]]:
        return self.pinned.flows()

    # -- lifecycle -------------------------------------------------------------
    async def start(self, listen: str | None = None, metrics_listen: str | None = None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        if self.offload is None:
            from fastpath.offload.drivers import open_driver

            self.offload = open_driver(self.config)
        host, port = split_hostport(listen or self.config.proxy.listen, "proxy.listen")
        ssl_ctx = self.tls_context()
        server = await loop.create_server(lambda: DownstreamConnection(self), host, port, backlog=1024,
                                          reuse_address=True, reuse_port=self.reuse_port or None, ssl=ssl_ctx)
        self.servers.append(server)
        bound = server.sockets[0].getsockname()[:2]
        mlisten = self.config.proxy.metrics_listen if metrics_listen is None else metrics_listen
        if mlisten:
            mhost, mport = split_hostport(mlisten, "proxy.metrics_listen")
            from fastpath.metrics_http import serve_metrics

            try:
                self.servers.append(await serve_metrics(self.render_metrics_off_loop, mhost, mport))
            except OSError as e:
                log.warning("metrics endpoint %s not started: %s", mlisten, e.strerror)
        return bound[0], bound[1]

    def tls_context(self) -> Any:
        """TLS for the listener (ALPN h2 only) when the config names a certificate, else None."""
        px = self.config.proxy
        if not px.tls_cert:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(px.tls_cert, px.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"proxy.tls_cert/tls_key: cannot load {px.tls_cert} / {px.tls_key}: {e}") from None
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def drain(self, timeout: float | None = None) -> int:
        """Graceful stop: GOAWAY to every client, finish what is in flight, then close.

        Returns the number of streams still open when the timeout ran out (0 = nothing dropped).
        """
        self.draining = True
        for s in self.servers:
            s.close()
        for c in list(self.connections):
            c.start_drain()
        flush_dirty()
        deadline = time.monotonic() + (self.limits.drain_timeout_s if timeout is None else timeout)
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = sum(len(c.streams) for c in self.connections)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        self.call_services.set_hedge(dataclasses.replace(self.config.hedge, enabled=False))
        self.pool.close()
        self.pinned.close()
        if self.gate is not None:
            self.gate.close()
        return left
