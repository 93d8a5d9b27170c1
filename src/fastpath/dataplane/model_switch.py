"""Serving a call with a substitute model: its request rewritten on the way to the backend.

A call whose decision allows substitutes (the request sent
`x-fastpath-allow-substitute: true`, or its policy opts in, and the requested
model has a `[model_groups]` entry) gets a `ModelSwitch`. Every attempt of
that call (the first, and each replay on failover) goes through `begin()`:
when the candidate serves a substitute, the request body forwarded there is
the client's with `model_name` set to the substitute in every message
(`fastpath.router.model_rewrite.MessageStreamRewriter`), re-framed into DATA
frames against the backend's windows and frame size by the stream's `Half`;
when it serves the requested model the bytes pass unchanged. The replay kept
for failover is always the client's original bytes.

What is supported, and what is refused:
- KServe calls that carry the model in their messages (ModelInfer,
  ModelStreamInfer, ModelReady, ModelMetadata: field 1 of every message);
- uncompressed messages of at most `max_message` bytes (the proxy's stream
  window, 1 MiB by default), split across DATA frames in any way (a message
  is held until it is whole) or several in one frame;
- a substitute whose request cannot be rewritten exactly (another service,
  a compressed or oversized first message, a body that does not walk as
  protobuf) is not used: the attempt goes to the next candidate, one serving
  the requested model (the decision trailer says `substitute_refused=...`),
  or the call fails with UNAVAILABLE naming the reason when none is left;
- a later message of a stream that cannot be rewritten ends the call with
  FAILED_PRECONDITION naming the message and why (the backend already serves
  the substitute; the stream is not sent on with a wrong model_name).

Flow control: the client's stream and connection windows are charged for
the original bytes, the backend's for the rewritten ones (`Half` counts
what it sends). The client is given its bytes back (`credit`) when the
rewritten bytes carrying them went out, in order, and at once for the bytes
of an incomplete message held here (bounded by max_message), so a message
larger than the client's window can still complete. Over a call, exactly
the bytes received are credited, whatever the attempts.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from fastpath.h2.connection import Half
from fastpath.router.model_rewrite import MessageStreamRewriter

from . import grpc_status as gs

if TYPE_CHECKING:
    from .call import Call
    from .metrics import ProxyMetrics

# Calls whose every message names the model in protobuf field 1 (a string).
REWRITABLE = frozenset({
    b"/inference.GRPCInferenceService/ModelInfer",
    b"/inference.GRPCInferenceService/ModelStreamInfer",
    b"/inference.GRPCInferenceService/ModelReady",
    b"/inference.GRPCInferenceService/ModelMetadata",
})
FAILED_PRECONDITION = 9
SERVED_MODEL = b"x-fastpath-served-model"  # trailer naming the substitute that served a call
DEFAULT_MAX_MESSAGE = 1 << 20


class ModelSwitch:
    """The model a call's current attempt is served with, and the request bytes rewritten for it."""

    __slots__ = ("call", "requested", "max_message", "metrics", "served", "served_b", "rewriter", "received",
                 "credited", "segments", "refused")

    def __init__(self, call: "Call", requested: str, max_message: int, metrics: "ProxyMetrics | None" = None) -> None:
        self.call = call
        self.requested = requested
        self.max_message = max_message
        self.metrics = metrics
        self.served = ""  # the substitute the current attempt is served with; "" = the requested model
        self.served_b = b""
        self.rewriter: MessageStreamRewriter | None = None
        self.received = 0  # original request bytes received from the client
        self.credited = 0  # of those, given back to the client (WINDOW_UPDATE)
        self.segments: deque[list[int]] = deque()  # [bytes still to send, original bytes they give back]
        self.refused = ""  # why a substitute was passed over, for the decision trailer

    def begin(self, served: str) -> bool:
        """Prepares `call.req` for an attempt served with `served` ("" = the requested model).

        `call.req` is then a fresh, unattached `Half` holding the original bytes of the request
        from its start (before the first attempt, or as `_failover` rebuilt it from the replay).
        False when the request cannot be rewritten for `served`: the caller tries the next
        candidate, and `call.req` is left as it was.
        """
        call = self.call
        old = call.req
        src = b"".join(old.pending)
        rw = None
        out = src
        if served:
            why = ""
            if call.path not in REWRITABLE:
                why = "its messages do not name the model"
            else:
                rw = MessageStreamRewriter(served, self.max_message)
                got = rw.feed(src)
                if got is None:
                    why = rw.error
                elif old.end and rw.held:
                    why = "the request ends inside a message"
                else:
                    out = got
            if why:
                self.refused = why
                if self.metrics is not None:
                    self.metrics.substitute_refused(self.requested, served)
                return False
        new = Half(self.on_sent)
        new.end = old.end
        new.trailers = old.trailers
        self.received = len(src)
        owed = self.received - self.credited  # not yet given back (previous attempts gave the rest)
        early = min(rw.held, owed) if rw is not None else 0
        self.segments.clear()
        if out:
            new.pending.append(out)
            new.pending_bytes = len(out)
            self.segments.append([len(out), owed - early])
        elif owed - early > 0:
            self._credit(owed - early)  # nothing to send yet: nothing to wait for
        if early:
            self._credit(early)
        old.on_sent = _noop
        call.req = new
        self.rewriter = rw
        self.served = served
        self.served_b = served.encode("ascii", "replace")
        if served and self.metrics is not None:
            self.metrics.substituted(self.requested, served)
        return True

    def push(self, data: bytes, end: bool) -> None:
        """Request bytes from the client for the current attempt (after `begin`)."""
        call = self.call
        if call.resp_ended:
            return  # answered already (or ended for a message that could not be rewritten): drop the rest
        n = len(data)
        self.received += n
        rw = self.rewriter
        if rw is None:
            if n:
                self.segments.append([n, n])
            call.req.push(data, end)
            return
        out = rw.feed(data)
        if out is None:
            self._fail(f"message {rw.messages + 1} of this call cannot be rewritten for substitute model "
                       f"{self.served!r} ({rw.error}); send uncompressed messages of at most {self.max_message} "
                       "bytes, or do not allow substitutes")
            return
        if end and rw.held:
            self._fail("the request ended inside a message")
            return
        # Bytes of an incomplete message are given back now (bounded by max_message); the rest of
        # `data` when the rewritten bytes carrying it went out.
        early = rw.held if out else n
        if out:
            self.segments.append([len(out), n - early])
        call.req.push(out, end)
        if early:
            self._credit(early)

    def on_sent(self, n: int) -> None:
        """`n` rewritten bytes went to the backend: give the client back the original bytes they carried."""
        segs = self.segments
        while n and segs:
            seg = segs[0]
            if n < seg[0]:
                seg[0] -= n
                return
            n -= seg[0]
            segs.popleft()
            if seg[1]:
                self._credit(seg[1])

    def _credit(self, n: int) -> None:
        self.credited += n
        self.call._credit_client(n)

    def _fail(self, message: str) -> None:
        self.call.respond_error(FAILED_PRECONDITION, message)

    def no_candidate(self) -> str:
        """The error of a call every remaining candidate of which serves a substitute it cannot have."""
        return (f"no backend serving model {self.requested!r} could take this call, and a substitute model "
                f"cannot serve it: {self.refused}")

    def decision_note(self) -> bytes:
        """What the decision trailer adds: why a substitute was passed over, if one was."""
        if not self.refused:
            return b""
        return b";substitute_refused=" + self.refused.replace(";", ",").encode("ascii", "replace")


def _noop(n: int) -> None:
    pass


def for_call(call: "Call") -> ModelSwitch:
    """The switch of a call whose decision allows substitutes; messages are held up to the proxy's
    stream window (what the client may send before window is given back)."""
    try:
        max_message = int(call.down.h2.limits.stream_window)
    except AttributeError:
        max_message = DEFAULT_MAX_MESSAGE
    f = call.features
    assert f is not None  # a routed call
    return ModelSwitch(call, f.model, max_message, getattr(call.svc, "metrics", None))


def substitute_policies(config: Any) -> frozenset[str]:
    """Names of the config's policies whose calls allow a substitute model without the header."""
    return frozenset(n for n, p in config.policies.items() if getattr(p, "allow_substitute", False))
