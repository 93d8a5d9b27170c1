"""Fuzz target: `FrameReader.feed` over a byte stream cut at fuzzed points.

Input layout: byte 0 = number of cuts (low 4 bits), max frame size (bit 4:
16384 or 64) and max header block (bit 5: 65536 or 100); then one byte per
cut (its position as a fraction of the stream, /256); then the stream.

Contract checked: only H2Error escapes, with a known error code; every frame
is well formed (type and flags are bytes, stream id 31 bits, payload within
the frame size, HEADERS joined with END_HEADERS set and never on stream 0,
no CONTINUATION comes out); the frames and the error are the same however
the stream is cut; nothing complete is left unread in the buffer.
"""
from __future__ import annotations

from fastpath.h2 import frames as fr

from .fuzz_input import FuzzInput

Outcome = tuple[list[tuple[int, int, int, bytes]], tuple[int, int, str] | None, int]


def _run(reader: fr.FrameReader, pieces: list[bytes]) -> Outcome:
    out: list[tuple[int, int, int, bytes]] = []
    err = None
    try:
        for p in pieces:
            got = reader.feed(p)
            assert isinstance(got, list), f"feed returned {type(got).__name__}, not a list"
            out += got
    except fr.H2Error as e:
        assert e.code in fr.ERROR_NAMES, f"H2Error with unknown code {e.code}"
        assert 0 <= e.stream_id <= fr.MAX_STREAM_ID
        assert str(e), "H2Error without a message"
        err = (e.code, e.stream_id, str(e))
    return out, err, reader.frames_seen


def _check_frames(frames: list[tuple[int, int, int, bytes]], max_frame: int, max_block: int) -> None:
    for ftype, flags, sid, payload in frames:
        assert 0 <= ftype <= 255 and 0 <= flags <= 255, (ftype, flags)
        assert 0 <= sid <= fr.MAX_STREAM_ID, sid
        assert isinstance(payload, bytes), type(payload)
        assert ftype != fr.CONTINUATION, "a CONTINUATION frame escaped the reader"
        if ftype == fr.HEADERS:
            assert flags & fr.END_HEADERS, "HEADERS delivered without END_HEADERS"
            assert sid != 0, "HEADERS on stream 0 delivered"
            assert len(payload) <= max(max_frame, max_block), len(payload)
        else:
            assert len(payload) <= max_frame, (ftype, len(payload), max_frame)


def _no_complete_frame_left(reader: fr.FrameReader) -> None:
    buf = bytes(reader.buf)
    if len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        assert 9 + length > len(buf), f"a complete frame ({length} bytes) was left unread in the buffer"


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    head = src.byte()
    max_frame = 64 if head & 0x10 else fr.DEFAULT_MAX_FRAME
    max_block = 100 if head & 0x20 else 65536
    fractions = [src.byte() for _ in range(head & 0x0F)]
    stream = src.rest()
    cuts = sorted({f * len(stream) // 256 for f in fractions})
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:])]

    split = _run(fr.FrameReader(max_frame, max_block), pieces)
    whole_reader = fr.FrameReader(max_frame, max_block)
    whole = _run(whole_reader, [stream])
    _check_frames(split[0], max_frame, max_block)
    _check_frames(whole[0], max_frame, max_block)
    assert split[1] == whole[1], f"error depends on where the stream is cut: {split[1]} vs {whole[1]}"
    if whole[1] is None:
        assert split[0] == whole[0], "frames depend on where the stream is cut"
        assert split[2] == whole[2], "frames_seen depends on where the stream is cut"
        _no_complete_frame_left(whole_reader)
