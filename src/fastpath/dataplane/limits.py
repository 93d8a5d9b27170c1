"""Per-connection limits and windows the proxy advertises and enforces.

Defaults are what a production proxy ships (compare nginx's http2_* and
Envoy's http2_protocol_options): they bound what one client can make the
proxy hold or do, so one hostile connection cannot hurt the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # Flow control: what a peer may send us before we say "more". They bound
    # what the proxy buffers: at most stream_window per stream and direction,
    # so at most max_concurrent_streams x stream_window per connection.
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
    # Abuse: rapid reset (CVE-2023-44487), control-frame floods (SETTINGS, PING,
    # empty DATA, PRIORITY, WINDOW_UPDATE), slowloris.
    resets_per_s: float = 200.0
    reset_burst: float = 400.0
    control_frames_per_s: float = 1000.0
    control_burst: float = 2000.0
    max_unsent_control_bytes: int = 1 << 20  # our un-read PING/SETTINGS ACKs a client may pile up
    header_timeout_s: float = 10.0           # preface and first HEADERS must arrive within this
    idle_timeout_s: float = 300.0            # a connection with no stream for this long is closed


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
