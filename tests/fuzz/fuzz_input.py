"""A cursor over one fuzz input, so each target reads structure (split points, blocks, pairs) from raw bytes.

Targets do not use atheris's FuzzedDataProvider: with plain bytes the same
one-input functions run under atheris, under hypothesis and over the seed
corpus, and a seed file is easy to write by hand (see seeds.py for the
layout of each target).
"""
from __future__ import annotations


class FuzzInput:
    """Reads small integers and byte strings off the front of `data`; past the end everything is empty or 0."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        return self.byte() | (self.byte() << 8)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left())

    def chunk(self) -> bytes:
        """A length-prefixed string: one byte of length (255 = a two-byte length follows)."""
        n = self.byte()
        if n == 255:
            n = self.u16()
        return self.take(n)


def chunk(payload: bytes) -> bytes:
    """The length-prefixed encoding FuzzInput.chunk reads back (for writing seeds)."""
    n = len(payload)
    if n < 255:
        return bytes((n,)) + payload
    if n > 0xFFFF:
        raise ValueError(f"chunk of {n} bytes: at most 65535")
    return bytes((255, n & 0xFF, n >> 8)) + payload
