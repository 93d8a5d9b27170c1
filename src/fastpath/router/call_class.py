"""What admission control and budgets read from a call: its priority, tenant and deadline, and "headroom".

Only read when the config has an [admission] or [budgets] table; without them
these headers are ignored and nothing here runs on the fast path.

Headers (gRPC metadata):
- x-fastpath-priority: an integer 0..9, higher is served first (default: [admission] default_priority);
- x-fastpath-tenant:   who pays and whose turn it is (letters, digits, '.', '_', '-'; default "");
- grpc-timeout:        the gRPC deadline ("<up to 8 digits><H|M|S|m|u|n>", gRPC over HTTP/2).

Headroom (when the proxy may start a call now rather than hold it): some
candidate of the router's decision has a free batch slot — its load share
(calls in flight there, counting this proxy's own and, with a controller, the
scraped queue, over its batch slots) is below 1 — or this proxy has nothing in
flight there (work-conserving: a stale figure never holds calls while a
backend sits idle). The SLO itself is not a reason to hold: the router already
puts the candidates predicted to meet it first, and its prediction counts
queueing that a free batch slot does not have, so holding on it would only
add waiting (measured: with a 300 ms SLO and a ~235 ms idle prediction, calls
were held and shed at low load). What the SLO decides is how long a call may
wait: its start-by deadline.

Start-by deadline of a held call: it is worth starting only while a share
(`hold_share`, default 0.5) of its SLO, and of its grpc-timeout, is left
for the backend (HOLD_SHARE = 0.5); past that it is shed with RESOURCE_EXHAUSTED. A call with
neither waits at most [admission] max_wait_ms.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastpath.router.features import MetadataError, _show, _token

if TYPE_CHECKING:
    from fastpath.router.router import Decision

PRIORITY = b"x-fastpath-priority"
TENANT = b"x-fastpath-tenant"
GRPC_TIMEOUT = b"grpc-timeout"
MAX_PRIORITY = 9
HOLD_SHARE = 0.5  # a held call starts only while this share of its SLO and of its grpc-timeout is left

# gRPC over HTTP/2: TimeoutValue is at most 8 ASCII digits, TimeoutUnit one of these.
_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}
_DIGITS = b"0123456789"


@dataclass(slots=True)
class CallClass:
    priority: int = -1  # -1: no x-fastpath-priority header (the config's default applies)
    tenant: str = ""
    timeout_s: float = 0.0  # grpc-timeout in seconds; 0 = none


def parse_grpc_timeout(value: bytes) -> float:
    """Seconds of a grpc-timeout value; MetadataError naming what was wrong (the gRPC spec's format)."""
    accepted = "send up to 8 digits and a unit H, M, S, m, u or n, e.g. 250m"
    v = value.strip()
    if len(v) < 2 or len(v) > 9:
        raise MetadataError(f"grpc-timeout: {_show(value)} is not a gRPC timeout; {accepted}")
    unit = _TIMEOUT_UNITS.get(v[-1])
    digits = v[:-1]
    if unit is None or digits.translate(None, _DIGITS):
        raise MetadataError(f"grpc-timeout: {_show(value)} is not a gRPC timeout; {accepted}")
    return int(digits) * unit


def parse_priority(value: bytes) -> int:
    v = value.strip()
    if len(v) != 1 or v.translate(None, _DIGITS):
        raise MetadataError(f"{PRIORITY.decode()}: {_show(value)} is not a priority; "
                            f"send an integer from 0 to {MAX_PRIORITY} (higher is served first)")
    return v[0] - 0x30


def call_class(headers: Iterable[tuple[bytes, bytes]]) -> CallClass:
    """Priority, tenant and grpc-timeout of a request's headers; MetadataError for a bad value."""
    c = CallClass()
    for name, value in headers:
        if name == PRIORITY:
            c.priority = parse_priority(value)
        elif name == TENANT:
            if value:
                c.tenant = _token(name, value, "tenant name")
        elif name == GRPC_TIMEOUT:
            c.timeout_s = parse_grpc_timeout(value)
    return c


def start_by(t_start: float, slo_ms: float, timeout_s: float, hold_share: float) -> float:
    """The latest time a held call is still worth starting (inf: neither an SLO nor a timeout)."""
    out = math.inf
    if slo_ms > 0.0:
        out = t_start + slo_ms / 1000.0 * hold_share
    if timeout_s > 0.0:
        out = min(out, t_start + timeout_s * hold_share)
    return out


def has_headroom(decision: "Decision", load_share: Callable[[int], float], own_inflight: Callable[[int], float]) -> bool:
    """Some candidate of `decision` can take the call now (see the module docstring)."""
    for i in decision.ranked:
        if own_inflight(i) < 1.0 or load_share(i) < 1.0:
            return True
    return False
