"""`fastpath controller`: the slow-path controller process and the control API.

It scrapes backends' metrics, probes their health, folds in what proxies
observe, learns sessions, and serves `fastpath.v1.Control` on
`control.listen`. Every outside call has a deadline and nothing queues
without bound, so backends that refuse, hang or die cost timeouts, not the
controller. Proxies keep routing on their last snapshot while it is away.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpc

from fastpath.config import Config, ConfigError, load_config, split_hostport
from fastpath.control import auth
from fastpath.control.fleet_state import FleetState
from fastpath.control.flow_table import PATHS
from fastpath.control.health import HealthProber
from fastpath.control.policies import PolicyError, PolicyStore
from fastpath.control.scraper import Scraper
from fastpath.gen import control_pb2, control_pb2_grpc

log = logging.getLogger("fastpath.control.controller")

# The controller finds vanished watchers with keepalive pings; watchers find a hung
# controller by its missing heartbeat (see WatchFleet), and may ping every 10 s.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 4_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),
    ("grpc.so_reuseport", 0),
]
MAX_CONCURRENT_RPCS = 1024


class ControllerError(RuntimeError):
    """The controller cannot start; the message says what to change."""


# The path each offload driver moves sessions to (the proxies hold the sockets and do the move).
DRIVER_PATH = {"ebpf": "kernel", "dpu": "dpu"}


class ControlService(control_pb2_grpc.ControlServicer):
    """The `fastpath.v1.Control` API over a FleetState."""

    def __init__(self, controller: "Controller") -> None:
        self.ctl = controller

    async def ListBackends(self, request, context):  # noqa: N802 (gRPC method names)
        return self.ctl.state.snapshot()

    async def WatchFleet(self, request, context) -> AsyncIterator[control_pb2.FleetTelemetry]:  # noqa: N802
        state = self.ctl.state
        who = request.proxy_id or context.peer()
        log.info("watcher %s subscribed", who)
        self.ctl.watchers += 1
        try:
            while True:
                snap = state.snapshot()
                yield snap
                # At most one snapshot per scrape interval, and only when something changed;
                # with no change, the same snapshot again after heartbeat_s, so a watcher can
                # tell a quiet fleet from a hung controller.
                await asyncio.sleep(self.ctl.min_update_interval_s)
                await state.wait_newer(snap.version, self.ctl.heartbeat_s)
                if self.ctl.stopping:
                    return
        finally:
            self.ctl.watchers -= 1
            log.info("watcher %s left", who)

    async def ReportObservations(self, request_iterator, context):  # noqa: N802
        state = self.ctl.state
        accepted = 0
        async for batch in request_iterator:
            n = 0
            for obs in batch.observations:
                n += state.observe(obs, batch.proxy_id)
            settled = False
            if batch.flows_included:
                state.flows.replace_reported(batch.proxy_id, batch.flows)
                settled = state.settle_offloads()
                if self.ctl.steering is not None:  # session affinity learned -> card rule (dpu driver)
                    self.ctl.steering.learned(state.sessions, batch.flows)
            if n or settled:
                state.bump()
            accepted += n
        return control_pb2.ReportAck(accepted=accepted)

    async def ListPolicies(self, request, context):  # noqa: N802
        return self.ctl.policies.to_message()

    async def SetPolicy(self, request, context):  # noqa: N802
        try:
            p = self.ctl.policies.set(request)
        except PolicyError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        log.info("policy %s set: %s", p.name, ", ".join(f"{a}={w:.3f}" for a, w in p.weights.items()))
        if self.ctl.steering is not None:
            self.ctl.steering.policy_changed(p.name)
        return self.ctl.policies.to_message()

    async def ListFlows(self, request, context):  # noqa: N802
        msg = self.ctl.state.flows.to_message()
        if self.ctl.steering is not None:  # connections the card switches, with the card's counters
            msg.flows.extend(self.ctl.steering.flow_messages())
        return msg

    async def SetFlowPath(self, request, context):  # noqa: N802
        """Asks the proxies to move a pinned session off the Python relay; answers once they did (or after 2 s)."""
        state, session, path = self.ctl.state, request.session, request.path
        if path not in PATHS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"path {path!r}: expected one of {', '.join(PATHS)}")
        flow = state.flows.get(session)
        if flow is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no session {session!r} in the flow table; list sessions with `fastpath flows`",
            )
        if flow.path == path:
            state.cancel_offload(session)
            return flow.to_message()
        if path == "python":
            state.cancel_offload(session)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {session!r} is on the {flow.path} path; an offloaded connection stays there until it closes",
            )
        driver = self.ctl.config.offload_driver
        if DRIVER_PATH.get(driver) != path:
            hint = next((d for d, p in DRIVER_PATH.items() if p == path), "")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"offload driver {driver}: sessions cannot move to the {path} path; "
                f"set [offload] driver = \"{hint}\" in the config of the controller and the proxies",
            )
        if not flow.reported:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {session!r} has no pinned connection reported by a proxy; only pinned sessions "
                "(requests carrying x-fastpath-session) can leave the Python relay",
            )
        state.request_offload(session, path)
        log.info("session %s: asked the proxies to move it to the %s path", session, path)
        deadline = time.monotonic() + self.ctl.offload_wait_s
        while (f := state.flows.get(session)) is not None and f.path != path:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await state.wait_newer(state.version, remaining):
                break
        f = state.flows.get(session) or flow
        return f.to_message()


class Controller:
    """Scraper, health prober, fleet state and the control API in one event loop."""

    def __init__(
        self,
        config: Config,
        *,
        listen: str | None = None,
        session_capacity: int = 4096,
        flow_capacity: int = 10000,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.config = config
        self.listen = listen or config.control.listen
        split_hostport(self.listen, "control.listen")
        self.offload_wait_s = 2.0  # SetFlowPath waits this long for a proxy to report the move
        interval_s = config.control.scrape_interval_ms / 1000.0
        self.min_update_interval_s = max(interval_s, 0.01)
        self.scraper = Scraper(config.backends, interval_s, on_change=self._metrics_changed)
        self.health = HealthProber(
            config.backends,
            config.control.health_interval_ms / 1000.0,
            config.control.health_timeout_ms / 1000.0,
            on_change=self._health_changed,
        )
        self.state = FleetState(
            config, self.scraper.metrics, self.health.state,
            session_capacity=session_capacity, flow_capacity=flow_capacity,
        )
        self.policies = PolicyStore(config)
        self.watchers = 0
        self.heartbeat_s = heartbeat_s
        self.stopping = False
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self.steering = None  # fastpath.offload.dpu_affinity.AffinitySteering with the dpu driver

    def _health_changed(self, name: str) -> None:
        self.state.bump()
        if self.steering is not None:
            self.steering.health_changed(name, self.health.state[name].healthy)

    def _metrics_changed(self, name: str, changed: bool) -> None:
        if changed:
            self.state.bump()
        else:
            self.state.refreshed()

    async def start(self) -> str:
        """Binds the control API and starts scraping and probing; returns host:port."""
        self.token = auth.ensure_token(self.config)
        if self.config.offload_driver == "dpu" and self.steering is None:
            from fastpath.offload.dpu_affinity import AffinitySteering

            self.steering = AffinitySteering.open(self.config)
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
                                 interceptors=[auth.TokenInterceptor(self.token, str(auth.token_path(self.config)))])
        control_pb2_grpc.add_ControlServicer_to_server(ControlService(self), server)
        host, _ = split_hostport(self.listen, "control.listen")
        try:
            port = server.add_insecure_port(self.listen)
        except RuntimeError as e:
            port = 0
            why = str(e)
        else:
            why = "port taken"
        if not port:
            await server.stop(None)
            raise ControllerError(
                f"cannot listen on {self.listen} ({why}): is another controller running? "
                "Stop it, or set [control] listen in the config to a free address"
            )
        self._tasks = [
            asyncio.create_task(self.scraper.run(), name="scraper"),
            asyncio.create_task(self.health.run(), name="health"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        # The first snapshot a proxy gets should hold real verdicts, not "not probed yet":
        # serve once every backend was probed and scraped once (bounded by their deadlines).
        first_round_s = self.health.timeout_s + self.scraper.timeout_s + 0.1
        deadline = time.monotonic() + first_round_s
        while time.monotonic() < deadline and not self._first_round_done():
            await asyncio.sleep(0.01)
        await server.start()
        self._server = server
        self.address = f"{host}:{port}"
        return self.address

    async def _housekeeping(self) -> None:
        """Ages out stale observations and idle flows, once a second."""
        while True:
            await asyncio.sleep(1.0)
            for name in self.state.expire_observations():
                log.info("%s: no calls observed for %.0f s; its observed TTFT and error rate are reset",
                         name, self.state.observation_ttl_s)
            self.state.flows.expire()
            if self.state.settle_offloads():
                self.state.bump()

    def _first_round_done(self) -> bool:
        probed = all(h.probed for h in self.health.state.values())
        scraped = all(m.scrapes > 0 and (m.scraped_unix_ms or m.error) for m in self.scraper.metrics.values() if m.has_metrics)
        return probed and scraped

    async def stop(self, grace_s: float = 0.5) -> None:
        self.stopping = True
        self.state.bump()  # wakes WatchFleet streams so they end cleanly
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self.steering is not None:
            self.steering.close()
            self.steering = None

    async def __aenter__(self) -> "Controller":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="serve the control API here instead of [control] listen")


async def _serve(config: Config, listen: str | None) -> int:
    ctl = Controller(config, listen=listen)
    try:
        address = await ctl.start()
    except ControllerError as e:
        print(f"fastpath controller: {e}", file=sys.stderr)
        return 1
    c = config.control
    print(
        f"fastpath controller listening on {address} ({len(config.backends)} backends; "
        f"metrics every {c.scrape_interval_ms:g} ms, health every {c.health_interval_ms:g} ms; "
        f"offload driver {config.offload_driver})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await ctl.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.listen:
            split_hostport(args.listen, "--listen")
    except ConfigError as e:
        print(f"fastpath controller: {e}", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(_serve(config, args.listen))
    except ImportError:
        return asyncio.run(_serve(config, args.listen))
