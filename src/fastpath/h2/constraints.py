"""Every limit one HTTP/2 peer is held to, in one place, each with its formula.

Defaults are what a production proxy ships (compare nginx's http2_* and
Envoy's `protocol_constraints.h`): they bound what one client can make the
proxy hold or do, so one hostile connection cannot hurt the others.

Formulas (checked by `fastpath.h2.connection.H2Connection`):

- buffered request bytes per connection <= max_concurrent_streams x stream_window
  (a peer may not send more than the windows we granted; FLOW_CONTROL_ERROR otherwise)
- header block bytes (HEADERS + CONTINUATION) <= max_header_block, decoded list <= max_header_list
  (CONTINUATION flood, HPACK bomb: ENHANCE_YOUR_CALM / COMPRESSION_ERROR)
- RST_STREAM received: a token bucket of reset_burst refilled at resets_per_s (rapid reset,
  CVE-2023-44487)
- SETTINGS, PING, PRIORITY and unknown frame types: a token bucket of control_burst refilled at
  control_frames_per_s
- empty DATA frames without END_STREAM: at most max_consecutive_empty_data in a row (Envoy's
  max_consecutive_inbound_frames_with_empty_payload); any non-empty frame resets the count
- WINDOW_UPDATE received <= window_update_base + window_update_per_stream x streams opened
  + window_update_per_data_frame x DATA frames we sent (Envoy's
  max_inbound_window_update_frames_per_data_frame_sent): a peer only needs to open windows
  we are using
- our unsent PING/SETTINGS ACKs <= max_unsent_control_bytes (a peer that makes us answer but
  never reads is cut off)
- header_timeout_s for the first request (and any open header block), idle_timeout_s without
  streams (slowloris, idle hoarding)
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Constraints:
    # Flow control: what a peer may send us before we say "more".
    stream_window: int = 1 << 20
    connection_window: int = 16 << 20
    max_frame_size: int = 16384
    max_header_block: int = 65536       # bytes of one header block (HEADERS + CONTINUATION)
    max_header_list: int = 65536        # decoded header list size (RFC 9113 §6.5.2)
    max_concurrent_streams: int = 256   # per client connection
    max_connections: int = 10000        # per proxy process
    replay_limit: int = 65536           # request bytes kept for failover before the first response byte
    upstream_connect_timeout_s: float = 1.0
    drain_timeout_s: float = 30.0
    # Abuse.
    resets_per_s: float = 200.0
    reset_burst: float = 400.0
    control_frames_per_s: float = 1000.0
    control_burst: float = 2000.0
    max_consecutive_empty_data: int = 100
    window_update_base: int = 100
    window_update_per_stream: int = 4
    window_update_per_data_frame: int = 10
    max_unsent_control_bytes: int = 1 << 20
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0


class TokenBucket:
    """A rate limit: `take()` is False once the burst is spent faster than `rate` refills it."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        tokens = self.tokens - 1.0
        if tokens >= 0.0:
            self.tokens = tokens
            return True
        now = time.monotonic()
        tokens += (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 0.0:
            return False
        self.tokens = tokens
        return True
