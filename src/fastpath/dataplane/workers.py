"""`fastpath proxy --workers N`: N proxy processes on one SO_REUSEPORT listener, supervised.

Each worker is a whole `fastpath proxy` (its own uvloop, its own controller
link, its own upstream pool); the kernel spreads new connections over their
listening sockets. Workers share nothing on the hot path: a session lands on
the same backend whichever worker takes it because the choice is a pure
function of the session and the fleet (`fastpath.router.rendezvous`) plus the
controller's learned map, which every worker follows.

The supervisor here only manages processes: it holds the port (a bound,
non-listening SO_REUSEPORT socket, so a worker restart never loses it),
starts the workers, restarts one that crashes (with backoff), forwards
SIGTERM/SIGINT so each drains with GOAWAY, and exits once every worker has
exited. It serves the proxy's /metrics address itself, as every worker's
samples with a `worker` label (`fastpath.dataplane.worker_metrics`).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from fastpath.config import ConfigError, load_config, split_hostport
from fastpath.launch import fastpath_argv

from .worker_metrics import merge_expositions

log = logging.getLogger("fastpath.workers")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 10.0  # a worker up this long resets its backoff
PR_SET_PDEATHSIG = 1


def worker_count(requested: int | None) -> int:
    """N as asked, or one per core for 0/None."""
    if requested and requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _die_with_parent() -> None:
    """In each worker before exec: if the supervisor is killed, its workers go too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


