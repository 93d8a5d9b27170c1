"""The proxy's link to the controller, on a thread of its own.

The controller client (grpc.aio) runs on a plain asyncio loop in a separate
thread, never on the fast path's uvloop loop: gRPC's own I/O engine and the
fast path then share no event loop, and a slow or failing controller cannot
stall a frame. Pushed updates are decoded and folded here (fastpath.control.
pushed_state) and what the proxy needs (a routing config, policies, a fleet
view) goes to the fast path's loop with call_soon_threadsafe, in the order
config, policies, telemetry; observations go the other way through the
watcher's bounded deque (an O(1) append).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable

from fastpath.config import ConfigError

log = logging.getLogger("fastpath.dataplane")


class ControllerLink:
    def __init__(self, target: str, proxy: Any, token: Callable[[], str]) -> None:
        from fastpath.control.watcher import FleetWatcher

        self.proxy_loop = asyncio.get_running_loop()
        self.proxy = proxy
        self.base_config = proxy.config
        # Backend order as the proxy indexes them: pushed backends are appended, removed ones stay.
        self.order: list[str] = [b.name for b in proxy.config.backends]
        self.removed: set[str] = set()
        self.watcher = FleetWatcher(target, proxy.proxy_id, self._on_update, flows_provider=self._flows,
                                    on_policies=self._on_policies, on_config=self._on_config, token=token,
                                    decisions_provider=self._decisions, on_budgets=self._on_budgets)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fastpath-controller-link", daemon=True)
        self._refused = ""
        self._applied = self._routing(proxy.config)

    @staticmethod
    def _routing(c: Any) -> tuple:
        return (c.backends, c.policies, c.default_policy, c.rtt_ms, c.affinity_max_utilisation, c.limits)

    def start(self) -> None:
        self._thread.start()

    def observe(self, backend: str, region: str, session: str, ttft_ms: float, ok: bool, model: str,
                prefix_blocks: tuple[int, ...] = ()) -> None:
        self.watcher.observe(backend, region, session, ttft_ms, ok, model, prefix_blocks)

    def usage(self, tenant: str, tokens: float, dollars: float) -> None:
        """A budgeted tenant's finished call, reported with the next batch (the controller keeps the ledger)."""
        self.watcher.usage(tenant, tokens, dollars)

    def _on_budgets(self, resources: dict) -> None:
        gate = self.proxy.gate
        if gate is not None:
            from .call_gate import budget_remainders

            remaining = budget_remainders(resources)
            self.proxy_loop.call_soon_threadsafe(gate.pushed_budgets, remaining)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.watcher.run())
        except Exception:  # the fast path goes on with its last snapshot
            log.exception("controller link stopped")
        finally:
            self.loop.close()

    def _on_config(self, state: Any) -> None:
        """Backends, router settings or regions changed: a new routing config for the proxy."""
        pushed = set(state.named("backend"))
        if not pushed:
            return
        for name in sorted(pushed - set(self.order)):
            self.order.append(name)
        self.removed = set(self.order) - pushed
        try:
            config = state.config(self.base_config, keep=self.order)
        except ConfigError as e:
            if str(e) != self._refused:
                log.warning("pushed config version %d not applied, keeping the current one: %s", state.version, e)
            self._refused = str(e)
            return
        self._refused = ""
        if self._routing(config) == self._applied:
            return  # the proxy runs this already (a resync after reconnect, say)
        self._applied = self._routing(config)
        if self.removed:
            log.info("backends %s left the controller's config: no new calls go there", sorted(self.removed))
        self.proxy_loop.call_soon_threadsafe(self.proxy.apply_config, config)

    def _on_update(self, view: Any) -> None:
        if self.removed:
            from fastpath.gen import control_pb2

            view.backends.extend(control_pb2.BackendTelemetry(
                name=n, healthy=False, health_detail="removed from the controller's config") for n in sorted(self.removed))
        self.proxy_loop.call_soon_threadsafe(self.proxy.set_telemetry, view)

    def _on_policies(self, policies: Any) -> None:
        self.proxy_loop.call_soon_threadsafe(self.proxy.set_policies, policies)

    def _call_on_proxy_loop(self, fn: Callable[[], Any]) -> Any:
        """fn() run on the proxy's own loop (its state is not shared across threads)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except Exception as e:
                fut.set_exception(e)

        self.proxy_loop.call_soon_threadsafe(run)
        return fut.result(timeout=1.0)

    def _flows(self) -> list[Any]:
        return self._call_on_proxy_loop(self.proxy.flow_messages)

    def _decisions(self) -> dict[str, int]:
        return self._call_on_proxy_loop(self.proxy.metrics.decisions_by_axis)

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.watcher.close(), self.loop)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
