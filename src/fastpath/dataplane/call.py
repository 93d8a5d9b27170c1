"""One proxied gRPC call as an explicit state machine: a client stream carried to a backend stream.

States (`Call.state`) and what moves them:

    RECEIVING --routing inputs read--------------------------> ROUTING
    RECEIVING --KServe call, model in the body---------------> HOLDING
    HOLDING   --body prefix available (features hook)--------> ROUTING
    ROUTING   --no candidate has headroom (admission control)-> QUEUED
    QUEUED    --capacity freed, its turn (CallGate)-----------> ROUTING
    ROUTING   --a candidate's upstream acquired--------------> FORWARDING
    FORWARDING --first response byte to the client------------> COMMITTED
    FORWARDING --backend refused/failed, replay kept----------> ROUTING (next candidate, same decision)
    FORWARDING --first byte late (hedge timer), replay kept---> ROUTING (next candidate, once per call)
    any        --response complete / error answered / reset---> DONE

Until COMMITTED the call is invisible to the client: the request bytes sent
so far are kept (`replay`), and a backend that refuses or fails is replaced
by the next ranked candidate. After that a failure ends only this call, with
UNAVAILABLE naming the backend.

The call depends only on the narrow interfaces declared here (`CallServices`:
route, acquire an upstream, report outcomes), never on `Proxy`. Extension
points, each one method:
- `_route()` is the single place a call goes from HOLDING/RECEIVING to a
  decision: an admission queue holds the call here (stay in HOLDING and call
  `_route()` later);
- `CallServices.features_from_body(call, body)` is the "request body prefix
  available -> features" hook (model_name today; a prompt reader goes there);
- `_attempt()` replays `replay` on the next candidate; `hedge()` (called by
  fastpath.dataplane.hedging when the first byte is late) resets the attempt
  and replays the same bytes on the next candidate, at most once per call;
- `request_headers` and `replay` are the request bytes forwarded: a rewrite
  (model name, headers) changes them before `_attempt()`.
Recording points for metrics are the `CallServices.call_*` methods.
"""
from __future__ import annotations

import time
from typing import Any, Final, TYPE_CHECKING

from fastpath.h2 import frames as fr
from fastpath.h2.connection import Half

from . import grpc_status as gs
from . import model_switch
from .outcome import backend_at_fault

if TYPE_CHECKING:
    from fastpath.h2.connection import H2Stream
    from fastpath.router.features import RequestFeatures
    from fastpath.router.router import Decision

    from .downstream import DownstreamConnection
    from .upstream import UpstreamConnection

_now: Final = time.monotonic

# KServe calls whose first message carries the model in protobuf field 1.
MODEL_IN_BODY: Final = frozenset({
    b"/inference.GRPCInferenceService/ModelInfer",
    b"/inference.GRPCInferenceService/ModelStreamInfer",
    b"/inference.GRPCInferenceService/ModelReady",
    b"/inference.GRPCInferenceService/ModelMetadata",
})
_WAIT_BODY_MAX: Final = 4096  # bytes of body to wait for before routing without what it would say

RECEIVING: Final = 0
HOLDING: Final = 1
ROUTING: Final = 2
FORWARDING: Final = 3
COMMITTED: Final = 4
DONE: Final = 5
QUEUED: Final = 6
STATE_NAMES: Final = ("receiving", "holding", "routing", "forwarding", "committed", "done", "queued")


