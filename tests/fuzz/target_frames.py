"""Fuzz target: `FrameReader.feed` over a byte stream cut at fuzzed points.

Input layout: byte 0 = number of cuts (low 4 bits), max frame size (bit 4:
16384 or 64) and max header block (bit 5: 65536 or 100); then one byte per
cut (its position as a fraction of the stream, /256); then the stream.

Contract checked: only H2Error escapes (or waits in `reader.error` behind
the frames read before it), with a known error code; every frame
is well formed (type and flags are bytes, stream id 31 bits, payload within
the frame size, HEADERS joined with END_HEADERS set and never on stream 0,
no CONTINUATION comes out); the frames and the error are the same however
the stream is cut; nothing complete is left unread in the buffer; and the
frames (or the refusal) are those of a plain, separately written reading of
RFC 9113 §4.1, §6.2 and §6.10 (reference_frames below).
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
            if reader.error is not None:  # frames before the violation come out first
                raise reader.error
    except fr.H2Error as e:
        assert e.code in fr.ERROR_NAMES, f"H2Error with unknown code {e.code}"
        assert 0 <= e.stream_id <= fr.MAX_STREAM_ID
        assert str(e), "H2Error without a message"
        err = (e.code, e.stream_id, str(e))
    return out, err, reader.frames_seen


def _check_frames(frames: list[tuple[int, int, int, bytes]], max_frame: int, max_block: int) -> None:
    for ftype, flags, sid, payload in frames:
        assert 0 <= ftype <= 255 and 0 <= flags & ~fr.SELF_DEPENDENT <= 255, (ftype, flags)
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


def reference_frames(stream: bytes, max_frame: int, max_block: int) -> tuple[list, bool]:
    """The frames a stream holds, written from the RFC rather than from FrameReader; (frames, refused)."""
    out: list[tuple[int, int, int, bytes]] = []
    pos, pending = 0, None  # pending = [stream id, flags, fragments] while CONTINUATION is due
    while len(stream) - pos >= 9:
        length = int.from_bytes(stream[pos : pos + 3], "big")
        ftype, flags = stream[pos + 3], stream[pos + 4]
        sid = int.from_bytes(stream[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        if length > max_frame:
            return out, True
        if pos + 9 + length > len(stream):
            break
        payload = stream[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if pending is not None:
            if ftype != fr.CONTINUATION or sid != pending[0]:
                return out, True
            pending[2].append(payload)
            if sum(map(len, pending[2])) > max_block:
                return out, True
            if flags & fr.END_HEADERS:
                out.append((fr.HEADERS, pending[1] | fr.END_HEADERS, sid, b"".join(pending[2])))
                pending = None
        elif ftype == fr.HEADERS:
            if sid == 0:
                return out, True
            if flags & fr.PADDED:
                if not payload or payload[0] >= len(payload):
                    return out, True
                payload = payload[1 : len(payload) - payload[0]]
            if flags & fr.PRIORITY_FLAG:
                if len(payload) < 5:
                    return out, True
                if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == sid:
                    flags |= fr.SELF_DEPENDENT  # a stream error, left to the connection
                payload = payload[5:]
            if flags & fr.END_HEADERS:
                out.append((ftype, flags, sid, payload))
            elif len(payload) > max_block:
                return out, True
            else:
                pending = [sid, flags, [payload]]
        elif ftype == fr.CONTINUATION:
            return out, True
        else:
            out.append((ftype, flags, sid, payload))
    return out, False


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
    ref_frames, ref_refused = reference_frames(stream, max_frame, max_block)
    assert ref_refused == (whole[1] is not None), f"reference refused={ref_refused}, FrameReader error {whole[1]}"
    if whole[1] is None:
        assert whole[0] == ref_frames, "FrameReader and the reference read different frames"
        assert split[0] == whole[0], "frames depend on where the stream is cut"
        assert split[2] == whole[2], "frames_seen depends on where the stream is cut"
        _no_complete_frame_left(whole_reader)
