"""The registry of paths the benchmark drives traffic through.

A path is a way from the load client to the bench backend: direct, through
a peer proxy, through fastpath in a given mode. Each registered `PathSpec`
knows how to start its proxy for a backend and hand back an `Endpoint`
(address to load, PID whose CPU is charged, version); a path that cannot run
here raises `PathUnavailable` with the reason, and the harness reports that
row as unavailable instead of failing. New rows (pinned mode, kernel splice,
DPU emulation) are added with `register(PathSpec(...))`.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import peers, procs


class PathUnavailable(RuntimeError):
    """This path cannot run on this machine or in this install; the message says why."""


@dataclass
class PathContext:
    backend: str          # host:port of the bench backend
    workdir: Path         # a fresh directory for this path's configs and logs
    timeout_s: float = 20.0


@dataclass
class Endpoint:
    name: str
    address: str                     # host:port the load client connects to
    pid: int | None                  # the proxy process charged for CPU; None = no proxy
    version: str
    stop: Callable[[], None] = field(repr=False, default=lambda: None)
    notes: str = ""
    metadata: tuple[tuple[str, str], ...] = ()  # sent on every call through this path
    check: Callable[[], str] | None = field(repr=False, default=None)  # after the run: what the path really did


@dataclass(frozen=True)
class PathSpec:
    name: str
    description: str
    start: Callable[[PathContext], Endpoint]
    in_quick: bool = True  # part of `--quick` runs when no --paths are given


REGISTRY: dict[str, PathSpec] = {}


def register(spec: PathSpec) -> None:
    """Adds (or replaces) a path; the harness runs paths in registration order."""
    REGISTRY[spec.name] = spec


def resolve(names: list[str] | None, quick: bool = False) -> list[PathSpec]:
    """The specs for `names` (all registered when None; those marked in_quick for quick runs),
    or a clear error naming the unknown ones."""
    if not names:
        return [p for p in REGISTRY.values() if p.in_quick or not quick]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown path(s) {unknown}; known paths: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in names]


# ---------------------------------------------------------------- built-in paths

def _direct(ctx: PathContext) -> Endpoint:
    return Endpoint("direct", ctx.backend, None, "grpc.aio backend, no proxy")


def _peer(name: str) -> Callable[[PathContext], Endpoint]:
    def start(ctx: PathContext) -> Endpoint:
        try:
            r = peers.start_peer(name, ctx.backend, ctx.workdir, ctx.timeout_s)
        except peers.PeerUnavailable as e:
            raise PathUnavailable(str(e)) from None
        return Endpoint(name, r.address, r.pid, r.version, r.stop)

    return start


FASTPATH_READY = "fastpath proxy listening on"


def fastpath_config(backend: str, workdir: Path, offload: str = "none") -> tuple[Path, str]:
    """A fastpath config whose one backend is the bench backend, written to workdir; returns (file, metrics host:port)."""
    from fastpath.config import parse_config

    metrics = f"127.0.0.1:{procs.free_port()}"
    data = {
        "proxy": {"listen": f"127.0.0.1:{procs.free_port()}", "metrics_listen": metrics, "upstream_connections": 1},
        "control": {"listen": f"127.0.0.1:{procs.free_port()}"},
        "offload": {"driver": offload},
        "backends": [{"name": "bench", "address": backend, "region": "local", "cost_per_1k_tokens": 0.0,
                      "models": ["bench", "fastpath.bench.v1.Bench"]}],
    }
    return parse_config(data, "bench").write(workdir / "fastpath.toml"), metrics


def proxy_argv(conf: Path) -> list[str]:
    """`fastpath proxy` on `conf` as the bench runs it: one process (its CPU is the proxy's cost),
    no controller, any free port (announced on stdout)."""
    return procs.python_module_argv("fastpath.cli", "--log-level", "WARNING", "proxy", "--config", str(conf),
                                    "--no-controller", "--listen", "127.0.0.1:0", "--drain-timeout", "1",
                                    "--workers", "1")


def proxy_metric(metrics: str, name: str) -> float | None:
    """One sample of the proxy's Prometheus text (summed over labels); None if absent or unreachable."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=2) as r:
            text = r.read().decode(errors="replace")
    except OSError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            try:
                total += float(line.rsplit(None, 1)[1])
                seen = True
            except (ValueError, IndexError):
                pass
    return total if seen else None


OFFLOAD_DRIVER = {"splice": "ebpf"}  # modes whose repeat sessions leave Python


def _commit() -> str:
    """', commit abc1234' of the source tree the proxy runs from, when it is a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return f", commit {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _fastpath(mode: str, pure: bool = False) -> Callable[[PathContext], Endpoint]:
    """fastpath proxy paths: routed (per-request routing), pinned (session relayed by Python), splice (kernel).

    `pure` runs the pure-Python build (FASTPATH_PURE=1) next to the compiled one.
    """

    def start(ctx: PathContext) -> Endpoint:
        if importlib.util.find_spec("fastpath.dataplane.server") is None:
            raise PathUnavailable("fastpath proxy not in this install yet (no module fastpath.dataplane.server)")
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        conf, metrics = fastpath_config(ctx.backend, ctx.workdir, OFFLOAD_DRIVER.get(mode, "none"))
        log = ctx.workdir / "fastpath-proxy.log"
        argv = proxy_argv(conf)
        env = {**os.environ, "FASTPATH_PURE": "1"} if pure else None
        proc = procs.spawn(argv, log_path=log, stdout_pipe=True, cwd=ctx.workdir, env=env)
        metadata: tuple[tuple[str, str], ...] = ()
        if mode != "routed":
            metadata = (("x-fastpath-session", f"bench-{mode}-{os.urandom(6).hex()}"),)
        try:
            line = procs.read_line_until(proc, FASTPATH_READY, ctx.timeout_s)
            address = line[len(FASTPATH_READY):].split()[0]
            peers.wait_ready(address, proc, ctx.timeout_s, "fastpath proxy", log, metadata)
            if mode in OFFLOAD_DRIVER:
                # the session was seen once: from now on its connections are offloaded from the start
                peers.check_grpc(address, metadata=metadata)
                if not (proxy_metric(metrics, "fastpath_offloaded_total") or 0) > 0:
                    tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                    raise PathUnavailable(f"offload driver {OFFLOAD_DRIVER[mode]} did not engage "
                                          f"(fastpath_offloaded_total = 0): {tail.strip()}")
        except PathUnavailable:
            procs.stop(proc)
            raise
        except Exception as e:
            procs.stop(proc)
            tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
            if "not available in this install" in str(e) + tail or "invalid choice" in str(e) + tail:
                raise PathUnavailable(f"fastpath proxy not available: {(str(e) + tail).strip()[-300:]}") from None
            raise RuntimeError(f"fastpath proxy did not start: {e}\n{tail}") from None
        from fastpath import __version__ as fp_version  # type: ignore[attr-defined]

        def check() -> str:
            names = ("fastpath_pinned_total", "fastpath_offloaded_total", "fastpath_offload_refused_total")
            return ", ".join(f"{n.removeprefix('fastpath_')}={proxy_metric(metrics, n)}" for n in names)

        name = (f"fastpath-{mode}" if mode != "routed" else "fastpath") + ("-pure" if pure else "")
        return Endpoint(name, address, proc.pid,
                        f"{fp_version} ({mode}{_commit()}, python {sys.version.split()[0]}"
                        f"{', pure Python' if pure else ''})", lambda: procs.stop(proc),
                        metadata=metadata, check=check)

    return start


register(PathSpec("direct", "client → backend, no proxy", _direct))
for _name in peers.PEERS:
    register(PathSpec(_name, f"client → {_name} → backend", _peer(_name)))
register(PathSpec("fastpath", "client → fastpath proxy (routed mode, no controller) → backend", _fastpath("routed")))
register(PathSpec("fastpath-pure", "client → fastpath proxy, pure-Python build (FASTPATH_PURE=1) → backend",
                  _fastpath("routed", pure=True), in_quick=False))
register(PathSpec("fastpath-pinned", "client → fastpath pinned mode (session relayed verbatim by Python) → backend",
                  _fastpath("pinned"), in_quick=False))
register(PathSpec("fastpath-splice", "client → fastpath pinned mode, repeat session spliced in the kernel (eBPF sockmap) → backend",
                  _fastpath("splice"), in_quick=False))
# The DPU card path needs its client inside the emulated card's namespaces: its `fastpath-dpu` rows
# (beside direct, the Python relay and the kernel splice) come from fastpath.bench.dpu_bench, run
# by the splice section.