class CallServices:
    """Everything a call needs from the rest of the proxy: the interface a call depends on.

    A base class to subclass (fastpath.dataplane.services.ProxyCallServices), not a
    Protocol: the compiled build then calls these methods through a vtable instead
    of looking each one up by name on every call.
    """

    replay_limit: int
    gate: Any  # fastpath.dataplane.call_gate.CallGate when admission control or budgets are configured, else None

    @property
    def prefix_on(self) -> bool:  # prompt-prefix affinity: KServe calls wait for their body even when the model is known
        raise NotImplementedError

    # routing
    def features(self, headers: list, recurs: bool = True) -> "RequestFeatures":  # ValueError: bad metadata
        raise NotImplementedError

    def features_from_path(self, f: "RequestFeatures", path: bytes) -> "RequestFeatures":
        raise NotImplementedError

    def features_from_body(self, f: "RequestFeatures", body: list[bytes]) -> "RequestFeatures | None":
        raise NotImplementedError

    def route(self, f: "RequestFeatures") -> "Decision":
        raise NotImplementedError

    # upstreams
    def acquire(self, backend: int) -> "UpstreamConnection | None":
        raise NotImplementedError

    def backend_name(self, backend: int) -> str:
        raise NotImplementedError

    def response_trailers(self, call: "Call") -> tuple[list, list | None]:
        raise NotImplementedError

    # outcomes (metrics hook points)
    def call_started(self, call: "Call") -> None:
        raise NotImplementedError

    def call_routed(self, call: "Call") -> None:
        raise NotImplementedError

    def call_attempt(self, call: "Call", backend: int) -> None:
        raise NotImplementedError

    def call_first_byte(self, call: "Call", ttft_ms: float) -> None:
        raise NotImplementedError

    def call_failover(self, call: "Call", backend: int, why: str) -> None:
        raise NotImplementedError

    def call_hedged(self, call: "Call", backend: int, waited_ms: float) -> None:
        raise NotImplementedError

    def call_finished(self, call: "Call", status: bytes | None, backend_fault: bool, ttft_ms: float) -> None:
        raise NotImplementedError

    def call_reset(self, call: "Call", message: str) -> None:
        raise NotImplementedError


