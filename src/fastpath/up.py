"""`fastpath up`: the simulated fleet, the controller and the proxy, as one stack.

Each part runs as its own child process reading the same config file (written
once to a temp dir), so what the proxy routes, the controller scrapes and the
fleet simulates is one fleet. `Stack` is the reusable form: `fastpath demo` and
the tests use it as a context manager; `fastpath up` runs it until SIGINT or
SIGTERM. Every child is stopped by PID (SIGTERM, then SIGKILL after a grace
period), and so is anything a child left behind (the fleet's per-site
processes).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from fastpath.config import Config, ConfigError, load_config, split_hostport, with_ports
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.launch import fastpath_argv

TAIL_LINES = 30
PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """The stack could not start or a part of it died; the message says which and why."""


def _die_with_parent() -> None:
    """Runs in each child before exec: if fastpath up itself is killed, its children go too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@dataclass
class Child:
    """One child process of the stack, with the tail of what it printed."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[str]
    stdout: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_description(self) -> str:
        """Why the child is gone, in words, with its last stderr lines."""
        rc = self.proc.poll()
        if rc is None:
            return f"{self.name} (pid {self.pid}) is still running"
        how = f"exited with code {rc}" if rc >= 0 else f"was killed by {_signal_name(rc)}"
        tail = [line for line in self.stderr if line.strip()][-12:] or [line for line in self.stdout if line.strip()][-6:]
        text = f"{self.name} (pid {self.pid}) {how}"
        if tail:
            text += "; its last output:\n" + "\n".join(f"    {line}" for line in tail)
        else:
            text += " without printing anything"
        return text


def _pump(stream, tail: deque[str], echo: Callable[[str], None] | None, prefix: str) -> None:
    """Drains a child's pipe so it never blocks on a full pipe; keeps the last lines."""
    for line in iter(stream.readline, ""):
        line = line.rstrip("\n")
        tail.append(line)
        if echo is not None:
            echo(f"[{prefix}] {line}")
    stream.close()


def children_of(pid: int) -> list[int]:
    """Every live descendant of pid, from /proc (children first listed before grandchildren)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the fields after the last ')' are fixed.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[0] != b"Z":
            parent[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop(0)
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


def _start_time(pid: int) -> int | None:
    """The kernel's start time of pid, so a recycled PID is never mistaken for ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def port_open(address: str, timeout: float = 0.2) -> bool:
    host, port = split_hostport(address, "address")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def server_ready(address: str, timeout: float = 0.5) -> bool:
    """True when a KServe v2 server at address answers ServerReady with ready=true."""
    with grpc.insecure_channel(address) as ch:
        try:
            return pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=timeout).ready
        except grpc.RpcError:
            return False