def reserve_port(listen: str) -> socket.socket:
    """Binds (without listening) an SO_REUSEPORT socket on listen: fixes port 0 to one port for every
    worker and keeps it while workers restart. OSError when something else holds the port."""
    host, port = split_hostport(listen, "proxy.listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S
    listening: bool = False
    ever_listened: bool = False  # a worker that fails before it ever listens is not restarted
    metrics: str = ""  # host:port of this worker's own /metrics
    done: bool = False  # exited and not to be restarted
    reader: asyncio.Task | None = field(default=None, repr=False)


class Supervisor:
    """Starts, watches and stops the workers; serves their merged /metrics."""

    def __init__(self, n: int, listen: str, base_args: list[str], metrics_listen: str = "",
                 controller: str = "") -> None:
        self.n = n
        self.listen = listen
        self.base_args = base_args  # `fastpath` argv for a worker, without --worker-id
        self.metrics_listen = metrics_listen
        self.controller = controller
        self.workers = [Worker(i) for i in range(n)]
        self.stopping = False
        self.announced = False
        self.changed = asyncio.Event()
        self.failed_rc = 0

    def argv(self, w: Worker) -> list[str]:
        return fastpath_argv(*self.base_args, "--worker-id", str(w.index))

    async def spawn(self, w: Worker) -> None:
        w.proc = await asyncio.create_subprocess_exec(*self.argv(w), stdin=asyncio.subprocess.DEVNULL,
                                                      stdout=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent)
        w.started = time.monotonic()
        w.listening = False
        w.reader = asyncio.get_running_loop().create_task(self._read(w, w.proc))

    async def _read(self, w: Worker, proc: asyncio.subprocess.Process) -> None:
        """Follows a worker's stdout: its listening and metrics lines; the rest is passed on."""
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("fastpath proxy listening on "):
                w.listening = w.ever_listened = True
                self._announce()
            elif line.startswith(f"fastpath proxy worker {w.index} metrics on "):
                w.metrics = line.rsplit(" ", 1)[1]
            else:
                print(f"[worker {w.index}] {line}", flush=True)
        await proc.wait()
        self.changed.set()

    def _announce(self) -> None:
        if self.announced or not all(w.listening for w in self.workers):
            return
        self.announced = True
        pids = ", ".join(str(w.proc.pid) for w in self.workers if w.proc)
        print(f"fastpath proxy listening on {self.listen} ({self.n} workers, pids {pids}; "
              + (f"controller {self.controller})" if self.controller else "no controller)"), flush=True)

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Forwards the stop to every worker (each sends GOAWAY and drains)."""
        if not self.stopping:
            log.info("stopping %d workers (%s)", self.n, signal.Signals(sig).name)
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        self.changed.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        metrics_server = None
        if self.metrics_listen:
            mhost, mport = split_hostport(self.metrics_listen, "proxy.metrics_listen")
            try:
                metrics_server = await asyncio.start_server(self._serve_metrics, mhost, mport, reuse_address=True)
            except OSError as e:
                log.warning("metrics endpoint %s not started: %s", self.metrics_listen, e.strerror)
        for w in self.workers:
            await self.spawn(w)
        restarts: dict[int, asyncio.TimerHandle] = {}
        while True:
            await self.changed.wait()
            self.changed.clear()
            for w in self.workers:
                if w.proc is None or w.proc.returncode is None or w.done or w.index in restarts:
                    continue
                rc = w.proc.returncode
                if self.stopping or rc == 0:
                    w.done = True
                    continue
                if not w.ever_listened:  # it could not start (bad certificate, port taken...): neither can the rest
                    log.error("worker %d (pid %d) exited with code %s before listening; stopping every worker "
                              "(its own message above says why)", w.index, w.proc.pid, rc)
                    self.failed_rc = rc if rc > 0 else 1
                    self.stop()
                    w.done = True
                    continue
                up = time.monotonic() - w.started
                delay = BACKOFF_FIRST_S if up >= STABLE_S else w.backoff_s
                w.backoff_s = min(BACKOFF_MAX_S, delay * 2)  # the next quick crash waits longer
                how = f"exited with code {rc}" if rc > 0 else f"was killed by {signal.Signals(-rc).name}"
                log.warning("worker %d (pid %d) %s after %.1f s; restarting it in %.1f s (the other workers "
                            "keep serving)", w.index, w.proc.pid, how, up, delay)
                w.restarts += 1
                restarts[w.index] = loop.call_later(delay, self._restart, w, restarts)
            if self.stopping:
                for h in restarts.values():
                    h.cancel()
                for i in list(restarts):
                    self.workers[i].done = True
                restarts.clear()
            if all(w.done for w in self.workers):
                break
        if metrics_server is not None:
            metrics_server.close()
        return self.failed_rc

    def _restart(self, w: Worker, restarts: dict[int, asyncio.TimerHandle]) -> None:
        async def go() -> None:
            try:
                if not self.stopping:
                    await self.spawn(w)
                else:
                    w.done = True
            finally:
                restarts.pop(w.index, None)
                self.changed.set()

        asyncio.get_running_loop().create_task(go())

    # -- /metrics: every worker's samples, labelled by worker ------------------------
    async def _serve_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                texts = await asyncio.gather(*(self._fetch(w) for w in self.workers))
                body = merge_expositions([(str(w.index), t) for w, t in zip(self.workers, texts) if t]).encode()
                status = b"200 OK"
            else:
                body, status = b"try GET /metrics\n", b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _fetch(self, w: Worker) -> str:
        """One worker's exposition text ("" when it is restarting or does not answer)."""
        if not w.metrics or w.proc is None or w.proc.returncode is not None:
            return ""
        host, port = split_hostport(w.metrics, "metrics")
        try:
            r, wr = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            try:
                wr.write(b"GET /metrics HTTP/1.1\r\nHost: fastpath\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(r.read(), 5.0)
            finally:
                wr.close()
        except (OSError, asyncio.TimeoutError):
            return ""
        head, _, body = data.partition(b"\r\n\r\n")
        return body.decode(errors="replace") if b" 200 " in head.split(b"\r\n", 1)[0] + b" " else ""


def worker_args(args: argparse.Namespace, listen: str, metrics: bool) -> list[str]:
    """The `fastpath` argv every worker runs (the supervisor appends --worker-id)."""
    out = ["--log-level", getattr(args, "log_level", "INFO"), "proxy", "--workers", "1", "--listen", listen,
           "--drain-timeout", str(args.drain_timeout), "--metrics-listen", "127.0.0.1:0" if metrics else ""]
    if args.config:
        out += ["--config", args.config]
    if getattr(args, "offload", None):
        out += ["--offload", args.offload]
    if args.no_controller:
        out.append("--no-controller")
    elif args.controller:
        out += ["--controller", args.controller]
    return out


def supervise(args: argparse.Namespace) -> int:
    """`fastpath proxy --workers N` with N > 1."""
    try:
        config = load_config(args.config)
        listen = args.listen or config.proxy.listen
        reserved = reserve_port(listen)
    except ConfigError as e:
        print(f"fastpath proxy: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fastpath proxy: cannot listen on {args.listen or config.proxy.listen}: {e.strerror}", file=sys.stderr)
        return 1
    host, port = reserved.getsockname()[:2]
    bound = f"{host}:{port}"
    metrics = config.proxy.metrics_listen if args.metrics_listen is None else args.metrics_listen
    n = worker_count(args.workers)
    controller = "" if args.no_controller else (args.controller or config.control.listen)
    sup = Supervisor(n, bound, worker_args(args, bound, bool(metrics)), metrics, controller)
    try:
        return asyncio.run(sup.run())
    finally:
        reserved.close()
