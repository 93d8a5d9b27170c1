"""Fuzz target: `HpackEncoder.encode`, whose blocks every backend and client must be able to decode.

Input layout: a sequence of operations. An operation byte with the high bit
set applies a peer SETTINGS_HEADER_TABLE_SIZE (low 2 bits: 4096, 0, 100,
8192); otherwise its low 3 bits give a header count, and each header is a
name (a selector byte: a common gRPC name, or a chunk) and a value chunk.
Bit 3 encodes the same list twice (the block cache's path).

Contract checked: each block decodes, with the reference decoder (the
`hpack` package) told only what the peer advertised, to exactly the list
that was encoded; the encoder's table stays within the size the peer
allows; and fastpath's own decoder reads the same blocks the same way.
"""
from __future__ import annotations

import hpack

from fastpath.h2.hpack_codec import HpackDecoder, HpackEncoder

from .fuzz_input import FuzzInput

PEER_SIZES = (4096, 0, 100, 8192)
NAMES = (b":path", b":authority", b"content-type", b"grpc-timeout", b"te", b"x-request-id", b"authorization",
         b"x-fastpath-session", b"x-fastpath-region", b"user-agent", b"grpc-status", b"grpc-message")
MAX_OPS = 24


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    enc = HpackEncoder()
    ref = hpack.Decoder()
    ref.max_allowed_table_size = 4096
    ours = HpackDecoder(settings_max=8192)
    for _ in range(MAX_OPS):
        if not src.left():
            break
        op = src.byte()
        if op & 0x80:
            size = PEER_SIZES[op & 3]
            enc.set_max_table_size(size)
            ref.max_allowed_table_size = max(ref.max_allowed_table_size, min(size, 4096))
            continue
        headers = []
        for _ in range(op & 7):
            sel = src.byte()
            name = NAMES[sel % len(NAMES)] if sel < 0xF0 else src.chunk()
            headers.append((name, src.chunk()))
        for _ in range(2 if op & 8 else 1):
            block = enc.encode(headers)
            assert isinstance(block, bytes)
            decoded = [(bytes(n), bytes(v)) for n, v in ref.decode(block, raw=True)]
            assert decoded == headers, f"encoded {headers}, the reference decoder read {decoded} from {block.hex()}"
            assert ours.decode(block) == headers, f"our decoder misreads our own block {block.hex()}"
            assert enc.size <= enc.max_size <= 4096, (enc.size, enc.max_size)
            assert enc.size == sum(len(n) + len(v) + 32 for n, v in enc.entries), "encoder table size miscounted"
