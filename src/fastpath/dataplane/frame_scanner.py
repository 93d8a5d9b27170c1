"""Follows HTTP/2 frame boundaries in a byte stream that is relayed verbatim.

Pinned connections are relayed without re-encoding, but the fast path still
wants to see when each stream starts, gets its first response frame, and
ends — for TTFT telemetry — without copying or decoding anything.
"""
from __future__ import annotations

from collections.abc import Callable

from fastpath.h2 import frames as fr

# on_frame(type, flags, stream_id) for every frame header seen.
FrameCallback = Callable[[int, int, int], None]


class FrameScanner:
    __slots__ = ("skip", "head", "on_frame", "frames")

    def __init__(self, on_frame: FrameCallback, preface: bool = False) -> None:
        self.skip = len(fr.PREFACE) if preface else 0  # payload bytes (or preface) still to pass over
        self.head = b""  # a frame header split across reads
        self.on_frame = on_frame
        self.frames = 0

    def feed(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        if self.head:
            need = 9 - len(self.head)
            self.head += data[:need]
            if len(self.head) < 9:
                return
            pos = need
            self._header(self.head)
            self.head = b""
        while True:
            pos += self.skip
            if pos > n:
                self.skip = pos - n
                return
            self.skip = 0
            if n - pos < 9:
                self.head = data[pos:]
                return
            self._header(data[pos : pos + 9])
            pos += 9

    def _header(self, h: bytes) -> None:
        length, ftype, flags, sid = fr.unpack_frame_header(h)
        self.skip = length
        self.frames += 1
        self.on_frame(ftype, flags, sid)
