"""`fastpath sim`: run a config's simulated GPU fleet, one process per site.

Each site runs in its own child process so one can be killed, or can die on
the die_mid_stream fault, without taking the others; the parent supervises
them (restarting a site that dies after it was ready) and stops every child
on SIGINT/SIGTERM.  `--site NAME` runs that site in this process.

`FleetProcess` is the same for Python code (tests, benchmarks, the demo):
a context manager that starts each site as `python -m fastpath.cli sim
--config FILE --site NAME`, waits until every site answers ServerReady, and
stops every child by PID on exit.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from fastpath.config import Backend, Config, ConfigError, load_config
from fastpath.sim.faults import Fault, FaultError, parse_site_fault

log = logging.getLogger("fastpath.sim")

READY_PREFIX = "site "
PARENT_ENV = "FASTPATH_SIM_PARENT_PID"


# -- the ready line: printed by a site once it serves, read by its parent ------------------------
@dataclass(frozen=True)
class ReadyLine:
    name: str
    address: str
    metrics_url: str
    region: str
    models: tuple[str, ...]
    pid: int

    def format(self) -> str:
        return (f"site {self.name} grpc={self.address} metrics={self.metrics_url or '-'} region={self.region} "
                f"models={','.join(self.models)} pid={self.pid}")

    @classmethod
    def parse(cls, line: str) -> "ReadyLine":
        """Reads a line written by format(); ValueError when it is not one."""
        parts = line.strip().split(" ")
        if len(parts) < 2 or parts[0] != "site":
            raise ValueError(f"not a site ready line: {line!r}")
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        try:
            return cls(parts[1], kv["grpc"], "" if kv["metrics"] == "-" else kv["metrics"], kv["region"],
                       tuple(m for m in kv["models"].split(",") if m), int(kv["pid"]))
        except (KeyError, ValueError):
            raise ValueError(f"not a site ready line: {line!r}") from None


# -- CLI -----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--site", action="append", default=[], metavar="NAME",
                        help="run only this site, in this process (repeatable); default: every [backends.sim] "
                             "site, each in its own child process")
    parser.add_argument("--fault", action="append", default=[], metavar="SITE=MODE",
                        help="inject a fault at start, e.g. use1-a100=hang or use1-a100=die_mid_stream&after_tokens=3 "
                             "(modes: none, refuse, hang, slow, stall, die_mid_stream, reset)")
    parser.add_argument("--restart-after", type=float, default=2.0, metavar="S",
                        help="restart a site that died, after S seconds (0 = leave it down; default 2)")
    parser.add_argument("--ready-timeout", type=float, default=30.0, metavar="S",
                        help="seconds a site may take to start (default 30)")


def _faults_by_site(specs: list[str], config: Config) -> dict[str, Fault]:
    names = [b.name for b in config.backends]
    out: dict[str, Fault] = {}
    for spec in specs:
        site, fault = parse_site_fault(spec)
        if site not in names:
            raise FaultError(f"--fault {spec!r}: no site {site!r} in the config; sites are {names}")
        out[site] = fault
    return out


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        faults = _faults_by_site(args.fault, config)
    except (ConfigError, FaultError) as e:
        print(f"fastpath sim: {e}", file=sys.stderr)
        return 2
    if args.site:
        known = {b.name: b for b in config.backends}
        missing = [s for s in args.site if s not in known]
        if missing:
            print(f"fastpath sim: no site {missing} in {config.source}; sites are {sorted(known)}", file=sys.stderr)
            return 2
        real = [s for s in args.site if known[s].sim is None]
        if real:
            print(f"fastpath sim: {real} have no [backends.sim] table in {config.source}: they describe real "
                  "backends; add a [backends.sim] table to simulate them", file=sys.stderr)
            return 2
        import uvloop

        return uvloop.run(_serve_in_process([known[s] for s in args.site], config, faults))
    sims = [b for b in config.backends if b.sim is not None]
    if not sims:
        print(f"fastpath sim: {config.source} has no [backends.sim] tables: nothing to simulate", file=sys.stderr)
        return 2
    return asyncio.run(_supervise(sims, args, faults))


def _die_with_parent() -> None:
    """A site started by a supervisor ends when the supervisor does, even if it is killed outright."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the parent is already gone
        os._exit(0)


