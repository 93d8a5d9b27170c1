"""`fastpath proxy`: the fast path as a process (uvloop), with its controller link and graceful stop."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from fastpath.config import ConfigError, load_config

from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config (default: the embedded one)")
    parser.add_argument("--listen", help="override proxy.listen (host:port)")
    parser.add_argument("--controller", help="control API address (default: control.listen of the config)")
    parser.add_argument("--no-controller", action="store_true",
                        help="route on the config and what this proxy observes, without a controller")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to let in-flight calls finish after SIGTERM (default 30)")


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    proxy = Proxy(config)
    host, port = await proxy.start(args.listen)
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

    try:
        return uvloop.run(serve(args))
    except ConfigError as e:
        print(f"fastpath proxy: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fastpath proxy: cannot listen: {e.strerror} ({e})", file=sys.stderr)
        return 1