class Call:
    __slots__ = (
        "svc", "down", "down_id", "_credit_client", "up", "up_id", "req", "resp", "features", "decision",
        "position", "backend", "t_start", "t_first", "held_headers", "replay", "replay_bytes",
        "request_headers", "state", "path", "body_seen", "status", "fault", "resp_ended", "switch", "hedged_from",
        "hedged_after_ms", "gate_info", "resp_bytes",
    )

    def __init__(self, svc: CallServices, down: "DownstreamConnection", down_st: "H2Stream") -> None:
        self.svc = svc
        self.down = down
        self.down_id = down_st.sid
        self.up: UpstreamConnection | None = None
        self.up_id = 0
        self._credit_client = down_st.credit
        self.req = Half(self._credit_client)
        self.resp = Half(_NOOP)
        self.resp.attach(down.h2, self.down_id)
        self.resp.on_done = self._maybe_finish
        self.features: RequestFeatures | None = None
        self.decision: Decision | None = None
        self.position = 0
        self.backend = -1
        self.t_start = _now()
        self.t_first = 0.0
        self.held_headers: list | None = None
        self.replay: list[bytes] | None = []
        self.replay_bytes = 0
        self.request_headers: list = []
        self.state = RECEIVING
        self.path = b""
        self.body_seen = False
        self.status: bytes | None = None   # grpc-status of the response
        self.fault = False                 # the backend is at fault for how this call ended
        self.resp_ended = False            # the response is complete (trailers or END_STREAM queued)
        self.switch: Any = None            # model_switch.ModelSwitch of a call that allows a substitute model
        self.hedged_from = -1              # backend abandoned for a late first byte (-1 = not hedged)
        self.hedged_after_ms = 0.0         # when, from the call's start
        self.gate_info: Any = None         # the CallGate's record of this call (priority, tenant, ...)
        self.resp_bytes = 0                # response DATA bytes from the backend (budgets count output tokens)

    @property
    def committed(self) -> bool:
        return self.state == COMMITTED or (self.state == DONE and self.t_first > 0.0)

    # -- client side ---------------------------------------------------------
    def on_request_headers(self, headers: list, end: bool, recurs: bool = True) -> None:
        """The call's HEADERS (validated by the connection): read routing inputs, route now or hold.
        `recurs`: the decoder hands out this list again for the same block (worth remembering)."""
        svc = self.svc
        svc.call_started(self)
        self.request_headers = headers
        path = b""
        for name, value in headers:
            if name == b":path":
                path = value
                break
        self.path = path
        try:
            self.features = svc.features(headers, recurs)
        except ValueError as e:
            self._fail_before_routing(gs.INVALID_ARGUMENT, str(e), end)
            return
        if end:
            self.req.push(b"", True)
        if not end and path in MODEL_IN_BODY and (not self.features.model or svc.prefix_on):
            self.state = HOLDING  # the model and the prompt are in the first DATA frame(s)
            return
        if not self.features.model:
            self.features = svc.features_from_path(self.features, path)
        self._route()

    def on_request_data(self, data: bytes, end: bool) -> None:
        if self.state == DONE:
            return
        self.body_seen = True
        replay = self.replay
        if replay is not None and data:
            self.replay_bytes += len(data)
            if self.replay_bytes > self.svc.replay_limit:
                self.replay = None
            else:
                replay.append(data)
        sw = self.switch
        if sw is None:
            self.req.push(data, end)
        else:  # a call that allows a substitute model: its attempt's bytes may be rewritten
            sw.push(data, end)
        if self.state == HOLDING:
            held = self.features
            assert held is not None  # set with the request headers
            f = self.svc.features_from_body(held, list(self.req.pending))
            if f is None and not end and self.req.pending_bytes < _WAIT_BODY_MAX:
                return
            if f is None:
                f = held if held.model else self.svc.features_from_path(held, b"")
            self.features = f
            self._route()

    def on_request_trailers(self, headers: list) -> None:
        self.req.trailers = headers
        self.req.push(b"", True)

    def on_client_reset(self, code: int) -> None:
        """The client cancelled (or broke a stream rule): the backend hears of it at once."""
        if self.state == DONE:
            return
        self.status = b"1"  # CANCELLED by the client: never the backend's fault
        self._finish()

    # -- routing -------------------------------------------------------------
    def _route(self) -> None:
        f = self.features
        assert f is not None  # set with the request headers
        decision = self.svc.route(f)
        self.decision = decision
        if f.allow_substitute and decision.substitutes:
            self.switch = model_switch.for_call(self)
        if not decision.ranked:
            code = gs.INVALID_ARGUMENT if decision.invalid else gs.UNAVAILABLE
            self._fail_before_routing(code, f"no backend for this call: {decision.reason}", self.req.end)
            return
        gate = self.svc.gate
        if gate is not None and not gate.admit(self, decision):
            return  # held (QUEUED) until a backend has room, or answered (shed, over budget)
        self.start_routed(decision)

    def start_routed(self, decision: "Decision") -> None:
        """Starts the call on a decision with candidates (directly, or when admission control lets it go)."""
        self.decision = decision
        self.state = ROUTING
        self.position = 0
        self.svc.call_routed(self)
        self._attempt()

    def _attempt(self) -> None:
        svc = self.svc
        decision = self.decision
        assert decision is not None  # set by start_routed
        ranked = decision.ranked
        while self.position < len(ranked):
            i = ranked[self.position]
            conn = svc.acquire(i)
            if conn is not None and self.switch is not None and not self.switch.begin(
                    decision.served_model(self.position)):
                conn = None  # a substitute this call cannot be rewritten for: the next candidate
            if conn is not None:
                self.backend = i
                self.fault = False
                self.status = None
                self.state = FORWARDING
                svc.call_attempt(self, i)
                conn.open_stream(self)
                return
            self.position += 1
        if self.switch is not None and self.switch.refused:
            self.respond_error(gs.UNAVAILABLE, self.switch.no_candidate())
            return
        self.respond_error(gs.UNAVAILABLE, f"no backend could take this call ({len(ranked)} tried)")

    def start_upstream(self, conn: "UpstreamConnection", st: "H2Stream") -> None:
        """Called by the upstream connection once the stream has an id there."""
        self.up = conn
        self.up_id = sid = st.sid
        self.resp.on_sent = st.credit  # response bytes written to the client: credit the backend
        req = self.req
        no_body = req.end and not req.pending and req.trailers is None and not self.body_seen
        req.attach(conn.h2, sid)
        conn.send_headers(sid, self.request_headers, end_stream=no_body)
        if no_body:
            req.done = True
        else:
            req.pump()

    def _failover(self, why: str) -> None:
        """The backend failed before any response byte: replay the request on the next candidate."""
        svc = self.svc
        backend = self.backend
        name = svc.backend_name(backend)
        svc.call_failover(self, backend, why)
        self._detach_upstream()
        self.backend = -1
        decision = self.decision
        if self.replay is None or decision is None or self.position + 1 >= len(decision.ranked):
            self.respond_error(gs.UNAVAILABLE, f"backend {name} {why}; no other backend could take the call")
            return
        self._replay_next()

    def hedge(self) -> bool:
        """The first response byte is late: reset this attempt (RST_STREAM CANCEL) and replay the
        request on the next candidate. At most once per call; False when it cannot (committed,
        already hedged, no replay kept, no next candidate)."""
        decision = self.decision
        if (self.state != FORWARDING or self.hedged_from >= 0 or self.replay is None or decision is None
                or self.position + 1 >= len(decision.ranked)):
            return False
        backend = self.backend
        self.hedged_from = backend
        self.hedged_after_ms = waited = (_now() - self.t_start) * 1000.0
        self.svc.call_hedged(self, backend, waited)
        self._detach_upstream()
        self.backend = -1
        self._replay_next()
        return True

    def _replay_next(self) -> None:
        """A fresh request side holding every request byte so far, sent to the next candidate."""
        old = self.req
        new = Half(self._credit_client)
        for chunk in self.replay or ():
            new.pending.append(chunk)
            new.pending_bytes += len(chunk)
        # Bytes already credited to the client: those the last attempt sent, and those it still held
        # that an earlier attempt had sent.
        new.skip_credit = self.replay_bytes - old.pending_bytes + old.skip_credit
        new.end = old.end
        new.trailers = old.trailers
        self.req = new
        old.on_sent = _NOOP
        self.held_headers = None  # response headers of the abandoned attempt never reach the client
        self.position += 1
        self.state = ROUTING
        self._attempt()

    # -- backend side --------------------------------------------------------
    def on_response_headers(self, headers: list, end: bool) -> None:
        state = self.state
        if state == DONE:
            return
        if state == FORWARDING and self.held_headers is None:
            if not end:
                self.held_headers = headers  # sent with the first DATA, so failover stays invisible
                return
            # Trailers-only response: an UNAVAILABLE before any message is a refusal we can retry.
            status = _grpc_status(headers)
            if status == b"14" and self.replay is not None:
                self.fault = True
                self._failover("refused the call (UNAVAILABLE)")
                return
            self.state = COMMITTED
            self.replay = None
            self._close_response(headers)
            return
        if not end:
            self.reset_both(fr.PROTOCOL_ERROR, "backend sent a second HEADERS without END_STREAM")
            return
        if self.state != COMMITTED:
            self._commit()
        self._close_response(headers)

    def on_response_data(self, data: bytes, end: bool) -> None:
        if self.state == DONE:
            return
        if self.state != COMMITTED:
            self._commit()
        self.resp_bytes += len(data)
        if end:
            self.resp.push(data, True)
            self._response_complete()
        else:
            self.resp.push(data, False)

    def _commit(self) -> None:
        self.state = COMMITTED
        self.replay = None
        now = _now()
        self.t_first = now
        self.svc.call_first_byte(self, (now - self.t_start) * 1000.0)
        held = self.held_headers
        if held is not None:
            self.held_headers = None
            self.down.send_headers(self.down_id, held, end_stream=False)
        else:
            self.down.send_headers(self.down_id, _DEFAULT_RESPONSE_HEADERS, end_stream=False)

    def _close_response(self, trailers: list) -> None:
        status = _grpc_status(trailers)
        self.status = status
        self.fault = backend_at_fault(status)
        resp = self.resp
        plain, extra = self.svc.response_trailers(self)
        resp.trailers = trailers + plain
        resp.trailers_extra = extra
        resp.push(b"", True)
        self._response_complete()

    def _response_complete(self) -> None:
        self.resp_ended = True
        req = self.req
        if not req.done:
            # The backend answered before the request ended: stop sending it.
            req.done = True
            req.pending.clear()
            self._detach_upstream()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """Finishes once the response is fully written to the client."""
        if self.state != DONE and self.resp_ended and self.resp.done:
            self._finish()

    def on_upstream_reset(self, code: int) -> None:
        self.on_upstream_lost(f"reset the stream ({fr.ERROR_NAMES.get(code, code)})")

    def on_upstream_lost(self, why: str) -> None:
        """The backend connection closed, refused (GOAWAY, REFUSED_STREAM) or reset this stream."""
        if self.state == DONE:
            return
        self.fault = True
        self.up = None  # the upstream forgot the stream already
        if self.state != COMMITTED and self.replay is not None:
            self._failover(why)
        else:
            self.respond_error(gs.UNAVAILABLE, f"backend {self.svc.backend_name(self.backend)} {why}"
                               + (" mid-stream" if self.state == COMMITTED else ""))

    # -- ending --------------------------------------------------------------
    def _fail_before_routing(self, code: int, message: str, req_ended: bool) -> None:
        self.req.end = self.req.end or req_ended
        self.respond_error(code, message)

    def respond_error(self, code: int, message: str, trailers: list | None = None) -> None:
        """Ends the call with a gRPC status the proxy chose (after any response data already queued);
        `trailers`: more fields for the client (grpc-retry-pushback-ms, say)."""
        if self.state == DONE:
            return
        extra: list = trailers or []
        if self.backend >= 0:
            plain, lits = self.svc.response_trailers(self)
            extra = plain + (lits or [])
        self.status = str(code).encode()
        if self.state == COMMITTED:
            headers = gs.status_trailers(code, message, extra)
        else:
            self.state = COMMITTED
            self.replay = None
            headers = gs.trailers_only(code, message, extra)
        self._detach_upstream()
        self.req.done = True
        self.req.pending.clear()
        resp = self.resp
        resp.trailers = headers
        resp.push(b"", True)
        self.resp_ended = True
        self._maybe_finish()

    def reset_both(self, code: int, message: str) -> None:
        if self.state == DONE:
            return
        self.svc.call_reset(self, message)
        self.down.h2.reset_stream(self.down_id, code)
        self.fault = True
        self._finish()

    def _detach_upstream(self) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.stream_closed(self.up_id)
        self.req.conn = None
        self.req.started = False

    def _finish(self) -> None:
        """Forgets the stream on both connections and breaks the reference cycles (fewer GC runs)."""
        if self.state == DONE:
            return
        self.state = DONE
        self.down.stream_closed(self.down_id)
        self._detach_upstream()
        self.svc.call_finished(self, self.status, self.fault,
                               (self.t_first - self.t_start) * 1000.0 if self.t_first else 0.0)
        self.req.on_sent = _NOOP
        self.resp.on_sent = _NOOP
        self.resp.on_done = None
        # The client stream holds this call (owner, on_data) and the call held the stream through
        # its credit method: a cycle, left for the collector with everything the call holds (14
        # objects per call, all walked by the next young collection).
        self._credit_client = _NOOP
        self.req.pending.clear()
        self.replay = None


def _noop(n: int) -> None:
    pass


_NOOP: Final = _noop  # a static, not a module-dict lookup, in the compiled build


def _grpc_status(headers: list) -> bytes | None:
    for name, value in headers:
        if name == b"grpc-status":
            return value
    return None


_DEFAULT_RESPONSE_HEADERS: Final = [(b":status", b"200"), (b"content-type", b"application/grpc")]