async def _serve_in_process(backends: list[Backend], config: Config, faults: dict[str, Fault]) -> int:
    from fastpath.sim.site import Site, SiteError

    _die_with_parent()
    own_process = len(backends) == 1
    sites = [Site(b, config.rtt_ms, allow_process_exit=own_process) for b in backends]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for s in sites:
            f = faults.get(s.name)
            if f is not None:
                s.set_fault(f.mode, factor=f.factor, after_tokens=f.after_tokens, code=f.code, share=f.share,
                            stall_ms=f.stall_ms)
            await s.start()
            print(ReadyLine(s.name, s.address, s.metrics_url, s.backend.region, s.backend.models, os.getpid()).format(),
                  flush=True)
    except SiteError as e:
        print(f"fastpath sim: {e}", file=sys.stderr)
        for s in sites:
            await s.stop(grace=None)
        return 1
    await stop.wait()
    await asyncio.gather(*(s.stop(grace=0.5) for s in sites))
    return 0


def _site_command(config_path: str | None, name: str, faults: dict[str, Fault], log_level: str) -> list[str]:
    from fastpath.launch import fastpath_argv

    cmd = fastpath_argv("--log-level", log_level, "sim")
    if config_path:
        cmd += ["--config", config_path]
    cmd += ["--site", name]
    if name in faults:
        cmd += ["--fault", f"{name}={faults[name].describe()[len('mode='):]}"]
    return cmd


