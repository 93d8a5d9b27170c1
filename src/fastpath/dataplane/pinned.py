"""Pinned mode: a session's connection is routed once and then relayed verbatim.

The client's HTTP/2 connection (preface, SETTINGS, HPACK state and all) goes
byte for byte to one backend, so at any moment the two sockets can be handed
to an offload driver (kernel splice, DPU) and Python drops out of the path.
While Python relays, it follows frame headers (never payloads) to time each
stream's first response frame, for telemetry. Backpressure is per connection
pair: a slow client pauses reading from its own backend only.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from fastpath.h2 import frames as fr
from fastpath.router import rendezvous

from .frame_scanner import FrameScanner

if TYPE_CHECKING:
    from fastpath.router.features import RequestFeatures

    from .downstream import DownstreamConnection
    from .proxy import Proxy

log = logging.getLogger("fastpath.dataplane")
_now = time.monotonic


class _Side(asyncio.Protocol):
    """One socket of a pinned flow; everything it reads goes to the other side."""

    def __init__(self, flow: "PinnedFlow", to_backend: bool) -> None:
        self.flow = flow
        self.to_backend = to_backend
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.flow.relay(data, self.to_backend)

    def eof_received(self) -> bool:
        self.flow.half_closed(self.to_backend)
        return True  # keep our write side open until the peer closes too

    def connection_lost(self, exc: Exception | None) -> None:
        self.flow.side_lost(self.to_backend, exc)

    def pause_writing(self) -> None:  # our socket is full: stop reading the other side
        self.flow.backpressure(not self.to_backend, True)

    def resume_writing(self) -> None:
        self.flow.backpressure(not self.to_backend, False)


class PinnedSessions:
    """This proxy's pinned connections: pinning at the first call, offload, and what they report."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        self.flows_by_key: dict[str, PinnedFlow] = {}
        self.sessions_seen: dict[str, None] = {}  # sessions pinned before (bounded, oldest dropped)
        self._seq = 0
        self._last_log = 0.0

    def __len__(self) -> int:
        return len(self.flows_by_key)

    def start(self, conn: "DownstreamConnection", headers: list, model: str, raw: bytes,
              acked_settings: int = 0) -> bool:
        """Routes a connection once, at its first call, and relays it verbatim from then on.

        False leaves the connection to routed mode (which then answers any
        error, such as bad metadata or no backend, as a gRPC status).
        `acked_settings` SETTINGS frames of the client were ACKed already: the
        backend's ACKs of them are not passed on.
        """
        from fastpath.router.features import features_from_headers

        proxy = self.proxy
        try:
            features = features_from_headers(headers)
        except ValueError:
            return False
        policy = proxy.config.policies.get(features.policy or proxy.router.default_policy)
        if features.allow_substitute or (policy is not None and policy.allow_substitute):
            return False  # a substitute model needs its messages rewritten: routed mode does that
        if not features.model:
            features = proxy.with_model(features, model or proxy.model_for_path(
                next((v for k, v in headers if k == b":path"), b"")))
        t0 = time.perf_counter()
        decision = proxy.router.route(features, proxy.snapshot, proxy.live)
        proxy.metrics.decided(decision, time.perf_counter() - t0)
        if not decision.ranked or conn.transport is None:
            return False
        position = 0
        x = decision.explain
        # A session that comes back returns to its backend (its KV cache) unless the router
        # found that backend over its bound (affinity 0) or filtered it out.
        if x is not None and x.sticky >= 0 and x.sticky_affinity > 0 and x.sticky in decision.ranked:
            position = decision.ranked.index(x.sticky)
        elif x is None or x.sticky < 0:  # a new session: the same backend whichever worker or proxy takes it
            position = decision.ranked.index(rendezvous.session_backend(
                features.session, decision.ranked, proxy.names, proxy.config_regions,
                proxy.config.rtt_ms.get(features.region)))
        backend = decision.ranked[position]
        self._seq += 1
        key = f"{features.session}#{self._seq}"
        flow = PinnedFlow(self, key, features, backend, decision.header(position), conn.transport, raw)
        flow.drop_settings_acks = acked_settings
        conn.handed_off()
        self.flows_by_key[key] = flow
        proxy.live.remember_session(features.session, backend)
        proxy.metrics.pinned_total += 1
        task = asyncio.get_running_loop().create_task(flow.connect())
        proxy.tasks.add(task)
        task.add_done_callback(proxy.tasks.discard)
        return True

    def should_offload(self, flow: "PinnedFlow") -> bool:
        """Repeat sessions go to the kernel right away; a first visit stays in Python (and is learned)."""
        proxy = self.proxy
        session = flow.features.session
        seen = session in self.sessions_seen or session in getattr(proxy.snapshot, "session_backend", {})
        self.sessions_seen[session] = None
        if len(self.sessions_seen) > 100_000:
            del self.sessions_seen[next(iter(self.sessions_seen))]
        # TLS-terminated connections carry ciphertext on the socket: no splice without kTLS.
        return (seen and proxy.offload is not None and proxy.offload.name != "none"
                and not proxy.config.proxy.tls_cert)

    def offload_sessions(self, sessions: set[str]) -> int:
        """Moves the named live sessions off the Python relay (the controller's SetFlowPath)."""
        proxy = self.proxy
        if proxy.offload is None or proxy.offload.name == "none" or proxy.config.proxy.tls_cert:
            return 0
        moved = 0
        for flow in list(self.flows_by_key.values()):
            if flow.path == "python" and flow.features.session in sessions and not flow.closed:
                moved += flow.offload()
        return moved

    def flow_messages(self) -> list[Any]:
        """This proxy's pinned sessions as control-API Flow messages (reported to the controller)."""
        from fastpath.gen import control_pb2

        return [control_pb2.Flow(session=r["session"], client=r["client"], backend=r["backend"], path=r["path"],
                                 bytes_python=r["bytes_python"], bytes_offload=r["bytes_offload"], age_s=r["age_s"],
                                 proxy_id=self.proxy.proxy_id) for r in self.flows()]

    def offloaded(self, flow: "PinnedFlow") -> None:
        self.proxy.metrics.offloaded_total += 1
        log.info("session %s offloaded to %s (backend %s)", flow.features.session, flow.path,
                 self.proxy.names[flow.backend])

    def offload_refused(self, flow: "PinnedFlow", reason: str) -> None:
        self.proxy.metrics.offload_refused += 1
        now = time.monotonic()
        if now - self._last_log > 1.0:
            self._last_log = now
            log.warning("session %s stays on the Python relay: %s", flow.features.session, reason)

    def closed(self, flow: "PinnedFlow") -> None:
        if self.flows_by_key.pop(flow.key, None) is not None:
            try:
                row = flow.stats()
            except Exception:  # the counters of a flow that could not be read are lost, not the close
                log.debug("stats of closed flow %s not readable", flow.key, exc_info=True)
            else:
                self.proxy.metrics.flow_closed(row["path"], row["bytes_python"], row["bytes_offload"])

    def observe(self, flow: "PinnedFlow", ok: bool, ttft_ms: float, duration_s: float = -1.0) -> None:
        proxy = self.proxy
        name = proxy.names[flow.backend]
        proxy.metrics.requests[(name, "ok" if ok else "error")] += 1
        f = flow.features
        proxy.metrics.call_finished(flow.backend, f.model, ok, duration_s, ttft_ms / 1000.0)
        if proxy.watcher is not None:
            proxy.watcher.observe(name, f.region, f.session, ttft_ms, ok, f.model)

    def flows(self) -> list[dict[str, Any]]:
        """Pinned sessions of this proxy: where they go and which path moves their bytes."""
        out = []
        for flow in list(self.flows_by_key.values()):
            row = flow.stats()
            t = flow.client.transport
            peer = t.get_extra_info("peername") if t is not None else None
            row["client"] = f"{peer[0]}:{peer[1]}" if peer else ""
            out.append(row)
        return out

    def close(self) -> None:
        for flow in list(self.flows_by_key.values()):
            if flow.path == "python":
                flow.side_lost(True, None)


