"""The proxy's side of the control API: follow pushed configuration, report observations.

A proxy runs one `FleetWatcher`. `run()` keeps a Subscribe stream open (the
controller's pushed configuration: the full state first, then deltas; see
fastpath.control.push) and folds each update into a `PushedState`; it calls
`on_config` when backends, router settings or regions changed, `on_policies`
when policies did, and `on_update` with the fleet telemetry (a FleetView)
whenever the version moved. When the controller is down or restarts it
retries forever with capped backoff, and the proxy keeps routing on what it
has; a reconnect starts with the full state again. `observe()` is called on
the request path, so it only appends a tuple to a bounded deque (the oldest
is dropped when full); a background task sends batches every ~100 ms.
"""
from __future__ import annotations

import asyncio
import os
import logging
import random
from collections import deque
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from fastpath.control import auth
from fastpath.control.pushed_state import PushedState
from fastpath.gen import control_pb2, control_pb2_grpc

log = logging.getLogger("fastpath.control.watcher")



CHANNEL_OPTIONS = [
    # Find a controller that came back within the backoff cap, not minutes later.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Notice a peer that vanished without closing the connection.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]


class FleetWatcher:
    """Subscribes to the controller's fleet snapshots and reports what the proxy observed."""

    def __init__(
        self,
        target: str,
        proxy_id: str,
        on_update: Callable[[control_pb2.FleetTelemetry], None],
        *,
        max_pending: int = 10_000,
        flush_interval_s: float = 0.1,
        batch_max: int = 1000,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        report_timeout_s: float = 1.0,
        stale_after_s: float = 5.0,
        on_policies: Callable[[control_pb2.PolicyList], None] | None = None,
        flows_provider: Callable[[], Iterable[control_pb2.Flow]] | None = None,
        token: Callable[[], str] | str | None = None,
        flows_interval_s: float = 1.0,
        on_config: Callable[[PushedState], None] | None = None,
        decisions_provider: Callable[[], dict[str, int]] | None = None,
        on_push: Callable[[control_pb2.ConfigUpdate], None] | None = None,
        on_budgets: Callable[[dict[str, control_pb2.Resource]], None] | None = None,
    ) -> None:
        self.target = target
        self.proxy_id = proxy_id
        self.on_update = on_update
        self.flush_interval_s = flush_interval_s
        self.batch_max = batch_max
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.report_timeout_s = report_timeout_s
        # The controller re-sends its snapshot every second when nothing changes; silence this
        # long means it hangs (a stopped process still completes TCP handshakes), so reconnect.
        self.stale_after_s = stale_after_s
        self._handler_failing = False
        # Pushed policies (SetPolicy, a reload) and config (backends, settings, regions).
        self.on_policies = on_policies
        self.on_config = on_config
        self.on_push = on_push  # every update as received (tests, benchmarks)
        self.decisions_provider = decisions_provider
        self.on_budgets = on_budgets  # pushed "budget" resources (tenant -> Resource) when they change
        self._usage: deque[tuple[str, float, float]] = deque()  # (tenant, tokens, dollars) not yet reported
        self.policies_seen: control_pb2.PolicyList | None = None
        self.state = PushedState()
        # The proxy's pinned sessions, reported with the observations about once a second
        # (the controller lists them and asks for offloads through the snapshots).
        self.flows_provider = flows_provider
        # Read at each report: the token file may appear after the proxy starts. None: $FASTPATH_CONTROL_TOKEN.
        if token is None:
            self._token: Callable[[], str] = lambda: os.environ.get(auth.ENV, "")
        elif callable(token):
            self._token = token
        else:
            self._token = lambda: token
        self.flows_interval_s = flows_interval_s
        self._flows_due = 0.0
        self._provider_failing = False
        self.latest: Any = None  # the latest FleetView
        self.connected = False
        self.updates = 0
        self.reconnects = 0
        self.attempts = 0  # WatchFleet calls made (one per connection attempt)
        self.dropped = 0  # observations lost: deque full, or a batch the controller did not take
        self.reported = 0  # observations the controller accepted
        self._pending: deque[tuple] = deque(maxlen=max(1, max_pending))
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._closed = asyncio.Event()
        self._down_logged = False

    # -- request path ----------------------------------------------------
    def observe(self, backend: str, region: str, session: str, ttft_ms: float, ok: bool, model: str,
                prefix_blocks: tuple[int, ...] = ()) -> None:
        """Records one finished call (and its prompt blocks, for the shared prefix index).
        O(1); never blocks; drops the oldest when full."""
        pending = self._pending
        if len(pending) == pending.maxlen:
            self.dropped += 1
        pending.append((backend, region, session, ttft_ms, ok, model, prefix_blocks))

    def usage(self, tenant: str, tokens: float, dollars: float) -> None:
        """Records what one finished call of a budgeted tenant used. O(1); summed per tenant when reported."""
        self._usage.append((tenant, tokens, dollars))

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- background ------------------------------------------------------
    async def run(self) -> None:
        """Follows the controller until close(); never raises for a missing controller."""
        self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        stub = control_pb2_grpc.ControlStub(self._channel)
        helpers = [asyncio.create_task(self._flush_loop(stub), name="fleetwatcher-flush")]
        try:
            await self._watch_loop(stub)
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush_once(stub, timeout_s=0.2)  # best effort: what is still pending
            await self._channel.close()

    async def _watch_loop(self, stub: control_pb2_grpc.ControlStub) -> None:
        backoff = self.backoff_initial_s
        while not self._closed.is_set():
            why = "stream ended"
            self.attempts += 1
            call = stub.Subscribe(control_pb2.SubscribeRequest(proxy_id=self.proxy_id))
            self._call = call
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.stale_after_s):
                            msg = await call.read()
                    except TimeoutError:
                        call.cancel()
                        why = f"no update for {self.stale_after_s:g} s: the controller hangs"
                        break
                    if msg is grpc.aio.EOF:
                        break
                    if not self.connected:
                        self.connected = True
                        if self._down_logged:
                            self.reconnects += 1
                        self._down_logged = False
                        log.info("following controller at %s (version %d, %d resources)", self.target,
                                 msg.version, len(msg.resources))
                    backoff = self.backoff_initial_s
                    self._apply(msg)
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {(e.details() or '')[:120]}"
            except asyncio.CancelledError:
                if self._closed.is_set():
                    break
                raise
            finally:
                self._call = None
            if self._closed.is_set():
                break
            self.connected = False
            if not self._down_logged:
                self._down_logged = True
                kept = f"keeping fleet version {self.latest.version}" if self.latest else "no fleet snapshot yet"
                log.warning("controller at %s unreachable (%s); %s; retrying every <= %.1f s",
                            self.target, why, kept, self.backoff_max_s)
            try:
                async with asyncio.timeout(backoff * random.uniform(0.8, 1.2)):
                    await self._closed.wait()
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, self.backoff_max_s)

    def _apply(self, msg: control_pb2.ConfigUpdate) -> None:
        """Folds one pushed update in and tells the proxy what changed."""
        if self.on_push is not None:
            self.on_push(msg)
        if not msg.full_state and not msg.resources and not msg.removed and msg.version == self.state.version:
            return  # a heartbeat: nothing changed
        ch = self.state.apply(msg)
        self.updates += 1
        try:
            if ch.config and self.on_config is not None:
                self.on_config(self.state)
            if self.on_budgets is not None and ("budget" in ch.other or ch.full):
                self.on_budgets(self.state.named("budget"))
            if (ch.policies or ch.config) and self.on_policies is not None:
                got = self.state.policy_list()
                if got != self.policies_seen:
                    self.policies_seen = got
                    self.on_policies(got)
            self.latest = self.state.view()
            self.on_update(self.latest)
        except Exception:  # the proxy's callback must not end the subscription
            if not self._handler_failing:  # logged once until it works again
                log.exception("handler of pushed version %d failed", msg.version)
            self._handler_failing = True
        else:
            self._handler_failing = False

    async def _flush_loop(self, stub: control_pb2_grpc.ControlStub) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            while self._pending or self._usage or self._flows_report_due():
                if not await self._flush_once(stub, self.report_timeout_s):
                    break

    def _flows_report_due(self) -> bool:
        return self.flows_provider is not None and time.monotonic() >= self._flows_due

    def _flows(self) -> list[control_pb2.Flow] | None:
        """The proxy's flows now, or None when its provider failed (logged once until it works)."""
        assert self.flows_provider is not None
        try:
            flows = list(self.flows_provider())
        except Exception:
            if not self._provider_failing:
                log.exception("flows provider failed; flows are not reported until it works")
            self._provider_failing = True
            return None
        self._provider_failing = False
        return flows

    async def _flush_once(self, stub: control_pb2_grpc.ControlStub, timeout_s: float) -> bool:
        """Sends up to batch_max pending observations (and the flows when due); False when the controller did not take them."""
        pending = self._pending
        with_flows = self._flows_report_due()
        if not pending and not with_flows and not self._usage:
            return True
        n = min(len(pending), self.batch_max)
        obs = [pending.popleft() for _ in range(n)]
        batch = control_pb2.ObservationBatch(
            proxy_id=self.proxy_id,
            config_version=self.state.version,
            observations=[
                control_pb2.Observation(backend=b, region=r, session=s, ttft_ms=t, ok=ok, model=m, prefix_blocks=p)
                for b, r, s, t, ok, m, p in obs
            ],
        )
        usage: dict[str, list[float]] = {}
        while self._usage:
            tenant, tokens, dollars = self._usage.popleft()
            u = usage.setdefault(tenant, [0.0, 0.0])
            u[0] += tokens
            u[1] += dollars
        for tenant, (tokens, dollars) in usage.items():
            batch.usage[tenant].tokens = tokens
            batch.usage[tenant].dollars = dollars
        if with_flows:
            self._flows_due = time.monotonic() + self.flows_interval_s
            flows = self._flows()
            if flows is not None:
                batch.flows.extend(flows)
                batch.flows_included = True
            if self.decisions_provider is not None:
                try:
                    batch.decisions_by_axis.update(self.decisions_provider())
                except Exception:
                    log.debug("decisions provider failed", exc_info=True)
        try:
            ack = await stub.ReportObservations(iter((batch,)), timeout=timeout_s, metadata=auth.metadata(self._token()))
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as e:
            # Observations feed moving averages: losing some during an outage is fine, piling them up is not.
            self.dropped += n
            # Usage is money: kept (summed) for the next report.
            self._usage.extend((t, u[0], u[1]) for t, u in usage.items())
            log.debug("observations not reported: %s", e)
            return False
        self.reported += ack.accepted
        return True

    async def policies(self, timeout_s: float = 1.0) -> control_pb2.PolicyList:
        """The controller's current policies (raises grpc.aio.AioRpcError when unreachable)."""
        if self._channel is None:
            raise RuntimeError("FleetWatcher.policies() needs run() to be running")
        return await control_pb2_grpc.ControlStub(self._channel).ListPolicies(
            control_pb2.ListPoliciesRequest(), timeout=timeout_s
        )

    async def close(self) -> None:
        """Stops following; run() returns after a last flush."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
