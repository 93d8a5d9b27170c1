"""sk_msg shortcuts: a client's and a backend's sockets on one host talk directly.

A second kernel path, beside the splice. The splice still runs both TCP
stacks (client -> proxy socket -> redirect -> proxy socket -> backend); when
client and backend share the host, an sk_msg program on the *end* sockets can
put a sender's bytes straight into the receiver's queue instead. The end
sockets belong to other processes, so a sock_ops program on their cgroup
records them (bpf/sockmsg_redirect.bpf.c); the proxy then installs a shortcut
per flow, keyed by connection tuples computed from its own two sockets.

What it is and is not (measured on Linux 6.18):
- bytes a sender wrote before the shortcut went through the proxy's sockets;
  later bytes arrive directly, so they can overtake bytes still in flight
  through the proxy. Install a shortcut only while the flow is quiet in that
  direction (e.g. before a pinned connection's first request);
- FIN and RST still travel the normal way, through the proxy, which keeps
  relaying (or splicing) its two sockets for them;
- IPv4 only; only processes in the watched cgroup are shortcut;
- no backpressure: a receiver that stops reading lets the sender queue
  without bound in the kernel (450 MB in 3 s measured here), and unlike the
  splice the proxy cannot see how much the receiver has read, so it cannot
  bound it either.

Measured (splice_bench, loaded 2-core VM): 64-byte round trip p50 ~20 µs
against ~36 µs direct and ~53 µs through the splice; at 64 connections
~72k messages/s against ~15k direct. Because of the last two points it is
offered as an experiment (bench, tests), not as a driver the proxy picks.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Self

from fastpath.offload import libbpf
from fastpath.offload.libbpf import BPF_NOEXIST, BpfError, Map
from fastpath.offload.bpf_files import bpf_object
from fastpath.offload.maps import load_layout
from fastpath.offload.steering import Flow, FlowStats, Installed, addr_of

BPF_CGROUP_SOCK_OPS = 3
OBJECT_NAME = "sockmsg_redirect.bpf.o"


def cgroup2_root() -> Path:
    """Where the unified (v2) cgroup hierarchy is mounted."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return Path(parts[1])
    raise OSError(errno.ENOENT, "no cgroup2 mount found: mount -t cgroup2 none /sys/fs/cgroup/unified")


def ip4_key(addr: str) -> int:
    """An IPv4 address as the __u32 the kernel loads from a socket (network byte order)."""
    return struct.unpack("=I", socket.inet_aton(addr))[0]