class _Child:
    """One supervised site process; its stderr is forwarded with the site's name, the tail kept."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=20)
        self.ready: ReadyLine | None = None
        self._pump: asyncio.Task[None] | None = None

    async def spawn(self, cmd: list[str]) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self.ready = None
        self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.PIPE, env=env)
        self._pump = asyncio.get_running_loop().create_task(self._forward_stderr(self.proc))

    async def _forward_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            print(f"[{self.backend.name}] {line}", file=sys.stderr, flush=True)

    async def wait_ready(self, timeout: float) -> ReadyLine:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise RuntimeError(f"site {self.backend.name} not ready after {timeout:.0f} s") from None
        if not raw:
            await self.proc.wait()
            if self._pump:
                await asyncio.wait([self._pump], timeout=1)
            why = "; ".join(list(self.tail)[-3:]) or "no output"
            raise RuntimeError(f"site {self.backend.name} exited with code {self.proc.returncode} before it was ready: {why}")
        self.ready = ReadyLine.parse(raw.decode())
        return self.ready


async def _supervise(sims: list[Backend], args: argparse.Namespace, faults: dict[str, Fault]) -> int:
    log_level = getattr(args, "log_level", "INFO")
    children = {b.name: _Child(b) for b in sims}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def start(c: _Child) -> None:
        await c.spawn(_site_command(args.config, c.backend.name, faults, log_level))
        r = await c.wait_ready(args.ready_timeout)
        print(r.format(), flush=True)

    async def keep(c: _Child) -> None:
        """Watches one site; restarts it after --restart-after seconds when it dies."""
        while True:
            assert c.proc is not None
            await c.proc.wait()
            if stopping.is_set():
                return
            restart = args.restart_after > 0
            print(f"fastpath sim: site {c.backend.name} (pid {c.proc.pid}) exited with code {c.proc.returncode}"
                  + (f"; restarting in {args.restart_after:g} s" if restart else "; leaving it down (--restart-after 0)"),
                  file=sys.stderr, flush=True)
            if not restart:
                return
            try:
                await asyncio.wait_for(stopping.wait(), args.restart_after)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await start(c)
            except RuntimeError as e:
                print(f"fastpath sim: restart failed: {e}", file=sys.stderr, flush=True)

    try:
        results = await asyncio.gather(*(start(c) for c in children.values()), return_exceptions=True)
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        if errors:
            for e in errors:
                print(f"fastpath sim: {e}", file=sys.stderr)
            return 1
        print(f"fastpath sim: {len(children)} sites running (pid {os.getpid()}); Ctrl-C stops them", flush=True)
        keepers = asyncio.gather(*(keep(c) for c in children.values()))
        stop_wait = loop.create_task(stopping.wait())
        await asyncio.wait([keepers, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if not stopping.is_set():
            print("fastpath sim: every site has exited", file=sys.stderr)
            return 1
        return 0
    finally:
        stopping.set()
        await _stop_children(list(children.values()))


async def _stop_children(children: list[_Child], grace: float = 3.0) -> None:
    live = [c.proc for c in children if c.proc is not None and c.proc.returncode is None]
    for p in live:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    if not live:
        return
    _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live], timeout=grace)
    for p in live:
        if p.returncode is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
    if pending:
        await asyncio.wait(pending, timeout=2)


# -- FleetProcess: the fleet as child processes, for Python code ---------------------------------
class FleetError(RuntimeError):
    """A fleet that did not come up; the message names the site and quotes its last stderr lines."""


class _SiteProc:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.stderr_path = stderr_path
        self.ready: ReadyLine | None = None

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


_LIVE_FLEETS: "set[FleetProcess]" = set()


@atexit.register
def _stop_leftover_fleets() -> None:
    for f in list(_LIVE_FLEETS):
        f.stop()


class FleetProcess:
    """A config's simulated fleet as child processes (one per site), for tests, benchmarks and demos.

        with FleetProcess(with_ports(load_config(), base)) as fleet:
            fleet.pids            # site name -> pid
            fleet.kill("use1-a100")   # SIGKILL, reaped; fleet.start_site("use1-a100") brings it back
            fleet.set_fault("use1-l4", "slow", factor=3)

    Every child is stopped on exit (SIGTERM, then SIGKILL after `grace_s`).
    `sites` limits the fleet to some sites; `faults` (site -> "mode=..."
    text) injects faults from the start (such sites are not required to
    answer ServerReady).
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        sites: list[str] | None = None,
        faults: dict[str, str] | None = None,
        ready_timeout_s: float = 30.0,
        grace_s: float = 3.0,
        log_level: str = "WARNING",
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        sims = [b for b in self.config.backends if b.sim is not None]
        if sites is not None:
            unknown = [s for s in sites if s not in {b.name for b in sims}]
            if unknown:
                raise FleetError(f"no simulated site {unknown} in {self.config.source}; have {[b.name for b in sims]}")
            sims = [b for b in sims if b.name in sites]
        if not sims:
            raise FleetError(f"{self.config.source} has no [backends.sim] sites to run")
        self.backends = {b.name: b for b in sims}
        self.faults = {name: parse_site_fault(f"{name}={text}")[1] for name, text in (faults or {}).items()}
        for name in self.faults:
            if name not in self.backends:
                raise FleetError(f"fault for {name!r}: not a site of this fleet; sites are {sorted(self.backends)}")
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.log_level = log_level
        self._dir: Path | None = None
        self._config_path: Path | None = None
        self._procs: dict[str, _SiteProc] = {}
        self._lock = threading.Lock()

    # context manager
    def __enter__(self) -> "FleetProcess":
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        """Site name -> pid of its live process."""
        return {n: p.proc.pid for n, p in self._procs.items() if p.proc.poll() is None}

    @property
    def addresses(self) -> dict[str, str]:
        return {n: b.address for n, b in self.backends.items()}

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {n: b.metrics_url for n, b in self.backends.items()}

    def live_config(self) -> Config:
        """The config with each running site's real ports (differs from `config` where it said :0)."""
        import copy

        from fastpath.config import parse_config

        data = copy.deepcopy(self.config.raw)
        for b in data.get("backends", []):
            live = self.backends.get(b.get("name"))
            if live is not None:
                b["address"] = live.address
                if live.metrics_url:
                    b["metrics_url"] = live.metrics_url
        return parse_config(data, self.config.source + " (live ports)")

    @property
    def config_path(self) -> Path | None:
        """The TOML file the children read (exists while the fleet runs)."""
        return self._config_path

    def start(self) -> None:
        """Starts every site and waits until each is ready."""
        self._dir = Path(tempfile.mkdtemp(prefix="fastpath-sim-"))
        self._config_path = self.config.write(self._dir / "config.toml")
        _LIVE_FLEETS.add(self)
        try:
            for name in self.backends:
                self._spawn(name)
            deadline = time.monotonic() + self.ready_timeout_s
            for name in self.backends:
                self._await_ready(name, deadline)
        except BaseException:
            self.stop()
            raise

    def start_site(self, name: str) -> int:
        """(Re)starts one site (after kill() or a die_mid_stream fault); returns its pid once ready."""
        self._check(name)
        p = self._procs.get(name)
        if p is not None and p.proc.poll() is None:
            raise FleetError(f"site {name} is already running (pid {p.proc.pid}); kill() it first")
        self._spawn(name)
        self._await_ready(name, time.monotonic() + self.ready_timeout_s)
        return self._procs[name].proc.pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kills one site's process (SIGKILL by default: an abrupt failure) and reaps it."""
        self._check(name)
        p = self._procs.get(name)
        if p is None or p.proc.poll() is not None:
            return
        p.proc.send_signal(sig)
        try:
            p.proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()

    def returncode(self, name: str) -> int | None:
        """A site's exit status (None while it runs), e.g. to see a die_mid_stream fault happen."""
        self._check(name)
        p = self._procs.get(name)
        return None if p is None else p.proc.poll()

    def set_fault(self, name: str, mode: str, **params: object) -> str:
        """Injects a fault into a running site through POST /fault; returns the site's answer."""
        self._check(name)
        url = self.backends[name].metrics_url
        if not url:
            raise FleetError(f"site {name} has no metrics_url, so no /fault endpoint")
        body = "&".join([f"mode={mode}", *(f"{k}={v}" for k, v in params.items())]).encode()
        fault_url = url.rsplit("/", 1)[0] + "/fault"
        req = urllib.request.Request(fault_url, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.read().decode().strip()
        except urllib.error.HTTPError as e:
            raise FleetError(f"site {name} refused fault {body.decode()!r}: {e.read().decode().strip()}") from None

    def stop(self) -> None:
        """Stops every child: SIGTERM, then SIGKILL after grace_s; removes the temp config."""
        with self._lock:
            procs = list(self._procs.values())
            for p in procs:
                if p.proc.poll() is None:
                    try:
                        p.proc.terminate()
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + self.grace_s
            for p in procs:
                try:
                    p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait()
                if p.proc.stdout:
                    p.proc.stdout.close()
            self._procs.clear()
            _LIVE_FLEETS.discard(self)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    # internals
    def _check(self, name: str) -> None:
        if name not in self.backends:
            raise FleetError(f"no site {name!r} in this fleet; sites are {sorted(self.backends)}")

    def _spawn(self, name: str) -> None:
        assert self._dir is not None and self._config_path is not None
        err_path = self._dir / f"{name}.stderr"
        cmd = _site_command(str(self._config_path), name, self.faults, self.log_level)
        env = dict(os.environ)
        if threading.current_thread() is threading.main_thread():
            env[PARENT_ENV] = str(os.getpid())
        with open(err_path, "ab") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
        old = self._procs.get(name)
        if old is not None and old.proc.stdout:
            old.proc.stdout.close()
        self._procs[name] = _SiteProc(name, proc, err_path)

    def _await_ready(self, name: str, deadline: float) -> None:
        p = self._procs[name]
        line = _read_line(p.proc, deadline)
        if line is None:
            try:  # stdout closed: the child is on its way out; give it a moment to say how
                p.proc.wait(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            code = p.proc.poll()
            state = f"exited with code {code}" if code is not None else f"not ready after {self.ready_timeout_s:g} s"
            raise FleetError(f"site {name} {state}; its last stderr lines:\n{p.stderr_tail()}")
        p.ready = ReadyLine.parse(line)
        # The ports the site really bound (they differ from the config's when it says :0).
        self.backends[name] = replace(self.backends[name], address=p.ready.address,
                                      metrics_url=p.ready.metrics_url or self.backends[name].metrics_url)
        if name in self.faults and self.faults[name].mode in ("refuse", "hang"):
            return  # such a site is not meant to answer ServerReady
        if not _server_ready(p.ready.address, deadline):
            raise FleetError(f"site {name} printed ready but does not answer ServerReady on {p.ready.address}; "
                             f"its last stderr lines:\n{p.stderr_tail()}")


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """Reads one line from the child's stdout before `deadline`; None on timeout or EOF."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def _server_ready(address: str, deadline: float) -> bool:
    import grpc

    from fastpath.gen import grpc_service_pb2 as pb
    from fastpath.gen import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        while time.monotonic() < deadline:
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=max(0.1, min(1.0, deadline - time.monotonic()))).ready:
                    return True
            except grpc.RpcError:
                time.sleep(0.05)
    return False
