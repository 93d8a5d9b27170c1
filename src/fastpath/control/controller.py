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
from fastpath.control.budgets import BudgetLedger, budget_resources
from fastpath.control.fleet_state import FleetState, Observed
from fastpath.control.flow_table import PATHS
from fastpath.control.health import HealthProber
from fastpath.control.policies import PolicyError, PolicyStore
from fastpath.control.push import Subscription, config_resources, has_changes
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

    async def Subscribe(self, request, context) -> AsyncIterator[control_pb2.ConfigUpdate]:  # noqa: N802
        """Full state first, then a delta per change (telemetry at most once per scrape interval,
        config and policy changes at once), and the same version again as a heartbeat."""
        ctl, state = self.ctl, self.ctl.state
        sub = Subscription(request.proxy_id or context.peer(), request.resource_types)
        ctl.subscriptions[sub.id] = sub
        log.info("proxy %s subscribed", sub.proxy_id)
        try:
            while not ctl.stopping:
                # Push latency: from the change (or, for a full state, from the subscription) to the send.
                since = state.changed_at if sub.sent else sub.connected_at
                msg = sub.next_update(state, ctl.resources(), ctl.config_generation)
                yield msg
                if has_changes(msg):
                    ctl.metrics.pushed(time.monotonic() - max(since, sub.connected_at), msg.full_state)
                sent_at = time.monotonic()
                if not await state.wait_newer(msg.version, ctl.heartbeat_s):
                    continue
                if state.urgent_version <= msg.version:  # telemetry only: no more often than the scrapes
                    delay = sent_at + ctl.min_update_interval_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
        finally:
            ctl.subscriptions.pop(sub.id, None)
            log.info("proxy %s left", sub.proxy_id)

    async def Reload(self, request, context):  # noqa: N802
        applied, message = await self.ctl.reload(request.path or None)
        return control_pb2.ReloadReply(applied=applied, message=message,
                                       config_generation=self.ctl.config_generation, version=self.ctl.state.version)

    async def GetStatus(self, request, context):  # noqa: N802
        return self.ctl.status()

    async def ReportObservations(self, request_iterator, context):  # noqa: N802
        state = self.ctl.state
        accepted = 0
        async for batch in request_iterator:
            self.ctl.proxy_reported(batch)
            n = 0
            for obs in batch.observations:
                n += state.observe(obs, batch.proxy_id)
                self.ctl.health.in_band(obs.backend, obs.ok)  # calls answered count as health evidence
            settled = False
            if batch.usage and self.ctl.budgets is not None:
                self.ctl.charge_usage(batch.usage)
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
        self.ctl.config_changed()
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
        config_path: str | None = None,
    ) -> None:
        from fastpath.control.metrics import ControllerMetrics

        self.config = config
        # The file Reload and SIGHUP read again (None: the embedded default, nothing to reload).
        self.config_path = config_path
        self.config_generation = 1
        self.subscriptions: dict[int, Subscription] = {}
        self.proxies: dict[str, tuple[float, int, dict[str, int]]] = {}  # id -> (when, config version, decisions)
        self.metrics = ControllerMetrics(self)
        self._resources: tuple[int, dict] | None = None
        self._reload_lock = asyncio.Lock()
        self.listen = listen or config.control.listen
        split_hostport(self.listen, "control.listen")
        self.offload_wait_s = 2.0  # SetFlowPath waits this long for a proxy to report the move
        self.steering = None  # fastpath.offload.dpu_affinity.AffinitySteering with the dpu driver
        self._make_probes(config)
        self.state = FleetState(
            config, self.scraper.metrics, self.health.state,
            session_capacity=session_capacity, flow_capacity=flow_capacity,
        )
        self.policies = PolicyStore(config)
        # Per-tenant budgets shared by every proxy: usage comes in with their reports, remainders go out
        # as "budget" resources on the pushed stream (None: no [budgets] in the config).
        self.budgets: BudgetLedger | None = BudgetLedger(config.budgets) if config.budgets else None
        self.watchers = 0
        self.heartbeat_s = heartbeat_s
        self.stopping = False
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []

    def _health_changed(self, name: str) -> None:
        self.state.bump()
        if self.steering is not None:
            self.steering.health_changed(name, self.health.state[name].healthy)

    # -- pushed configuration --------------------------------------------------
    def resources(self) -> dict:
        """The config's resources (backends, policies, settings, regions), built once per change."""
        key = (self.config_generation, self.policies_generation)
        if self._resources is None or self._resources[0] != key:
            self._resources = (key, config_resources(self.config, self.policies))
        if self.budgets is not None:
            return {**self._resources[1], **budget_resources(self.budgets, time.monotonic(), time.time())}
        return self._resources[1]

    def charge_usage(self, usage) -> None:
        """A proxy's report of what its tenants used; a budget running out is pushed at once."""
        assert self.budgets is not None
        now = time.monotonic()
        ran_out = False
        for tenant, u in usage.items():
            ran_out |= self.budgets.add(tenant, u.tokens, u.dollars, now)
        self.state.bump(urgent=ran_out)

    policies_generation = 0

    def config_changed(self) -> None:
        """Config or policies changed: a new version, pushed to every subscriber at once."""
        self.policies_generation += 1
        self.state.bump(urgent=True)

    async def reload(self, path: str | None = None) -> tuple[bool, str]:
        """Reads the config file again and applies it; an invalid one is refused and the old one kept."""
        async with self._reload_lock:
            path = path or self.config_path
            if not path:
                return False, ("the controller runs on the embedded default config: start it with "
                               "--config FILE to reload one")
            try:
                new = load_config(path)
                self._check_reloadable(new)
            except ConfigError as e:
                self.metrics.reloads["refused"] += 1
                log.warning("config %s refused, keeping generation %d: %s", path, self.config_generation, e)
                return False, f"refused, keeping config generation {self.config_generation}: {e}"
            what = self._describe_change(self.config, new)
            await self._apply_config(new)
            self.config_path = path
            self.config_generation += 1
            self.config_changed()
            self.metrics.reloads["applied"] += 1
            message = f"config generation {self.config_generation} from {path}: {what}"
            log.info("%s", message)
            return True, message

    def _check_reloadable(self, new: Config) -> None:
        old = self.config
        fixed = {
            "control.listen": (old.control.listen, new.control.listen),
            "control.token_file": (old.control.token_file, new.control.token_file),
            "offload.driver": (old.offload_driver, new.offload_driver),
        }
        changed = [k for k, (a, b) in fixed.items() if a != b and not (k == "control.listen" and self.listen != old.control.listen)]
        if changed:
            raise ConfigError(f"{', '.join(changed)} cannot change while the controller runs: "
                              "restart it to use the new value(s), or put the old value(s) back")

    @staticmethod
    def _describe_change(old: Config, new: Config) -> str:
        olds, news = {b.name: b for b in old.backends}, {b.name: b for b in new.backends}
        parts = []
        if added := sorted(news.keys() - olds.keys()):
            parts.append(f"backends added {added}")
        if removed := sorted(olds.keys() - news.keys()):
            parts.append(f"backends removed {removed}")
        if changed := sorted(n for n in olds.keys() & news.keys() if olds[n] != news[n]):
            parts.append(f"backends changed {changed}")
        if old.policies != new.policies or old.default_policy != new.default_policy:
            parts.append(f"policies {sorted(new.policies)} (default {new.default_policy})")
        if old.control != new.control:
            parts.append("control intervals")
        if old.limits != new.limits:
            parts.append(f"limits {new.limits}")
        if old.rtt_ms != new.rtt_ms or old.affinity_max_utilisation != new.affinity_max_utilisation:
            parts.append("router settings")
        return "; ".join(parts) or "no change"

    async def _apply_config(self, new: Config) -> None:
        """Swaps the running config: scraping and probing restart over the new backends, keeping
        what is known of those that stay; policies go back to the file (overrides are dropped)."""
        old = self.config
        for t in self._tasks[:2]:
            t.cancel()
        await asyncio.gather(*self._tasks[:2], return_exceptions=True)
        old_metrics, old_health = self.scraper.metrics, self.health.state
        oldb = {b.name: b for b in old.backends}
        self.config = new
        self._make_probes(new)
        for b in new.backends:
            was = oldb.get(b.name)
            if was is not None and was.metrics_url == b.metrics_url and b.name in old_metrics:
                self.scraper.metrics[b.name] = old_metrics[b.name]
            if was is not None and was.address == b.address and b.name in old_health:
                self.health.state[b.name] = old_health[b.name]
        st = self.state
        st.config, st.metrics, st.health = new, self.scraper.metrics, self.health.state
        st.backends_changed(old, new)
        for b in new.backends:
            st.observed.setdefault(b.name, Observed())
        gone = set(oldb) - {b.name for b in new.backends}
        for name in gone:
            st.observed.pop(name, None)
        if gone:
            st.forget_sessions_of(gone)
        if self.policies.overridden:
            log.info("policy overrides %s dropped: the reloaded file is the source of truth",
                     sorted(self.policies.overridden))
        self.policies = PolicyStore(new)
        if new.budgets != old.budgets:  # usage so far is kept for tenants whose budget stays
            ledger = BudgetLedger(new.budgets)
            if self.budgets is not None:
                ledger._spent = {t: s for t, s in self.budgets._spent.items() if t in new.budgets}
            self.budgets = ledger if new.budgets else None
        self._tasks[:2] = [asyncio.create_task(self.scraper.run(), name="scraper"),
                           asyncio.create_task(self.health.run(), name="health")]

    def _make_probes(self, config: Config) -> None:
        interval_s = config.control.scrape_interval_ms / 1000.0
        self.min_update_interval_s = max(interval_s, 0.01)
        self.scraper = Scraper(config.backends, interval_s, on_change=self._metrics_changed,
                               on_scrape=self.metrics.scraped)
        self.health = HealthProber(
            config.backends,
            config.control.health_interval_ms / 1000.0,
            config.control.health_timeout_ms / 1000.0,
            on_change=self._health_changed,
            fall=config.control.health_fall,
            rise=config.control.health_rise,
        )

    # -- proxies and status -----------------------------------------------------
    def proxy_reported(self, batch: control_pb2.ObservationBatch) -> None:
        pid = batch.proxy_id[:256]
        if not pid:
            return
        old = self.proxies.get(pid)
        decisions = dict(batch.decisions_by_axis) if batch.decisions_by_axis else (old[2] if old else {})
        self.proxies[pid] = (time.monotonic(), batch.config_version, decisions)
        if len(self.proxies) > 4096:  # forget the longest silent
            del self.proxies[min(self.proxies, key=lambda k: self.proxies[k][0])]

    def decisions_by_axis(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, d in self.proxies.values():
            for axis, n in d.items():
                out[axis] = out.get(axis, 0) + n
        return out

    def status(self) -> control_pb2.Status:
        st = self.state
        now = time.monotonic()
        msg = control_pb2.Status(version=st.version, config_generation=self.config_generation,
                                 config_source=self.config.source, generated_unix_ms=int(time.time() * 1000),
                                 sessions_learned=len(st.sessions), default_policy=self.policies.default_policy)
        for b in self.config.backends:
            m = self.scraper.metrics.get(b.name)
            msg.backends.add(telemetry=st.backend_telemetry(b.name), region=b.region,
                             cost_per_1k_tokens=b.cost_per_1k_tokens, models=list(b.models),
                             scrape_seconds=self.metrics.last_scrape_s.get(b.name, 0.0),
                             scrape_errors=m.failures if m else 0)
        msg.decisions_by_axis.update(self.decisions_by_axis())
        flows: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        for f in st.flows.entries():
            flows[f.path] = flows.get(f.path, 0) + 1
            nbytes["python"] = nbytes.get("python", 0) + f.bytes_python
            if f.path != "python":
                nbytes[f.path] = nbytes.get(f.path, 0) + f.bytes_offload
        msg.flows_by_path.update(flows)
        msg.bytes_by_path.update(nbytes)
        subscribed = {s.proxy_id for s in self.subscriptions.values()}
        for pid, (when, version, _) in sorted(self.proxies.items()):
            msg.proxies.add(proxy_id=pid, config_version=version, last_report_age_s=now - when,
                            subscribed=pid in subscribed)
        for pid in sorted(subscribed - self.proxies.keys()):
            msg.proxies.add(proxy_id=pid, subscribed=True, last_report_age_s=-1)
        return msg

    def _metrics_changed(self, name: str, changed: bool) -> None:
        if changed:
            self.state.bump()
        else:
            self.state.refreshed()

    async def start(self) -> str:
        """Binds the control API and starts scraping and probing; returns host:port."""
        self.token = auth.ensure_token(self.config)
        self.metrics.start()
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
        self.metrics.close()
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


async def _serve(config: Config, listen: str | None, config_path: str | None = None) -> int:
    ctl = Controller(config, listen=listen, config_path=config_path)
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
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:  # SIGHUP: read the config file again (refused with the reason when invalid)
        t = loop.create_task(ctl.reload())
        reloads.add(t)
        t.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
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

        return uvloop.run(_serve(config, args.listen, args.config))
    except ImportError:
        return asyncio.run(_serve(config, args.listen, args.config))