class PinnedFlow:
    """A client connection bound to one backend for its whole life."""

    def __init__(self, sessions: PinnedSessions, key: str, features: "RequestFeatures", backend: int,
                 decision_header: bytes, client_transport: asyncio.Transport, initial: bytes) -> None:
        self.sessions = sessions
        proxy = self.proxy = sessions.proxy
        self.drop_settings_acks = 0  # backend SETTINGS ACKs not to pass on (the client got ours)
        self._ack_buf = b""
        self.offload_wanted = False
        self.key = key
        self.features = features
        self.backend = backend
        self.decision_header = decision_header
        self.started = _now()
        self.client = _Side(self, to_backend=True)
        self.client.transport = client_transport
        self.upstream = _Side(self, to_backend=False)
        self.initial = initial
        self.bytes_python = [0, 0]  # client->backend, backend->client
        self.path = "python"
        self.installed: Any = None  # offload handle once the flow left Python
        self.closed = False
        self.stream_start: dict[int, float] = {}
        self.req_scan = FrameScanner(self._client_frame, preface=True)
        self.resp_scan = FrameScanner(self._backend_frame)
        self.streams_done = 0
        self.eof = {True: False, False: False}  # EOF received from: client (True), backend (False)
        client_transport.set_protocol(self.client)
        client_transport.pause_reading()  # until the backend is connected

    # -- start -----------------------------------------------------------------
    async def connect(self) -> None:
        proxy = self.proxy
        host, port = proxy.backend_address(self.backend)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self.upstream, host, port),
                                   proxy.limits.upstream_connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            why = "did not accept the connection in time" if isinstance(e, asyncio.TimeoutError) \
                else f"refused the connection ({e.strerror or type(e).__name__})"
            proxy.backend_unreachable(self.backend, why)
            proxy.live.finished(self.backend, False)
            self._fail_client(f"backend {proxy.names[self.backend]} {why}")
            return
        if self.closed:  # the client left while we connected
            self.upstream.transport.close()  # type: ignore[union-attr]
            return
        data, self.initial = self.initial, b""
        self.relay(data, True)
        self.client.transport.resume_reading()  # type: ignore[union-attr]
        if self.sessions.should_offload(self):
            if self.drop_settings_acks:
                self.offload_wanted = True  # once the backend's duplicate ACKs are filtered out
            else:
                self.offload()

    def _fail_client(self, message: str) -> None:
        """No backend: answer GOAWAY so the client sees why, then close."""
        t = self.client.transport
        if t is not None and not t.is_closing():
            t.write(fr.settings_frame({}) + fr.goaway_frame(0, fr.REFUSED_STREAM, message.encode()[:200]))
            t.close()
        self.closed = True
        self.sessions.closed(self)

    # -- relay -----------------------------------------------------------------
    def relay(self, data: bytes, to_backend: bool) -> None:
        if to_backend:
            self.bytes_python[0] += len(data)
            self.req_scan.feed(data)
            t = self.upstream.transport
        else:
            self.bytes_python[1] += len(data)
            if self.drop_settings_acks:
                data = self._drop_acks(data)
                if not data:
                    return
            self.resp_scan.feed(data)
            t = self.client.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _drop_acks(self, data: bytes) -> bytes:
        """The backend's first bytes without its ACKs of SETTINGS the client already had ACKed."""
        buf = self._ack_buf + data
        out = []
        pos = 0
        while self.drop_settings_acks and len(buf) - pos >= 9:
            length, ftype, flags, sid = fr.unpack_frame_header(buf, pos)
            end = pos + 9 + length
            if end > len(buf):
                break
            if ftype == fr.SETTINGS and flags & fr.ACK:
                self.drop_settings_acks -= 1
            else:
                out.append(buf[pos:end])
            pos = end
        if self.drop_settings_acks:
            self._ack_buf = buf[pos:]
        else:
            self._ack_buf = b""
            out.append(buf[pos:])
            if self.offload_wanted:
                self.offload_wanted = False
                asyncio.get_running_loop().call_soon(self.offload)
        return b"".join(out)

    def _client_frame(self, ftype: int, flags: int, sid: int) -> None:
        if ftype == fr.HEADERS and sid not in self.stream_start:
            self.stream_start[sid] = [_now(), -1.0]  # [start, ttft ms once seen]
            self.proxy.live.started(self.backend)
        elif ftype == fr.RST_STREAM and sid in self.stream_start:
            self._stream_end(sid, ok=True)  # the client cancelled

    def _backend_frame(self, ftype: int, flags: int, sid: int) -> None:
        entry = self.stream_start.get(sid)
        if entry is None:
            return
        if ftype == fr.RST_STREAM:
            self._stream_end(sid, ok=False)
            return
        if ftype != fr.DATA and ftype != fr.HEADERS:
            return
        if entry[1] < 0 and (ftype == fr.DATA or flags & fr.END_STREAM):
            entry[1] = (_now() - entry[0]) * 1000.0
            self.proxy.live.first_byte(self.backend, entry[1])
        if flags & fr.END_STREAM:
            self._stream_end(sid, ok=True)

    def _stream_end(self, sid: int, ok: bool) -> None:
        entry = self.stream_start.pop(sid)
        self.streams_done += 1
        self.proxy.live.finished(self.backend, ok)
        self.sessions.observe(self, ok, max(entry[1], 0.0), _now() - entry[0])

    def _forget_streams(self) -> None:
        """Streams Python can no longer follow (offloaded or closed) stop counting as in flight."""
        for _ in range(len(self.stream_start)):
            self.proxy.live.finished(self.backend, True)
        self.stream_start.clear()

    def backpressure(self, source_is_client: bool, pause: bool) -> None:
        side = self.client if source_is_client else self.upstream
        t = side.transport
        if t is None or t.is_closing():
            return
        t.pause_reading() if pause else t.resume_reading()

    # -- offload ---------------------------------------------------------------
    def offload(self) -> bool:
        """Hands both sockets to the offload driver; False (still on Python) if it would not take them."""
        if self.path != "python" or self.closed:
            return False
        ct, bt = self.client.transport, self.upstream.transport
        if ct is None or bt is None or ct.get_write_buffer_size() or bt.get_write_buffer_size():
            return False  # bytes still queued in Python: try again later, order matters
        ct.pause_reading()
        bt.pause_reading()
        csock = socket.socket(fileno=os.dup(ct.get_extra_info("socket").fileno()))
        bsock = socket.socket(fileno=os.dup(bt.get_extra_info("socket").fileno()))
        try:
            installed = self.proxy.offload.install(self.key, csock, bsock)
        except Exception as e:  # a driver failure must never take the connection down
            log.warning("offload of session %s failed: %s; staying on the Python relay", self.features.session, e)
            installed = None
        if installed is None or not installed.offloaded:
            csock.close()
            bsock.close()
            ct.resume_reading()
            bt.resume_reading()
            if installed is not None:
                self.sessions.offload_refused(self, installed.reason)
            return False
        self.installed = installed
        self.path = installed.path
        # The driver owns dups of both sockets now; drop our descriptors quietly (no FIN, no RST).
        self.client.flow = self.upstream.flow = _Detached  # type: ignore[assignment]
        self._forget_streams()
        ct.abort()
        bt.abort()
        loop = asyncio.get_running_loop()
        installed.add_done_callback(lambda inst: loop.call_soon_threadsafe(self._offload_ended, inst))
        self.sessions.offloaded(self)
        return True

    def _offload_ended(self, installed: Any) -> None:
        self.closed = True
        self.sessions.closed(self)

    # -- end -------------------------------------------------------------------
    def half_closed(self, to_backend: bool) -> None:
        """FIN from one side: pass it on (write EOF) once what we hold for it is written."""
        if not to_backend:
            self._backend_gone()
        self.eof[to_backend] = True
        if self.eof[True] and self.eof[False]:  # both sides are done sending: the flow is over
            self.side_lost(to_backend, None)
            return
        t = self.upstream.transport if to_backend else self.client.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def _backend_gone(self) -> None:
        """The backend left with calls in flight: a GOAWAY naming it, so those calls end UNAVAILABLE saying why."""
        t, scan = self.client.transport, self.resp_scan
        if self.closed or not self.stream_start or t is None or t.is_closing() or scan.skip or scan.head:
            return  # nothing in flight, or mid-frame (more bytes would corrupt the client's framing)
        name = self.proxy.names[self.backend]
        t.write(fr.goaway_frame(0, fr.INTERNAL_ERROR, f"backend {name} closed the connection mid-stream".encode()))

    def side_lost(self, to_backend: bool, exc: Exception | None) -> None:
        if not to_backend:
            self._backend_gone()
        for side in (self.client, self.upstream):
            t = side.transport
            if t is not None and not t.is_closing():
                t.close()
        if not self.closed:
            self.closed = True
            self._forget_streams()
            self.sessions.closed(self)

    def stats(self) -> dict[str, Any]:
        offload_bytes = 0
        if self.installed is not None:
            for f in self.proxy.offload.list():
                if f.session == self.key:
                    offload_bytes = f.stats.offload_bytes
                    break
            else:
                if self.installed.final is not None:
                    offload_bytes = self.installed.final.offload_bytes
        return {"session": self.features.session, "backend": self.proxy.names[self.backend], "path": self.path,
                "bytes_python": sum(self.bytes_python), "bytes_offload": offload_bytes,
                "age_s": _now() - self.started}


class _DetachedFlow:
    """Stands in for a flow whose sockets now belong to an offload driver."""

    def relay(self, data: bytes, to_backend: bool) -> None:  # pragma: no cover - nothing should arrive
        pass

    def half_closed(self, to_backend: bool) -> None:
        pass

    def side_lost(self, to_backend: bool, exc: Exception | None) -> None:
        pass

    def backpressure(self, source_is_client: bool, pause: bool) -> None:
        pass


_Detached = _DetachedFlow()
