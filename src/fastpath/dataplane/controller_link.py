"""The proxy's link to the controller, on a thread of its own.

The controller client (grpc.aio) runs on a plain asyncio loop in a separate
thread, never on the fast path's uvloop loop: gRPC's own I/O engine and the
fast path then share no event loop, and a slow or failing controller cannot
stall a frame. Snapshots and policies come back to the fast path's loop with
call_soon_threadsafe; observations go the other way through the watcher's
bounded deque (an O(1) append).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable

log = logging.getLogger("fastpath.dataplane")


class ControllerLink:
    def __init__(self, target: str, proxy: Any, token: Callable[[], str]) -> None:
        from fastpath.control.watcher import FleetWatcher

        self.proxy_loop = asyncio.get_running_loop()
        self.proxy = proxy
        self.watcher = FleetWatcher(target, proxy.proxy_id, self._on_update, flows_provider=self._flows,
                                    on_policies=self._on_policies, token=token)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fastpath-controller-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def observe(self, backend: str, region: str, session: str, ttft_ms: float, ok: bool, model: str,
                prefix_blocks: tuple[int, ...] = ()) -> None:
        self.watcher.observe(backend, region, session, ttft_ms, ok, model, prefix_blocks)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.watcher.run())
        except Exception:  # the fast path goes on with its last snapshot
            log.exception("controller link stopped")
        finally:
            self.loop.close()

    def _on_update(self, telemetry: Any) -> None:
        self.proxy_loop.call_soon_threadsafe(self.proxy.set_telemetry, telemetry)

    def _on_policies(self, policies: Any) -> None:
        self.proxy_loop.call_soon_threadsafe(self.proxy.set_policies, policies)

    def _flows(self) -> list[Any]:
        """The proxy's flows, read on the proxy's own loop (its state is not shared across threads)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def read() -> None:
            try:
                fut.set_result(self.proxy.flow_messages())
            except Exception as e:
                fut.set_exception(e)

        self.proxy_loop.call_soon_threadsafe(read)
        return fut.result(timeout=1.0)

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.watcher.close(), self.loop)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
