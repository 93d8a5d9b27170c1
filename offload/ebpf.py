"""The `ebpf` driver: splice a pinned session's two sockets in the kernel.

After splice(), a SOCKHASH + sk_skb stream verdict (bpf/sockmap_splice.bpf.c)
redirects each socket's incoming bytes out through its peer; the proxy makes
no read or write calls for that flow any more. What the kernel does not do,
this driver does:

- handoff: the kernel would re-send a socket buffer that user space has
  partly read, so the driver keeps relaying in Python until both receive
  queues are empty and everything read has been sent, and only then lets the
  sockets in: first into a program-less target map, then into the verdict
  map, so neither starts redirecting before its peer can receive. A read
  after insertion makes the kernel move what queued meanwhile, in order;
- end of flow: FIN is not forwarded by the splice. One epoll thread watches
  every spliced socket for RDHUP/HUP/ERR; on a FIN it waits until everything
  the kernel redirected has left through the peer, then shuts the peer's write
  side; on a reset or error it aborts the flow. Either way both map entries,
  the counters entry and the sockets are released, other flows untouched;
- a full map or a refused update leaves the flow on Python, said once in the log.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastpath.offload import loader, tcp_sockets
from fastpath.offload.libbpf import BPF_NOEXIST, BpfError, Map
from fastpath.offload.loader import SpliceMaps
from fastpath.offload.steering import Flow, FlowStats, Installed, SteeringTable, addr_of

log = logging.getLogger("fastpath.offload.ebpf")

TO_BACKEND, TO_CLIENT = 0, 1
DRAIN_STALL_S = 5.0  # give up on a FIN drain that made no progress for this long
MAX_BACKLOG = 64 << 20  # bytes the kernel may hold for a peer that does not read
BACKLOG_CHECK_S = 0.1  # how often the backlog of every flow is checked
BATCH_FROM = 64  # flows from which counters are read in batches
HANDOFF_TIMEOUT_S = 5.0  # the handoff copy gives up (flow stays on Python) after this long
HANDOFF_MAX_BUFFER = 32 << 20  # ... or when it would have to hold more than this
HANDOFF_ROUND = 1 << 20  # bytes read from one socket before serving the other
EV_WATCH = select.EPOLLRDHUP


@dataclass(eq=False)
class _Side:
    sock: socket.socket
    fd: int
    cookie: int
    eof: bool = False  # its peer sent FIN
    shut: bool = False  # we shut its write side
    watched: bool = True


@dataclass(eq=False)
class _Flow:
    session: str
    flow_id: int
    client: _Side
    backend: _Side
    installed: Installed
    started: float
    client_addr: tuple[str, int]
    backend_addr: tuple[str, int]
    written0: list[int]  # bytes_written of the target socket of each direction at handoff
    python: list[int] = field(default_factory=lambda: [0, 0])
    written_seen: list[int] = field(default_factory=lambda: [0, 0])  # last bytes_written - written0 read, per direction
    draining: dict[int, tuple[int, float]] = field(default_factory=dict)  # dir -> (last progress, deadline)
    ended: bool = False
    handoff_read: int = 0  # bytes the handoff copy took out of the receive queues
    python_refused_kernel: FlowStats | None = None  # what the kernel moved before a refused splice was undone

    def target(self, d: int) -> _Side:
        return self.backend if d == TO_BACKEND else self.client

    def source(self, d: int) -> _Side:
        return self.client if d == TO_BACKEND else self.backend


class EbpfDriver(SteeringTable):
    """Kernel splice of pinned sessions through fastpath's SOCKHASH.

    pin_dir: use the maps `fastpath bpf load` pinned there when present;
    otherwise (or with pin_dir=None) load a private copy for this process,
    sized for `max_flows` flows (default FP_MAX_FLOWS).

    max_backlog bounds kernel memory: the splice has no backpressure (a
    redirected buffer waits in the peer's queue however slow the peer reads,
    and the sender's window stays open), so a flow holding more than this
    many bytes for a peer that does not read is aborted.
    """

    name = "ebpf"
    path = "kernel"

    def __init__(self, pin_dir: Path | str | None = "default", max_flows: int | None = None,
                 max_backlog: int = MAX_BACKLOG) -> None:
        if pin_dir == "default":
            pin_dir = loader.default_pin_dir()
        if pin_dir is not None and loader.is_pinned(Path(pin_dir)):
            self.maps: SpliceMaps = loader.open_pinned(Path(pin_dir))
            self.gc()
        else:
            self.maps = loader.load_private(max_flows)
        L = self.maps.layout
        self._Peer = L.structs["fp_peer"]
        self._Stats = L.structs["fp_flow_stats"]
        self._err_names = {v: k.removeprefix("FP_ERR_").lower() for k, v in L.prefixed("FP_ERR_").items() if k != "FP_ERR_COUNT"}
        self._lock = threading.RLock()
        self._flows: dict[str, _Flow] = {}
        self._by_fd: dict[int, tuple[_Flow, _Side]] = {}
        self._pending: set[str] = set()  # sessions being spliced right now
        self._seq = itertools.count(1)
        self._ep = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._closing = False
        self.max_backlog = max_backlog
        self._next_backlog_check = 0.0
        self._thread = threading.Thread(target=self._watch, name="fastpath-splice-watch", daemon=True)
        self._thread.start()

    # ---- steering-table interface -------------------------------------------------

    def install(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        return self.splice(session, client_sock, backend_sock)

    def splice(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        """Hands the flow to the kernel; returns how it went (path "kernel" or "python").

        The caller must have stopped reading and writing both sockets. On
        "kernel" the driver owns them (closes them when the flow ends); on
        "python" nothing changed hands and the caller keeps relaying.
        """
        tcp_sockets.check_tcp(client_sock, "client")
        tcp_sockets.check_tcp(backend_sock, "backend")
        with self._lock:
            if self._closing:
                raise RuntimeError("driver is closed")
            if session in self._flows or session in self._pending:
                raise ValueError(f"session {session!r} is already spliced; remove() it first")
            self._pending.add(session)
        try:
            return self._splice(session, client_sock, backend_sock)
        finally:
            with self._lock:
                self._pending.discard(session)

    def _splice(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        flow_id = (os.getpid() << 32) | next(self._seq)
        client, backend = (
            _Side(client_sock, client_sock.fileno(), tcp_sockets.cookie(client_sock)),
            _Side(backend_sock, backend_sock.fileno(), tcp_sockets.cookie(backend_sock)),
        )
        flow = _Flow(
            session, flow_id, client, backend, Installed(session, "kernel"), time.monotonic(),
            addr_of(client_sock), addr_of(backend_sock),
            written0=[tcp_sockets.bytes_written(backend_sock), tcp_sockets.bytes_written(client_sock)],
        )
        # 1. Counters and peers first: a full table refuses the flow before
        #    any byte has been touched.
        m = self.maps
        k = ctypes.c_uint64
        try:
            m.flows.update(k(flow_id), self._Stats(), BPF_NOEXIST)
        except BpfError as e:
            return self._refused(flow, "flow counters", e)
        try:
            m.peers.update(k(client.cookie), self._Peer(peer_cookie=backend.cookie, flow_id=flow_id, dir=TO_BACKEND), BPF_NOEXIST)
            m.peers.update(k(backend.cookie), self._Peer(peer_cookie=client.cookie, flow_id=flow_id, dir=TO_CLIENT), BPF_NOEXIST)
        except BpfError as e:
            self._forget(flow)
            return self._refused(flow, "peer entries", e)
        # 2. Empty both receive queues through Python: the kernel would re-send
        #    a socket buffer the relay has already partly read.
        try:
            self._handoff_copy(flow)
        except (OSError, TimeoutError) as e:
            if not flow.handoff_read:  # nothing taken from the sockets: the caller can go on
                self._forget(flow)
                return self._refused(flow, "handoff copy", e)
            # Bytes were taken and cannot be handed back: a stalled or broken
            # peer ends the flow here rather than lose them silently.
            with self._lock:
                self._end(flow, f"handoff failed: {e}", abort=True)
            return flow.installed
        # 3. Both sockets become redirect targets (a SOCKHASH without
        #    programs: nothing changes for their bytes yet) ...
        inserted: list[int] = []
        try:
            for side in (client, backend):
                m.targets.update(k(side.cookie), k(side.fd))
                inserted.append(side.cookie)
        except BpfError as e:
            for c in inserted:
                m.targets.delete(k(c))
            self._forget(flow)
            return self._refused(flow, "redirect targets", e)
        # ... then each starts redirecting: its peer is already a target, so
        # no byte can arrive while the other half is missing.
        try:
            m.socks.update(k(client.cookie), k(client.fd))
        except BpfError as e:
            self._release_sockets(flow)
            self._forget(flow)
            return self._refused(flow, "client socket", e)
        try:
            m.socks.update(k(backend.cookie), k(backend.fd))
        except BpfError as e:
            # The client has been redirecting meanwhile: stop it, let what the
            # kernel holds for the backend go out, and hand the flow back.
            m.socks.delete(k(client.cookie))
            self._wait_sent(flow, TO_BACKEND, timeout=2.0)
            flow.python_refused_kernel = self._stats(flow)
            self._release_sockets(flow)
            self._forget(flow)
            return self._refused(flow, "backend socket", e)
        # 4. Bytes that landed between step 2 and insertion: reading kicks the
        #    kernel to redirect them in order; anything handed back is forwarded.
        try:
            self._collect_held(flow)
        except (OSError, TimeoutError) as e:  # a peer already gone: the flow ends here
            with self._lock:
                self._end(flow, f"handoff failed: {e}", abort=True)
            return flow.installed
        with self._lock:
            self._flows[session] = flow
            for side in (client, backend):
                self._by_fd[side.fd] = (flow, side)
                self._ep.register(side.fd, EV_WATCH)  # a blocked epoll_wait sees it at once
        return flow.installed

    def remove(self, session: str) -> bool:
        with self._lock:
            flow = self._flows.get(session)
            if flow is None:
                return False
            self._end(flow, "removed", abort=True)
            return True

    def list(self) -> list[Flow]:
        with self._lock:
            flows = list(self._flows.values())
        raw = self.maps.flows.lookup_all() if len(flows) >= BATCH_FROM else None
        return [Flow(f.session, f.client_addr, f.backend_addr, "kernel", self._stats(f, raw), f.started) for f in flows]

    def errors(self) -> dict[str, int]:
        """The verdict's failure counters (global: all flows, all processes sharing the maps)."""
        out = {}
        for idx, name in sorted(self._err_names.items()):
            v = self.maps.errors.lookup(ctypes.c_uint32(idx))
            out[name] = int(v.value) if v is not None else 0
        return out

    def close(self) -> None:
        """Aborts every flow, stops the watcher and releases this process's maps."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for flow in list(self._flows.values()):
                self._end(flow, "driver closed", abort=True)
        self._wake()
        self._thread.join(timeout=5)
        self._ep.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.maps.close()

    def gc(self) -> int:
        """Deletes shared-map entries left by processes that died mid-flow; returns how many."""
        mine = os.getpid()
        removed = 0
        for key, peer in self.maps.peers.items():
            pid = int(peer.flow_id) >> 32
            if pid != mine and not _alive(pid):
                removed += self.maps.peers.delete(ctypes.c_uint64(key))
                self.maps.socks.delete(ctypes.c_uint64(key))
                self.maps.targets.delete(ctypes.c_uint64(key))
        for key in self.maps.flows.keys():  # noqa: SIM118 (a BPF map, not a dict)
            pid = int(key) >> 32
            if pid != mine and not _alive(pid):
                removed += self.maps.flows.delete(ctypes.c_uint64(key))
        if removed:
            log.info("removed %d stale splice map entries left by exited processes", removed)
        return removed

    # ---- internals ----------------------------------------------------------------

    def _stats(self, f: _Flow, raw: dict | None = None) -> FlowStats:
        """A flow's counters; `raw` is a batch read of the whole counters map, else one lookup."""
        s = raw.get(f.flow_id) if raw is not None else self.maps.flows.lookup(ctypes.c_uint64(f.flow_id))
        b = list(s.bytes) if s is not None else [0, 0]
        p = list(s.packets) if s is not None else [0, 0]
        return FlowStats(int(b[0]), int(b[1]), int(p[0]), int(p[1]), f.python[0], f.python[1])

    def _handoff_copy(self, flow: _Flow, timeout: float = HANDOFF_TIMEOUT_S) -> None:
        """Relays in Python until both receive queues are empty and every byte read has been sent.

        The kernel would re-send a socket buffer that user space has partly
        read, and only an empty queue proves that none is left (reading "what
        is queued" may stop inside a buffer that grew meanwhile). So every
        read here goes on until EAGAIN, and the sockets may enter the map only
        right after such a read on both, with nothing left to send. Raises
        TimeoutError when that moment does not come (a sender that never lets
        its queue empty, or a peer that does not read).
        """
        pending = {TO_BACKEND: bytearray(), TO_CLIENT: bytearray()}
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(flow.client.fd, select.POLLIN)
        poller.register(flow.backend.fd, select.POLLIN)
        while True:
            clean = True
            for d in (TO_BACKEND, TO_CLIENT):
                data, empty = tcp_sockets.read_round(flow.source(d).sock, HANDOFF_ROUND)
                pending[d] += data
                flow.handoff_read += len(data)
                clean = clean and empty
            for d in (TO_BACKEND, TO_CLIENT):
                buf = pending[d]
                while buf:
                    try:
                        n = flow.target(d).sock.send(buf, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                    except (BlockingIOError, InterruptedError):
                        break
                    del buf[:n]
                    flow.python[d] += n
            if clean and not pending[TO_BACKEND] and not pending[TO_CLIENT]:
                return
            held = len(pending[TO_BACKEND]) + len(pending[TO_CLIENT])
            if held > HANDOFF_MAX_BUFFER:
                raise TimeoutError(f"peers not reading: over {HANDOFF_MAX_BUFFER} bytes held during the handoff")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no quiet moment to hand over within {timeout}s ({held} bytes still to send)")
            for d in (TO_BACKEND, TO_CLIENT):  # wait for room where bytes wait, or for more to read
                poller.modify(flow.target(d).fd, select.POLLIN | (select.POLLOUT if pending[d] else 0))
            if clean:
                poller.poll(min(left, 0.01) * 1000)

    def _collect_held(self, flow: _Flow) -> None:
        """After insertion: a read kicks the kernel to redirect what queued meanwhile; forwards anything handed back."""
        for d in (TO_BACKEND, TO_CLIENT):
            data, _eof = tcp_sockets.read_available(flow.source(d).sock)
            if data:
                tcp_sockets.send_all(flow.target(d).sock, data)
                flow.python[d] += len(data)

    def _release_sockets(self, flow: _Flow) -> None:
        """Takes both sockets out of both SOCKHASHes (their psocks, and any queued redirects, go)."""
        k = ctypes.c_uint64
        for m in (self.maps.socks, self.maps.targets):
            for side in (flow.client, flow.backend):
                try:
                    m.delete(k(side.cookie))
                except BpfError as e:
                    log.warning("session %s: %s", flow.session, e)

    def _wait_sent(self, flow: _Flow, d: int, timeout: float) -> bool:
        """Waits until every byte bound for direction d's target has left it (False on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self._stats(flow)
            want = flow.python[d] + (s.bytes_to_backend if d == TO_BACKEND else s.bytes_to_client)
            try:
                if tcp_sockets.bytes_written(flow.target(d).sock) - flow.written0[d] >= want:
                    return True
            except OSError:
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def _forget(self, flow: _Flow) -> None:
        k = ctypes.c_uint64
        self.maps.peers.delete(k(flow.client.cookie))
        self.maps.peers.delete(k(flow.backend.cookie))
        self.maps.flows.delete(k(flow.flow_id))

    def _refused(self, flow: _Flow, what: str, e: Exception) -> Installed:
        """The flow stays with the caller; `final` says what was moved meanwhile (usually nothing)."""
        reason = f"session {flow.session} stays on the Python relay: kernel splice refused ({what}): {e}"
        log.warning("%s", reason.replace("\n", " | "))
        k = flow.python_refused_kernel or FlowStats()
        moved = FlowStats(k.bytes_to_backend, k.bytes_to_client, k.packets_to_backend, k.packets_to_client,
                          flow.python[0], flow.python[1])
        return Installed(flow.session, "python", reason, final=moved)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _watch(self) -> None:
        """The one thread that notices FIN/RST/errors on every spliced socket."""
        while True:
            with self._lock:
                if self._closing and not self._flows:
                    return
                busy = any(f.draining for f in self._flows.values())
            try:
                events = self._ep.poll(0.002 if busy else BACKLOG_CHECK_S)
            except OSError:
                return
            with self._lock:
                for fd, ev in events:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    entry = self._by_fd.get(fd)
                    if entry is None:
                        continue
                    flow, side = entry
                    try:
                        self._on_event(flow, side, ev)
                    except Exception as e:  # never let one flow stop the watcher
                        log.exception("splice watcher: session %s", flow.session)
                        self._end(flow, f"watcher error: {e}", abort=True)
                for flow in [f for f in self._flows.values() if f.draining]:
                    try:
                        self._check_drains(flow)
                    except Exception as e:
                        log.exception("splice drain: session %s", flow.session)
                        self._end(flow, f"drain error: {e}", abort=True)
                now = time.monotonic()
                if now >= self._next_backlog_check:
                    self._next_backlog_check = now + BACKLOG_CHECK_S
                    try:
                        moved = self._kernel_bytes() if self._flows else {}
                    except BpfError as e:
                        log.warning("splice backlog check skipped: %s", e)
                        moved = {}
                    for flow in list(self._flows.values()):
                        try:
                            self._check_backlog(flow, moved)
                        except Exception as e:
                            log.exception("splice backlog check: session %s", flow.session)
                            self._end(flow, f"backlog check error: {e}", abort=True)

    def _on_event(self, flow: _Flow, side: _Side, ev: int) -> None:
        if flow.ended:
            return
        if ev & select.EPOLLERR:
            err = side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            who = "client" if side is flow.client else "backend"
            self._end(flow, f"{who} socket error: {os.strerror(err) if err else 'error'}", abort=True)
            return
        if ev & select.EPOLLRDHUP and not side.eof:
            side.eof = True
            d = TO_BACKEND if side is flow.client else TO_CLIENT
            flow.draining[d] = (-1, time.monotonic() + DRAIN_STALL_S)
            self._ep.modify(side.fd, 0)  # stop level-triggered RDHUP; HUP/ERR still come
            self._check_drains(flow)
            if flow.ended:
                return
        if ev & select.EPOLLHUP:
            if side.eof and side.shut:
                self._unwatch(side)
                self._maybe_done(flow)
            else:
                who = "client" if side is flow.client else "backend"
                self._end(flow, f"{who} connection reset", abort=True)

    def _check_drains(self, flow: _Flow) -> None:
        """Shuts a target's write side once every byte bound for it has left."""
        if flow.ended:
            return
        stats = self._stats(flow)
        kernel = (stats.bytes_to_backend, stats.bytes_to_client)
        now = time.monotonic()
        for d, (last, deadline) in list(flow.draining.items()):
            target = flow.target(d)
            try:
                sent = tcp_sockets.bytes_written(target.sock) - flow.written0[d]
            except OSError as e:
                self._end(flow, f"drain failed: {e}", abort=True)
                return
            if sent >= flow.python[d] + kernel[d]:
                del flow.draining[d]
                try:
                    target.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                target.shut = True
            elif sent > last:
                flow.draining[d] = (sent, now + DRAIN_STALL_S)
            elif now > deadline:
                self._end(flow, f"peer stopped taking bytes ({flow.python[d] + kernel[d] - sent} unsent)", abort=True)
                return
        self._maybe_done(flow)

    def _kernel_bytes(self) -> dict[int, tuple[int, int]]:
        """flow id -> bytes the kernel moved each way, for this driver's flows.

        One lookup per flow for a few flows; a batch read of the whole map
        (which walks every hash bucket) once there are many.
        """
        out: dict[int, tuple[int, int]] = {}
        if len(self._flows) < BATCH_FROM:
            for f in self._flows.values():
                v = self.maps.flows.lookup(ctypes.c_uint64(f.flow_id))
                if v is not None:
                    out[f.flow_id] = (int(v.bytes[0]), int(v.bytes[1]))
            return out
        return flow_bytes(self.maps.flows)

    def _check_backlog(self, flow: _Flow, moved: dict[int, tuple[int, int]]) -> None:
        """Aborts a flow whose peer lets more than max_backlog bytes pile up in the kernel."""
        if flow.ended:
            return
        kernel = moved.get(flow.flow_id, (0, 0))
        for d in (TO_BACKEND, TO_CLIENT):
            bound = flow.python[d] + kernel[d] - flow.written_seen[d]
            if bound <= self.max_backlog:
                continue  # cannot exceed the limit: no socket call needed
            flow.written_seen[d] = tcp_sockets.bytes_written(flow.target(d).sock) - flow.written0[d]
            backlog = flow.python[d] + kernel[d] - flow.written_seen[d]
            if backlog > self.max_backlog:
                who = "backend" if d == TO_BACKEND else "client"
                reason = (f"the {who} is not reading: {backlog} bytes waited in the kernel for it (limit {self.max_backlog}); "
                          "flow aborted to bound kernel memory")
                log.warning("session %s: %s", flow.session, reason)
                self._end(flow, reason, abort=True)
                return

    def _maybe_done(self, flow: _Flow) -> None:
        if not flow.ended and flow.client.eof and flow.backend.eof and not flow.draining:
            self._end(flow, "closed", abort=False)

    def _unwatch(self, side: _Side) -> None:
        if side.watched:
            side.watched = False
            try:
                self._ep.unregister(side.fd)
            except (OSError, ValueError):
                pass

    def _end(self, flow: _Flow, reason: str, abort: bool) -> None:
        """Releases everything the flow holds; idempotent. Called with the lock held."""
        if flow.ended:
            return
        flow.ended = True
        flow.draining.clear()
        try:
            final = self._stats(flow)
        except BpfError:
            final = FlowStats(python_bytes_to_backend=flow.python[0], python_bytes_to_client=flow.python[1])
        for side in (flow.client, flow.backend):
            self._unwatch(side)
            self._by_fd.pop(side.fd, None)
        self._release_sockets(flow)
        try:
            self._forget(flow)
        except BpfError as e:
            log.warning("session %s: %s", flow.session, e)
        for side in (flow.client, flow.backend):
            if abort:
                try:
                    side.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            side.sock.close()
        self._flows.pop(flow.session, None)
        log.debug("session %s left the kernel path: %s", flow.session, reason)
        flow.installed.finish(final, reason)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def flow_bytes(flows: Map) -> dict[int, tuple[int, int]]:
    """flow id -> bytes moved each way, for every entry of a fp_flows map, in a few syscalls."""
    out: dict[int, tuple[int, int]] = {}
    stats = flows.value_type
    try:
        for keys, values, n in flows.lookup_batches():
            ids = np.ctypeslib.as_array(keys)[:n].tolist()
            v = np.frombuffer(values, dtype=np.uint64).reshape(-1, ctypes.sizeof(stats) // 8)[:n]
            at = stats.bytes.offset // 8  # the layout comes from fastpath_maps.h
            out.update(zip(ids, zip(v[:, at].tolist(), v[:, at + 1].tolist())))
    except BpfError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        out = {k: (int(v.bytes[0]), int(v.bytes[1])) for k, v in flows.items()}
    return out