def tls_server_name(address: str, cert_path: str, timeout: float = 1.0) -> str | None:
    """The name the TLS listener at address presents (first DNS SAN, else CN), trusting cert_path.

    The proxy's own certificate is the trust anchor (a partial chain is accepted),
    so a self-signed certificate and a CA-issued one both verify; None when the
    handshake fails or does not select h2.
    """
    import ssl

    host, port = split_hostport(address, "address")
    ctx = ssl.create_default_context(cafile=cert_path)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
            if tls.selected_alpn_protocol() != "h2":
                return None
            cert = tls.getpeercert() or {}
    except (OSError, ssl.SSLError):
        return None
    names = [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return (names or cn or [host])[0]


def channel(address: str, tls_cert: str = "") -> grpc.Channel:
    """A channel to a fastpath listener: plain h2c, or TLS trusting the listener's own certificate."""
    if not tls_cert:
        return grpc.insecure_channel(address)
    name = tls_server_name(address, tls_cert) or split_hostport(address, "address")[0]
    with open(tls_cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", name)])


def server_live(address: str, timeout: float = 1.0, tls_cert: str = "") -> bool:
    """True when ServerLive through address answers live=true; over TLS when tls_cert is given."""
    try:
        ch = channel(address, tls_cert)
    except OSError:
        return False
    with ch:
        try:
            return pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=timeout).live
        except grpc.RpcError:
            return False


def controller_unhealthy(address: str, names: set[str], timeout: float = 0.5) -> dict[str, str] | None:
    """Backends among `names` the controller does not (yet) report healthy, with why; None if it does not answer."""
    from fastpath.gen import control_pb2, control_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        try:
            fleet = control_pb2_grpc.ControlStub(ch).ListBackends(control_pb2.ListBackendsRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
    known = {b.name: b for b in fleet.backends}
    return {n: (known[n].health_detail or "not healthy yet") if n in known else "unknown to the controller"
            for n in names if n not in known or not known[n].healthy}


def models_ready(address: str, models: tuple[str, ...], timeout: float = 1.0) -> dict[str, bool]:
    """Asks a site which of `models` it reports ready (ModelReady), so `up` shows the fleet as it is."""
    out: dict[str, bool] = {}
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for m in models:
            try:
                out[m] = stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=timeout).ready
            except grpc.RpcError:
                out[m] = False
    return out


UNREACHABLE_FAULTS = ("refuse", "hang")  # sites that cannot answer ServerReady, so are not waited for


def parse_faults(config: Config, specs: list[str]) -> dict[str, str]:
    """Site -> fault mode for `--fault SITE=MODE` specs; ValueError names the bad one and what is accepted."""
    from fastpath.sim.faults import parse_site_fault

    names = [b.name for b in config.backends if b.sim is not None]
    out: dict[str, str] = {}
    for spec in specs:
        site, fault = parse_site_fault(spec)
        if site not in names:
            raise ValueError(f"--fault {spec!r}: no simulated site {site!r}; sites are {names}")
        out[site] = fault.mode
    return out


def listen_addresses(config: Config) -> dict[str, str]:
    """Every address the stack will listen on, by what listens there."""
    out = {"proxy": config.proxy.listen, "proxy metrics": config.proxy.metrics_listen,
           "controller": config.control.listen}
    for b in config.backends:
        if b.sim is None:
            continue
        out[f"site {b.name}"] = b.address
        if b.metrics_url:
            hostport = b.metrics_url.split("://", 1)[-1].split("/", 1)[0]
            out[f"site {b.name} metrics"] = hostport
    return out


def busy_ports(config: Config) -> list[str]:
    """The stack's listen addresses that something else already holds."""
    busy = []
    for what, address in listen_addresses(config).items():
        try:
            host, port = split_hostport(address, what)
        except ConfigError:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(f"{what} {address}")
    return busy


class Stack:
    """The fleet, controller and proxy as child processes; a context manager.

    `with Stack(config) as s:` returns once every site answers ServerReady,
    the control port accepts connections and the proxy answers ServerLive
    through itself; leaving the block stops every process it started.
    Raises StackError naming the part that failed and its last output.
    """

    PARTS = ("sim", "controller", "proxy")

    def __init__(
        self,
        config: Config,
        *,
        controller: bool = True,
        ready_timeout_s: float = 60.0,
        grace_s: float = 5.0,
        log_level: str = "INFO",
        echo: Callable[[str], None] | None = None,
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        faults: tuple[str, ...] | list[str] = (),
        workers: int | None = None,
    ) -> None:
        """`faults`: `SITE=MODE[&k=v]` specs handed to `fastpath sim --fault` (ValueError if malformed)."""
        self.config = config
        self.faults = list(faults)
        self.fault_modes = parse_faults(config, self.faults)
        self.with_controller = controller
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.log_level = log_level
        self.echo = echo
        self.progress = progress or (lambda _msg: None)
        self.cancel = cancel or threading.Event()
        self.children: dict[str, Child] = {}
        self.proxy_address = config.proxy.listen
        self.control_address = config.control.listen
        self.served: dict[str, list[str]] = {}  # model -> site names that report it ready
        self.sites_down: dict[str, str] = {}  # site -> why it was not ready (backends without a sim)
        self.startup_s = 0.0
        self._tmpdir: str | None = None
        self.children_exit: dict[str, int | None] = {}
        # Every process the children started (pid -> start time), kept current by a tracker thread, so
        # stop() can find a site even after its supervisor died and it was re-parented.
        self.descendants: dict[int, int | None] = {}
        self._tracking = threading.Event()
        self._tracker: threading.Thread | None = None
        self.config_path: Path | None = None
        self.workers = workers  # proxy worker processes (None: the proxy's default, one per core)

    # -- public ---------------------------------------------------------
    @property
    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.children.items()}

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        busy = busy_ports(self.config)
        if busy:
            raise StackError(
                f"ports already in use: {', '.join(busy)}. Is another `fastpath up` or demo running? "
                "Stop it, or move this stack with --base-port N (or a --config with other ports)."
            )
        self._tmpdir = tempfile.mkdtemp(prefix="fastpath-up-")
        self.config_path = self.config.write(Path(self._tmpdir) / "config.toml")
        cfg = ["--config", str(self.config_path)]
        if any(b.sim is not None for b in self.config.backends):  # real backends are not simulated
            self._spawn("sim", ["sim", *cfg, *(a for f in self.faults for a in ("--fault", f))])
        if self.with_controller:
            self._spawn("controller", ["controller", *cfg])
        workers = [] if self.workers is None else ["--workers", str(self.workers)]
        self._spawn("proxy", ["proxy", *cfg, *workers] + ([] if self.with_controller else ["--no-controller"]))
        self._tracker = threading.Thread(target=self._track, name="fastpath-stack-tracker", daemon=True)
        self._tracker.start()
        self._wait_ready(t0)
        self._record_descendants()
        self.startup_s = time.monotonic() - t0

    def check(self) -> None:
        """Raises StackError if any child has exited."""
        for child in self.children.values():
            if child.proc.poll() is not None:
                raise StackError(child.exit_description())

    def dead(self) -> list[Child]:
        return [c for c in self.children.values() if c.proc.poll() is not None]

    def all_pids(self) -> list[int]:
        """The children and every process they started (the fleet's sites)."""
        pids: list[int] = []
        for c in self.children.values():
            if _alive(c.pid):
                pids.append(c.pid)
                pids += children_of(c.pid)
        return pids

    def _record_descendants(self) -> None:
        for c in list(self.children.values()):
            if c.proc.poll() is None:
                for pid in children_of(c.pid):
                    if pid not in self.descendants:
                        self.descendants[pid] = _start_time(pid)

    def _track(self) -> None:
        while not self._tracking.wait(0.3):
            self._record_descendants()

    def stop(self) -> None:
        """SIGTERM every child (proxy first), SIGKILL what is left after the grace period."""
        self._tracking.set()
        if self._tracker is not None:
            self._tracker.join(timeout=2.0)
        if not self.children:
            self._cleanup_tmp()
            return
        # The grandchildren as of now and as tracked: once their parent is gone they are re-parented.
        self._record_descendants()
        leftovers = dict(self.descendants)
        for name in reversed(list(self.children)):
            c = self.children[name]
            if c.proc.poll() is None:
                try:
                    c.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.grace_s
        for c in self.children.values():
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.progress(f"{c.name} (pid {c.pid}) ignored SIGTERM for {self.grace_s:.0f} s: sending SIGKILL")
                c.proc.kill()
                c.proc.wait()
        # Sites whose supervisor died without stopping them.
        remaining = [p for p, st in leftovers.items() if _alive(p) and _start_time(p) == st]
        for pid in remaining:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.grace_s
        while remaining and time.monotonic() < deadline:
            remaining = [p for p in remaining if _alive(p) and _start_time(p) == leftovers[p]]
            time.sleep(0.05)
        for pid in remaining:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for c in self.children.values():
            for t in c.readers:
                t.join(timeout=1.0)
        self.children_exit = {c.name: c.proc.returncode for c in self.children.values()}
        self._cleanup_tmp()

    # -- internals ------------------------------------------------------
    def _cleanup_tmp(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _spawn(self, name: str, args: list[str]) -> None:
        argv = fastpath_argv("--log-level", self.log_level, *args)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches `up`, which stops children in order
            preexec_fn=_die_with_parent,
        )
        child = Child(name, argv, proc)
        for stream, tail in ((proc.stdout, child.stdout), (proc.stderr, child.stderr)):
            t = threading.Thread(target=_pump, args=(stream, tail, self.echo, name), daemon=True)
            t.start()
            child.readers.append(t)
        self.children[name] = child

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.ready_timeout_s
        down = {n for n, mode in self.fault_modes.items() if mode in UNREACHABLE_FAULTS}
        sim_sites = [b for b in self.config.backends if b.sim is not None and b.name not in down]
        pending_sites = {b.name for b in sim_sites}
        # Sites faulted to refuse or hang cannot answer ServerReady; their port open is all there is to see.
        pending_ports = {b.name: b.address for b in self.config.backends if b.name in down}
        controller_ok = not self.with_controller
        proxy_ok = False
        announced: set[str] = set()
        last_unhealthy: dict[str, str] | None = None
        while True:
            if self.cancel.is_set():
                raise StackError("interrupted while starting")
            self.check()
            for b in sim_sites:
                if b.name in pending_sites and server_ready(b.address, timeout=0.3):
                    pending_sites.discard(b.name)
            for name, address in list(pending_ports.items()):
                if port_open(address):
                    del pending_ports[name]
            if pending_ports:
                pending_sites |= set(pending_ports)
            else:
                pending_sites -= down
            if not pending_sites and "sites" not in announced:
                announced.add("sites")
                faulted = f", {len(down)} faulted to refuse or hang" if down else ""
                self.progress(f"fleet ready: {len(sim_sites)} sites{faulted} ({time.monotonic() - t0:.1f} s)")
            if not controller_ok and not pending_sites and port_open(self.control_address):
                # The proxy routes on the controller's view: wait until it sees every site healthy.
                unhealthy = controller_unhealthy(self.control_address, {b.name for b in sim_sites})
                controller_ok = unhealthy == {}
                last_unhealthy = unhealthy
                if controller_ok:
                    self.progress(f"controller on {self.control_address} sees every site healthy "
                                  f"({time.monotonic() - t0:.1f} s)")
                    # Let the new fleet snapshot reach the proxy's watch stream.
                    time.sleep(max(0.2, 3 * self.config.control.scrape_interval_ms / 1000))
            if not proxy_ok and not pending_sites and controller_ok:
                printed = self._proxy_announced()
                if printed:
                    self.proxy_address = printed
                # With every site faulted nothing can answer through the proxy: its listening is all there is.
                if (server_live(self.proxy_address, timeout=0.5, tls_cert=self.config.proxy.tls_cert) if sim_sites
                        else printed is not None and port_open(self.proxy_address)):
                    proxy_ok = True
                    self.progress(f"proxy ready on {self.proxy_address} ({time.monotonic() - t0:.1f} s)")
            if not pending_sites and controller_ok and proxy_ok:
                break
            if time.monotonic() > deadline:
                waiting = [f"site {n}" for n in sorted(pending_sites)]
                if not controller_ok:
                    if last_unhealthy:
                        why = "; ".join(f"{n}: {d}" for n, d in sorted(last_unhealthy.items()))
                        waiting.append(f"controller to see every site healthy ({why})")
                    else:
                        waiting.append(f"controller (no answer on {self.control_address})")
                if not proxy_ok:
                    waiting.append(f"proxy (no ServerLive answer through {self.proxy_address})")
                raise StackError(
                    f"not ready after {self.ready_timeout_s:.0f} s, still waiting for: {', '.join(waiting)}. "
                    "Is another fastpath already using these ports? Try --config with other ports."
                )
            time.sleep(0.1)
        self._discover_models()

    def _proxy_announced(self) -> str | None:
        """The address from the proxy's `fastpath proxy listening on HOST:PORT` line, if printed."""
        child = self.children.get("proxy")
        if not child:
            return None
        for line in list(child.stdout) + list(child.stderr):
            marker = "listening on "
            if "fastpath proxy" in line and marker in line:
                return line.split(marker, 1)[1].split()[0].strip().rstrip(",")
        return None

    def proxy_workers(self) -> str:
        """`N workers, pids A, B` from the proxy's listening line ("" for a single-process proxy)."""
        child = self.children.get("proxy")
        for line in list(child.stdout) if child else []:
            if line.startswith("fastpath proxy listening on ") and " workers, pids " in line:
                return line.split("(", 1)[1].split(";", 1)[0]
        return ""

    def _discover_models(self) -> None:
        served: dict[str, list[str]] = {m: [] for m in self.config.models}
        for b in self.config.backends:
            mode = self.fault_modes.get(b.name)
            if mode in UNREACHABLE_FAULTS:
                self.sites_down[b.name] = f"fault injected: {mode}"
                continue
            ready = models_ready(b.address, b.models)
            if not any(ready.values()):
                self.sites_down[b.name] = "no model ready (site not answering ModelReady)"
            for m, ok in ready.items():
                if ok:
                    served[m].append(b.name)
        self.served = served


