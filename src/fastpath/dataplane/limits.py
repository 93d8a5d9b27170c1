"""Per-connection limits and windows the proxy advertises and enforces."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # Flow control: what a peer may send us before we say "more". They bound
    # what the proxy buffers: at most stream_window per stream and direction.
    stream_window: int = 1 << 20
    connection_window: int = 16 << 20
    max_frame_size: int = 16384
    max_header_block: int = 65536       # bytes of one header block (HEADERS + CONTINUATION)
    max_header_list: int = 65536        # decoded header list size (RFC 9113 §6.5.2)
    max_concurrent_streams: int = 1000  # per client connection
    replay_limit: int = 65536           # request bytes kept for failover before the first response byte
    upstream_connect_timeout_s: float = 1.0
    drain_timeout_s: float = 30.0
