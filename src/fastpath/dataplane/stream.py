"""One proxied gRPC call: a client stream carried to a backend stream, and failover between backends.

Routing happens once per stream, at its HEADERS (or, for KServe calls without
`x-fastpath-model`, at the first DATA frame, where `model_name` is read
without decoding the message). Until the first response byte reaches the
client the call is not committed: the request bytes sent so far are kept, and
a backend that refuses or fails is replaced by the next ranked candidate
without the client seeing anything. After that a failure ends only this call,
with UNAVAILABLE naming the backend.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastpath.h2 import frames as fr

from . import grpc_status as gs
from .conn import Half

if TYPE_CHECKING:
    from .downstream import DownstreamConnection
    from .proxy import Proxy
    from .upstream import UpstreamConnection

_now = time.monotonic
_perf = time.perf_counter

# KServe calls whose first message carries the model in protobuf field 1.
_MODEL_IN_BODY = frozenset({
    b"/inference.GRPCInferenceService/ModelInfer",
    b"/inference.GRPCInferenceService/ModelStreamInfer",
    b"/inference.GRPCInferenceService/ModelReady",
    b"/inference.GRPCInferenceService/ModelMetadata",
})
_WAIT_MODEL_MAX = 4096  # bytes of body to wait for before giving up on finding model_name

NEW, WAIT_MODEL, ROUTED, DONE = 0, 1, 2, 3


class ProxyStream:
    __slots__ = (
        "proxy", "down", "down_id", "up", "up_id", "req", "resp", "features", "decision",
        "position", "backend", "t_start", "t_first", "committed", "held_headers", "replay",
        "replay_bytes", "req_headers", "req_unacked", "resp_unacked", "req_recv_window", "state",
        "path", "body_seen", "ok", "up_ended", "resp_ended",
    )

    def __init__(self, proxy: "Proxy", down: "DownstreamConnection", down_id: int) -> None:
        self.proxy = proxy
        self.down = down
        self.down_id = down_id
        self.up: UpstreamConnection | None = None
        self.up_id = 0
        self.req = Half(self._credit_client)
        self.resp = Half(self._credit_backend)
        self.resp.attach(down, down_id)
        self.features = None
        self.decision = None
        self.position = 0
        self.backend = -1
        self.t_start = _now()
        self.t_first = 0.0
        self.committed = False
        self.held_headers: list | None = None
        self.replay: list[bytes] | None = []
        self.replay_bytes = 0
        self.req_headers: list = []
        self.req_unacked = 0
        self.resp_unacked = 0
        self.req_recv_window = proxy.limits.stream_window
        self.state = NEW
        self.path = b""
        self.body_seen = False
        self.ok = True
        self.up_ended = False    # the backend ended its side of the stream
        self.resp_ended = False  # the response is complete (trailers or END_STREAM queued)

    # -- flow-control credit back to the side that sent the bytes ------------
    def _credit_client(self, n: int) -> None:
        self.req_unacked += n
        if self.req_unacked >= self.proxy.limits.stream_window >> 2 and self.state != DONE:
            self.down.send(fr.window_update_frame(self.down_id, self.req_unacked))
            self.req_recv_window += self.req_unacked
            self.req_unacked = 0

    def _credit_backend(self, n: int) -> None:
        self.resp_unacked += n
        up = self.up
        if self.resp_unacked >= self.proxy.limits.stream_window >> 2 and up is not None and self.state != DONE:
            up.send(fr.window_update_frame(self.up_id, self.resp_unacked))
            self.resp_unacked = 0

    # -- client side ---------------------------------------------------------
    def on_request_headers(self, headers: list, end: bool) -> None:
        """The call's HEADERS: read routing inputs, then route now or at the first DATA frame."""
        proxy = self.proxy
        self.req_headers = headers
        path = b""
        for name, value in headers:
            if name == b":path":
                path = value
                break
        self.path = path
        try:
            self.features = proxy.features_for(headers)
        except ValueError as e:
            self.fail_before_routing(gs.INVALID_ARGUMENT, str(e), end)
            return
        if end:
            self.req.push(b"", True)
        if (not self.features.model or proxy.router.prefix_on) and not end and path in _MODEL_IN_BODY:
            self.state = WAIT_MODEL
            return
        if not self.features.model:
            self.features = proxy.with_model(self.features, proxy.model_for_path(path))
        self.route()

    def on_request_data(self, data: bytes, end: bool, padding: int) -> None:
        n = len(data) + padding
        self.req_recv_window -= n
        if self.req_recv_window < 0:
            self.reset_both(fr.FLOW_CONTROL_ERROR, "client exceeded the stream window")
            return
        if padding:
            self._credit_client(padding)
        if self.state == DONE:
            return
        self.body_seen = True
        replay = self.replay
        if replay is not None and data:
            self.replay_bytes += len(data)
            if self.replay_bytes > self.proxy.limits.replay_limit:
                self.replay = None
            else:
                replay.append(data)
        self.req.push(data, end)
        if self.state == WAIT_MODEL:
            model = self.proxy.model_from_body(self.req.pending)
            if model is None and not end and self.req.pending_bytes < _WAIT_MODEL_MAX:
                return
            self.features = self.proxy.with_model(self.features, self.features.model or model or "", self.req.pending)
            self.route()

    def on_request_trailers(self, headers: list, end: bool) -> None:
        if not end:
            self.reset_both(fr.PROTOCOL_ERROR, "second HEADERS without END_STREAM")
            return
        self.req.trailers = headers
        self.req.push(b"", True)

    def on_client_reset(self, code: int) -> None:
        """The client cancelled: the backend hears of it at once (RST_STREAM CANCEL)."""
        if self.state == DONE:
            return
        self.proxy.metrics.cancelled += 1
        self._reset_upstream(fr.CANCEL)
        self.finish(ok=True)

    # -- routing -------------------------------------------------------------
    def route(self) -> None:
        proxy = self.proxy
        t0 = _perf()
        decision = proxy.router.route(self.features, proxy.snapshot, proxy.live)
        proxy.metrics.decided(decision, _perf() - t0)
        self.decision = decision
        if not decision.ranked:
            code = gs.INVALID_ARGUMENT if getattr(decision, "invalid", False) else gs.UNAVAILABLE
            self.fail_before_routing(code, f"no backend for this call: {decision.reason}", self.req.end)
            return
        self.state = ROUTED
        self.position = 0
        proxy.router.learn(decision)  # prefix affinity: the prompt's blocks go where this call goes
        self._attempt()

    def _attempt(self) -> None:
        proxy = self.proxy
        ranked = self.decision.ranked
        while self.position < len(ranked):
            i = ranked[self.position]
            conn = proxy.pool.acquire(i)
            if conn is not None:
                self.backend = i
                proxy.live.started(i)
                conn.open_stream(self)
                return
            self.position += 1
        self.respond_error(gs.UNAVAILABLE, f"no backend could take this call ({len(ranked)} tried)")

    def start_upstream(self, conn: "UpstreamConnection", sid: int) -> None:
        """Called by the upstream connection once the stream has an id there."""
        self.up = conn
        self.up_id = sid
        self.up_ended = False
        req = self.req
        no_body = req.end and not req.pending and req.trailers is None and not self.body_seen
        conn.send_headers(sid, self.req_headers, end_stream=no_body)
        req.attach(conn, sid)
        if no_body:
            req.done = True
        else:
            req.pump()

    def failover(self, why: str) -> None:
        """The backend failed before any response byte: replay the request on the next candidate."""
        proxy = self.proxy
        name = proxy.names[self.backend]
        proxy.live.finished(self.backend, False)
        proxy.observe(self, ok=False, ttft_ms=0.0)
        proxy.metrics.failovers += 1
        self._reset_upstream(fr.CANCEL)
        self._detach_upstream()
        self.backend = -1
        replay = self.replay
        if replay is None or self.position + 1 >= len(self.decision.ranked):
            self.respond_error(gs.UNAVAILABLE, f"backend {name} {why}; no other backend could take the call")
            return
        old = self.req
        new = Half(self._credit_client)
        for chunk in replay:
            new.pending.append(chunk)
            new.pending_bytes += len(chunk)
        new.skip_credit = self.replay_bytes  # already credited to the client once
        new.end = old.end
        new.trailers = old.trailers
        self.req = new
        old.on_sent = _noop
        self.position += 1
        proxy.log_failover(name, why)
        self._attempt()

    # -- backend side --------------------------------------------------------
    def on_response_headers(self, headers: list, end: bool) -> None:
        if self.state == DONE:
            return
        if self.held_headers is None and not self.committed:
            if not end:
                self.held_headers = headers  # sent with the first DATA, so failover stays invisible
                return
            # Trailers-only response: an UNAVAILABLE before any message is a refusal we can retry.
            self.up_ended = True
            if _grpc_status(headers) == b"14" and self.replay is not None:
                self.failover("refused the call (UNAVAILABLE)")
                return
            self.committed = True
            self.replay = None
            self._close_response(headers)
            return
        if not end:
            self.reset_both(fr.PROTOCOL_ERROR, "backend sent a second HEADERS without END_STREAM")
            return
        self.up_ended = True
        if not self.committed:
            self._commit()
        self._close_response(headers)

    def on_response_data(self, data: bytes, end: bool, padding: int) -> None:
        if self.state == DONE:
            return
        if not self.committed:
            self._commit()
        if padding:
            self._credit_backend(padding)
        self.resp.push(data, end)
        if end:
            self.up_ended = True
            self._response_complete()

    def _commit(self) -> None:
        self.committed = True
        self.replay = None
        now = _now()
        self.t_first = now
        proxy = self.proxy
        proxy.live.first_byte(self.backend, (now - self.t_start) * 1000.0)
        held = self.held_headers
        if held is not None:
            self.held_headers = None
            self.down.send_headers(self.down_id, held, end_stream=False)
        else:
            self.down.send_headers(self.down_id, _DEFAULT_RESPONSE_HEADERS, end_stream=False)

    def _close_response(self, trailers: list) -> None:
        self.ok = _grpc_status(trailers) in (b"0", None)
        resp = self.resp
        resp.trailers = trailers + self.proxy.backend_trailer(self)
        resp.trailers_extra = self.proxy.decision_trailer(self)
        resp.push(b"", True)
        self._response_complete()

    def _response_complete(self) -> None:
        self.resp_ended = True
        req = self.req
        if not req.done:
            # The backend answered before the request ended: stop sending it.
            self._reset_upstream(fr.CANCEL)
            req.done = True
            req.pending.clear()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """Finishes once the response is fully written to the client."""
        if self.state != DONE and self.resp_ended and self.resp.done:
            if not self.req.end:  # client still sending: tell it to stop (RFC 9113 §8.1)
                self.down.send(fr.rst_stream_frame(self.down_id, fr.NO_ERROR))
            self.finish(ok=self.ok)

    def on_upstream_reset(self, code: int) -> None:
        if self.state == DONE:
            return
        self.up_id_closed()
        why = f"reset the stream ({fr.ERROR_NAMES.get(code, code)})"
        if not self.committed and self.replay is not None:
            self.failover(why)
        else:
            self.respond_error(gs.UNAVAILABLE, f"backend {self.proxy.names[self.backend]} {why}")

    def on_upstream_lost(self, why: str) -> None:
        """The backend connection closed or refused (GOAWAY) this stream."""
        if self.state == DONE:
            return
        self.up_id_closed()
        if not self.committed and self.replay is not None:
            self.failover(why)
        else:
            self.respond_error(gs.UNAVAILABLE, f"backend {self.proxy.names[self.backend]} {why}"
                               + (" mid-stream" if self.committed else ""))

    def up_id_closed(self) -> None:
        self._detach_upstream()

    # -- ending --------------------------------------------------------------
    def fail_before_routing(self, code: int, message: str, req_ended: bool) -> None:
        self.state = ROUTED
        self.req.end = self.req.end or req_ended
        self.respond_error(code, message)

    def respond_error(self, code: int, message: str) -> None:
        """Ends the call with a gRPC status the proxy chose (after any response data already queued)."""
        if self.state == DONE:
            return
        proxy = self.proxy
        extra = proxy.decision_trailers(self) if self.backend >= 0 else []
        self.ok = False
        proxy.metrics.errors += 1
        if self.committed:
            headers = gs.status_trailers(code, message, extra)
        else:
            self.committed = True
            self.replay = None
            headers = gs.trailers_only(code, message, extra)
        self._reset_upstream(fr.CANCEL)
        self._detach_upstream()
        resp = self.resp
        resp.trailers = headers
        resp.push(b"", True)
        self.req.done = True
        self.req.pending.clear()
        self.resp_ended = True
        self._maybe_finish()

    def reset_both(self, code: int, message: str) -> None:
        if self.state == DONE:
            return
        self.proxy.note_reset(self, message)
        self.down.send(fr.rst_stream_frame(self.down_id, code))
        self._reset_upstream(fr.CANCEL)
        self.finish(ok=True)

    def _reset_upstream(self, code: int) -> None:
        up = self.up
        if up is not None and not up.closed and not (self.req.done and self.up_ended):
            up.send(fr.rst_stream_frame(self.up_id, code))
            self.up_ended = True

    def _detach_upstream(self) -> None:
        up = self.up
        if up is not None:
            up.stream_closed(self.up_id)
            self.up = None
        self.req.conn = None
        self.req.started = False

    def resp_window(self, inc: int) -> None:
        resp = self.resp
        resp.window += inc
        if resp.window > fr.MAX_WINDOW:
            self.reset_both(fr.FLOW_CONTROL_ERROR, "client's stream window overflowed")
            return
        resp.pump()
        self._maybe_finish()

    def req_window(self, inc: int) -> None:
        req = self.req
        req.window += inc
        req.pump()

    def finish(self, ok: bool) -> None:
        """Forgets the stream on both connections and breaks the reference cycles (fewer GC runs)."""
        if self.state == DONE:
            return
        self.state = DONE
        proxy = self.proxy
        self.down.stream_closed(self.down_id)
        self._detach_upstream()
        if self.backend >= 0:
            proxy.live.finished(self.backend, ok and self.ok)
            proxy.observe(self, ok=ok and self.ok,
                          ttft_ms=(self.t_first - self.t_start) * 1000.0 if self.t_first else 0.0)
        self.req.on_sent = _noop
        self.resp.on_sent = _noop
        self.req.pending.clear()
        self.replay = None


def _noop(n: int) -> None:
    pass


def _grpc_status(headers: list) -> bytes | None:
    for name, value in headers:
        if name == b"grpc-status":
            return value
    return None


_DEFAULT_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