# -- the `fastpath up` command ---------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config (default: the embedded one)")
    parser.add_argument("--base-port", type=int, metavar="N",
                        help="move every listening port to N, N+1, ... (run beside another fastpath)")
    parser.add_argument("--no-controller", action="store_true", help="run the proxy on its static config alone")
    parser.add_argument("--logs", action="store_true", help="echo the children's output, prefixed by their name")
    add_fault_argument(parser)
    add_offload_argument(parser)
    add_workers_argument(parser)
    parser.add_argument("--ready-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for readiness (60)")


def add_offload_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offload", choices=("none", "ebpf", "dpu"),
                        help="the offload driver for repeat sessions (default: the config's; ebpf needs root)")


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="proxy worker processes on one SO_REUSEPORT port (default: one per core)")


def add_fault_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fault", action="append", default=[], metavar="SITE=MODE",
                        help="inject a fault into a simulated site from the start (repeatable): refuse, hang, "
                             "slow&factor=3, reset&after_tokens=2, die_mid_stream&after_tokens=3")


def describe(stack: Stack) -> str:
    """What a person needs to use the running stack: addresses and who serves which model."""
    cfg = stack.config
    workers = stack.proxy_workers()
    lines = [f"fastpath proxy listening on {stack.proxy_address}  (pid {stack.pids['proxy']}"
             + (f", {workers}" if workers else "") + "; gRPC inference.GRPCInferenceService, KServe v2)"]
    if "controller" in stack.pids:
        lines.append(f"fastpath control API on {stack.control_address}  (pid {stack.pids['controller']}; "
                     f"try: fastpath flows --control {stack.control_address})")
    lines.append(f"fastpath proxy metrics on http://{cfg.proxy.metrics_listen}/metrics")
    if "controller" in stack.pids and cfg.control.metrics_listen:
        lines.append(f"fastpath controller metrics on http://{cfg.control.metrics_listen}/metrics  "
                     f"(live view: fastpath top --control {stack.control_address})")
    simulated = sum(1 for b in cfg.backends if b.sim is not None)
    if "sim" in stack.pids:
        lines.append(f"fastpath fleet of {len(cfg.backends)} sites, {simulated} simulated  "
                     f"(pid {stack.pids['sim']}; config {cfg.source})")
    else:
        lines.append(f"fastpath fleet of {len(cfg.backends)} real backends, none simulated  (config {cfg.source})")
    lines.append("models:")
    width = max((len(m) for m in stack.served), default=0)
    for model, sites in sorted(stack.served.items()):
        where = ", ".join(f"{s} ({cfg.backend(s).region})" for s in sites) or "no site reports it ready"
        lines.append(f"  {model:<{width}}  {where}")
    lines.append("sites:")
    for b in cfg.backends:
        state = f"  DOWN: {stack.sites_down[b.name]}" if b.name in stack.sites_down else ""
        slots = f"{b.sim.slots} slots" if b.sim else "external"
        lines.append(f"  {b.name:<10} {b.address:<16} {b.region:<8} ${b.cost_per_1k_tokens:.2f}/1k tokens  {slots}{state}")
    lines.append(f"ready in {stack.startup_s:.1f} s. Send requests to the proxy with x-fastpath-region / "
                 "-session / -policy metadata; Ctrl-C stops everything.")
    return "\n".join(lines)