class MsgShortcuts:
    """Loads the sockops/sk_msg pair for one cgroup and manages per-flow shortcuts."""

    def __init__(self, cgroup: Path, max_flows: int | None = None) -> None:
        layout = load_layout()
        self.layout = layout
        sizes = {layout.str("FP_MAP_MSG_FLOWS"): max_flows} if max_flows else None
        self.obj = libbpf.BpfObject(bpf_object(OBJECT_NAME), sizes)
        self.cgroup = Path(cgroup)
        self._cg_fd = -1
        try:
            T, SC, FS = layout.structs["fp_tuple"], layout.structs["fp_shortcut"], layout.structs["fp_flow_stats"]
            u32, u64 = ctypes.c_uint32, ctypes.c_uint64

            def m(const: str, k: type, v: type) -> Map:
                return Map(self.obj.map_fd(layout.str(const)), layout.str(const), k, v, owns_fd=False)

            self.ends = m("FP_MAP_ENDS", T, u64)
            self.shortcuts = m("FP_MAP_SHORTCUTS", T, SC)
            self.watch = m("FP_MAP_WATCH_PORTS", u32, u32)
            self.flows = m("FP_MAP_MSG_FLOWS", u64, FS)
            self.errors_map = m("FP_MAP_MSG_ERRORS", u32, u64)
            self._T, self._SC, self._FS = T, SC, FS
            self.msg_prog = self.obj.prog_fd(layout.str("FP_PROG_MSG"))
            self.ops_prog = self.obj.prog_fd(layout.str("FP_PROG_ENDS"))
            libbpf.prog_attach(self.msg_prog, self.ends.fd, libbpf.BPF_SK_MSG_VERDICT)
            self._cg_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            libbpf.prog_attach(self.ops_prog, self._cg_fd, BPF_CGROUP_SOCK_OPS)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._flows: dict[str, tuple[int, object, object, Flow]] = {}

    def watch_port(self, port: int) -> None:
        """Track sockets whose local or remote port is `port` (the proxy's and backends' ports)."""
        self.watch.update(ctypes.c_uint32(port), ctypes.c_uint32(1))

    def _tuple(self, local: tuple[str, int], remote: tuple[str, int]):
        return self._T(local_ip4=ip4_key(local[0]), remote_ip4=ip4_key(remote[0]), local_port=local[1], remote_port=remote[1])

    def install(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        """Shortcuts the end sockets behind the proxy's two sockets; the proxy keeps both sockets.

        Returns path "kernel" when both ends are tracked, else "python" with the reason.
        """
        # The client's socket sees the proxy's client-side socket from the other side, same for the backend.
        c_end = self._tuple(client_sock.getpeername()[:2], client_sock.getsockname()[:2])
        s_end = self._tuple(backend_sock.getpeername()[:2], backend_sock.getsockname()[:2])
        for what, key in (("client", c_end), ("backend", s_end)):
            if self.ends.lookup(key) is None:
                return Installed(session, "python", f"{what} end socket is not tracked: it must run on this host, in cgroup {self.cgroup}")
        flow_id = (os.getpid() << 32) | next(self._seq)
        try:
            self.flows.update(ctypes.c_uint64(flow_id), self._FS(), BPF_NOEXIST)
            self.shortcuts.update(c_end, self._SC(local_ip4=s_end.local_ip4, remote_ip4=s_end.remote_ip4, local_port=s_end.local_port,
                                                  remote_port=s_end.remote_port, flow_id=flow_id, dir=0))
            self.shortcuts.update(s_end, self._SC(local_ip4=c_end.local_ip4, remote_ip4=c_end.remote_ip4, local_port=c_end.local_port,
                                                  remote_port=c_end.remote_port, flow_id=flow_id, dir=1))
        except BpfError as e:
            self.shortcuts.delete(c_end)
            self.flows.delete(ctypes.c_uint64(flow_id))
            return Installed(session, "python", f"sk_msg shortcut refused: {e}")
        flow = Flow(session, addr_of(client_sock), addr_of(backend_sock), "kernel", FlowStats(), time.monotonic())
        with self._lock:
            self._flows[session] = (flow_id, c_end, s_end, flow)
        return Installed(session, "kernel")

    def remove(self, session: str) -> bool:
        with self._lock:
            entry = self._flows.pop(session, None)
        if entry is None:
            return False
        flow_id, c_end, s_end, _ = entry
        self.shortcuts.delete(c_end)
        self.shortcuts.delete(s_end)
        self.flows.delete(ctypes.c_uint64(flow_id))
        return True

    def counters(self) -> dict[str, FlowStats]:
        out = {}
        with self._lock:
            entries = list(self._flows.items())
        for session, (flow_id, _, _, _) in entries:
            s = self.flows.lookup(ctypes.c_uint64(flow_id))
            if s is not None:
                out[session] = FlowStats(int(s.bytes[0]), int(s.bytes[1]), int(s.packets[0]), int(s.packets[1]))
        return out

    def list(self) -> list[Flow]:
        stats = self.counters()
        with self._lock:
            return [Flow(f.session, f.client, f.backend, "kernel", stats.get(s, FlowStats()), f.started) for s, (_, _, _, f) in self._flows.items()]

    def errors(self) -> dict[str, int]:
        names = {v: k.removeprefix("FP_MSG_ERR_").lower() for k, v in self.layout.prefixed("FP_MSG_ERR_").items() if k != "FP_MSG_ERR_COUNT"}
        return {n: int(self.errors_map.lookup(ctypes.c_uint32(i)).value) for i, n in sorted(names.items())}

    def close(self) -> None:
        """Detaches from the cgroup and frees the maps (tracked sockets leave them as they close)."""
        if self._cg_fd >= 0:
            try:
                libbpf.prog_detach(self.ops_prog, self._cg_fd, BPF_CGROUP_SOCK_OPS)
            except BpfError:
                pass
            os.close(self._cg_fd)
            self._cg_fd = -1
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cgroup:
    """A cgroup v2 of our own, for processes whose sockets may be shortcut; removed on close."""

    def __init__(self, name: str) -> None:
        self.path = cgroup2_root() / name
        self.path.mkdir(exist_ok=False)

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside this cgroup: a shell joins it, then execs argv (no preexec_fn, safe with threads)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def close(self) -> None:
        """Removes the cgroup once its processes have exited (waits briefly)."""
        deadline = time.monotonic() + 5
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
