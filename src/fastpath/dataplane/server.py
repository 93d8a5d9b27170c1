"""`fastpath proxy`: the fast path as a process (uvloop), with its controller link and graceful stop."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from fastpath.config import ConfigError, load_config, with_offload

from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")
YOUNG_GC_THRESHOLD = 10_000  # allocations between young-generation collections (CPython default 700)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config (default: the embedded one)")
    parser.add_argument("--listen", help="override proxy.listen (host:port)")
    parser.add_argument("--controller", help="control API address (default: control.listen of the config)")
    parser.add_argument("--no-controller", action="store_true",
                        help="route on the config and what this proxy observes, without a controller")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to let in-flight calls finish after SIGTERM (default 30)")
    # Workers: N processes on one SO_REUSEPORT listener (fastpath.dataplane.workers).
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="worker processes sharing the listen port (default 0: one per core)")
    parser.add_argument("--metrics-listen", help="override proxy.metrics_listen (host:port; \"\" = none)")
    parser.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    parser.add_argument("--offload", choices=("none", "ebpf", "dpu"), help="override [offload] driver")


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if getattr(args, "offload", None):
        config = with_offload(config, args.offload)
    worker = getattr(args, "worker_id", None)
    proxy = Proxy(config, proxy_id=None if worker is None else f"proxy-{os.getppid()}-w{worker}")
    proxy.reuse_port = worker is not None
    host, port = await proxy.start(args.listen, getattr(args, "metrics_listen", None))
    if worker is not None and len(proxy.servers) > 1:  # the supervisor gathers each worker's /metrics
        mhost, mport = proxy.servers[1].sockets[0].getsockname()[:2]
        print(f"fastpath proxy worker {worker} metrics on {mhost}:{mport}", flush=True)
    watcher = None
    if not args.no_controller:
        from fastpath.control.auth import read_token

        from .controller_link import ControllerLink

        watcher = ControllerLink(args.controller or config.control.listen, proxy, lambda: read_token(config))
        proxy.watcher = watcher
        watcher.start()
    print(f"fastpath proxy listening on {host}:{port}"
          + (f" (controller {args.controller or config.control.listen})" if watcher else " (no controller)"),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Long-lived state is made now; keep the collector off it (fewer, shorter GC pauses).
    gc.collect()
    gc.freeze()
    # A call allocates ~150 container objects and frees nearly all of them before the next: with
    # CPython's default first threshold (700) a young collection ran every ~5 calls, 2-3% of
    # the proxy's user CPU under a profiler. The few objects that live long are kept by the call
    # state, not by cycles, so collecting young objects 15x less often only delays cycle freeing.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    await stop.wait()
    log.info("draining: GOAWAY sent to %d client connections", len(proxy.connections))
    left = await proxy.drain(args.drain_timeout)
    if watcher is not None:
        await watcher.close()
    if left:
        log.warning("drain timed out with %d streams still open", left)
    return 0


def run(args: argparse.Namespace) -> int:
    import uvloop

    from .workers import worker_count

    if getattr(args, "worker_id", None) is None and worker_count(getattr(args, "workers", 1)) > 1:
        from .workers import supervise

        return supervise(args)

    try:
        return uvloop.run(serve(args))
    except ConfigError as e:
        print(f"fastpath proxy: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fastpath proxy: cannot listen: {e.strerror} ({e})", file=sys.stderr)
        return 1