def offload_warning(config: Config) -> str | None:
    """One line when the configured offload driver cannot work here: why, the fix, and what happens instead."""
    if config.offload_driver != "ebpf":
        return None
    from fastpath.offload.drivers import ebpf_problem

    why = ebpf_problem()
    return f"offload ebpf cannot work here: {why}. Until then every flow stays on the Python relay." if why else None


def config_from_args(args: argparse.Namespace) -> Config:
    """--config and --base-port, validated; raises ConfigError with what to fix."""
    config = load_config(args.config)
    if args.base_port is not None:
        n = len(listen_addresses(config)) + len(config.backends)
        if not 1024 <= args.base_port <= 65535 - n:
            raise ConfigError(f"--base-port {args.base_port}: expected a port between 1024 and {65535 - n}")
        config = with_ports(config, args.base_port)
    offload = getattr(args, "offload", None)
    if offload:
        import copy

        from fastpath.config import parse_config

        data = copy.deepcopy(config.raw)
        data.setdefault("offload", {})["driver"] = offload
        config = parse_config(data, config.source + f" (offload {offload})")
    return config


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"fastpath up: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    say = lambda msg: print(f"fastpath up: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    warning = offload_warning(config)
    if warning:
        say(warning)
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.logs else None
    try:
        stack = Stack(config, controller=not args.no_controller, ready_timeout_s=args.ready_timeout,
                      log_level=args.log_level, echo=echo, progress=say, cancel=stop, faults=args.fault,
                      workers=args.workers)
    except ValueError as e:
        say(str(e))
        return 2
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        say(f"starting the fleet, {'controller and ' if not args.no_controller else ''}proxy ...")
        try:
            stack.start()
        except StackError as e:
            if stop.is_set():
                say(f"{received[0] if received else 'signal'} received while starting: stopping")
                return 0
            say(f"could not start: {e}")
            return 1
        print(describe(stack), flush=True)
        while not stop.wait(0.25):
            dead = stack.dead()
            if dead:
                for c in dead:
                    say(f"{c.exit_description()}")
                say("stopping the rest of the stack")
                code = 1
                break
        else:
            say(f"{received[0]} received: stopping {', '.join(f'{n} (pid {p})' for n, p in stack.pids.items())}")
    finally:
        stack.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if code == 0:
        say("stopped cleanly")
    return code
