"""Fuzz target: `HpackDecoder.decode` over a sequence of header blocks on one decoder.

Input layout: byte 0 picks the advertised table size (low 2 bits: 4096, 256,
0, 64) and the header list limit (bit 2: 65536 or 200); then header blocks,
each length-prefixed (FuzzInput.chunk); an empty chunk repeats the previous
block, as gRPC clients do call after call (that exercises the block cache).

Contract checked: only H2Error with COMPRESSION_ERROR escapes; every header
is a (bytes, bytes) pair; the dynamic table's accounted size is the sum of
its entries and within the negotiated limit; and each block decodes to what
the reference decoder (the `hpack` package, no caches) decodes, or both
refuse it. After the first error the connection is dead, so the sequence
stops there.
"""
from __future__ import annotations

import hpack

from fastpath.h2.frames import COMPRESSION_ERROR, H2Error
from fastpath.h2.hpack_codec import HpackDecoder

from .fuzz_input import FuzzInput

TABLE_SIZES = (4096, 256, 0, 64)
LIST_LIMITS = (65536, 200)
MAX_BLOCKS = 32


def blocks_of(data: bytes) -> tuple[int, int, list[bytes]]:
    src = FuzzInput(data)
    head = src.byte()
    table, limit = TABLE_SIZES[head & 3], LIST_LIMITS[(head >> 2) & 1]
    blocks: list[bytes] = []
    while src.left() and len(blocks) < MAX_BLOCKS:
        b = src.chunk()
        blocks.append(b if b or not blocks else blocks[-1])
    return table, limit, blocks


def _reference(table: int, limit: int) -> hpack.Decoder:
    ref = hpack.Decoder(max_header_list_size=limit)
    ref.max_allowed_table_size = table
    ref.header_table_size = table
    return ref


def _ours_is_stricter(err: H2Error) -> bool:
    """Refusals RFC 7541 leaves to the decoder: integers padded past 2^28 (§5.1 'MAY limit')."""
    return "integer too large" in str(err)


def one_input(data: bytes) -> None:
    table, limit, blocks = blocks_of(data)
    ours = HpackDecoder(settings_max=table, max_header_list=limit)
    ref = _reference(table, limit)
    for block in blocks:
        ref_err: Exception | None = None
        try:
            expected = [(bytes(n), bytes(v)) for n, v in ref.decode(block, raw=True)]
        except hpack.HPACKError as e:
            ref_err = e
        except (IndexError, ValueError) as e:  # the reference's own rough edges on garbage
            ref_err = e
        try:
            got = ours.decode(block)
        except H2Error as e:
            assert e.code == COMPRESSION_ERROR, f"HPACK error with code {e.code_name}, not COMPRESSION_ERROR"
            assert e.stream_id == 0, "an HPACK error must be a connection error"
            assert ref_err is not None or _ours_is_stricter(e), (
                f"we refuse a block the reference decodes: {block.hex()} ({e})")
            return
        assert isinstance(got, list)
        for h in got:
            assert isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], bytes) and isinstance(h[1], bytes), h
        assert ref_err is None, f"we accept a block the reference refuses ({ref_err!r}): {block.hex()} -> {got}"
        assert got == expected, f"block {block.hex()}: we decode {got}, the reference {expected}"
        assert ours.size == sum(len(n) + len(v) + 32 for n, v in ours.table), "dynamic table size miscounted"
        assert ours.size <= ours.max_size <= ours.settings_max, (ours.size, ours.max_size, ours.settings_max)
        assert sum(len(n) + len(v) + 32 for n, v in got) <= limit
