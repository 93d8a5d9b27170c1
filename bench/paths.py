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


@dataclass(frozen=True)
class PathSpec:
    name: str
    description: str
    start: Callable[[PathContext], Endpoint]


REGISTRY: dict[str, PathSpec] = {}


def register(spec: PathSpec) -> None:
    """Adds (or replaces) a path; the harness runs paths in registration order."""
    REGISTRY[spec.name] = spec


def resolve(names: list[str] | None) -> list[PathSpec]:
    """The specs for `names` (all registered when None), or a clear error naming the unknown ones."""
    if not names:
        return list(REGISTRY.values())
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


def fastpath_config(backend: str, workdir: Path) -> Path:
    """A fastpath config whose one backend is the bench backend, written to workdir."""
    from fastpath.config import parse_config

    data = {
        "proxy": {"listen": f"127.0.0.1:{procs.free_port()}", "metrics_listen": f"127.0.0.1:{procs.free_port()}",
                  "upstream_connections": 1},
        "control": {"listen": f"127.0.0.1:{procs.free_port()}"},
        "offload": {"driver": "none"},
        "backends": [{"name": "bench", "address": backend, "region": "local", "cost_per_1k_tokens": 0.0,
                      "models": ["bench", "fastpath.bench.v1.Bench"]}],
    }
    return parse_config(data, "bench").write(workdir / "fastpath.toml")


def _fastpath_routed(ctx: PathContext) -> Endpoint:
    if importlib.util.find_spec("fastpath.dataplane.server") is None:
        raise PathUnavailable("fastpath proxy not in this install yet (no module fastpath.dataplane.server)")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    conf = fastpath_config(ctx.backend, ctx.workdir)
    log = ctx.workdir / "fastpath-proxy.log"
    argv = procs.python_module_argv("fastpath.cli", "--log-level", "WARNING", "proxy", "--config", str(conf),
                                    "--no-controller", "--listen", "127.0.0.1:0", "--drain-timeout", "1")
    proc = procs.spawn(argv, log_path=log, stdout_pipe=True, cwd=ctx.workdir)
    try:
        line = procs.read_line_until(proc, FASTPATH_READY, ctx.timeout_s)
        address = line[len(FASTPATH_READY):].split()[0]
        peers.wait_ready(address, proc, ctx.timeout_s, "fastpath proxy", log)
    except Exception as e:
        procs.stop(proc)
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        if "not available in this install" in str(e) + tail or "invalid choice" in str(e) + tail:
            raise PathUnavailable(f"fastpath proxy not available: {(str(e) + tail).strip()[-300:]}") from None
        raise RuntimeError(f"fastpath proxy did not start: {e}\n{tail}") from None
    from fastpath import __version__ as fp_version  # type: ignore[attr-defined]

    return Endpoint("fastpath", address, proc.pid, f"fastpath {fp_version} (routed, python {sys.version.split()[0]})",
                    lambda: procs.stop(proc))


register(PathSpec("direct", "client → backend, no proxy", _direct))
for _name in peers.PEERS:
    register(PathSpec(_name, f"client → {_name} → backend", _peer(_name)))
register(PathSpec("fastpath", "client → fastpath proxy (routed mode, no controller) → backend", _fastpath_routed))
