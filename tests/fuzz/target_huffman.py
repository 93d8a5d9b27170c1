"""Fuzz target: `fastpath.h2.huffman.decode_huffman`, the byte-at-a-time HPACK Huffman decoder.

Input layout: byte 0 bit 0 chooses the mode.
- raw (bit 0 clear): the rest is a Huffman string as a peer might send it.
- round trip (bit 0 set): the rest is plain text, Huffman-coded by the
  reference encoder (the `hpack` package), then cut short by the next byte
  when bit 1 is set.

Contract checked: only HuffmanError (a ValueError) escapes; the decoder
accepts exactly what the reference nibble decoder accepts and returns the
same bytes; a reference encoding decodes to the text it encoded.
"""
from __future__ import annotations

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as reference

from fastpath.h2.huffman import HuffmanError, decode_huffman

_ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _compare(data: bytes) -> bytes | None:
    try:
        want: bytes | None = reference(data)
    except Exception:  # noqa: BLE001 - the reference raises its own HPACKDecodingError
        want = None
    try:
        got: bytes | None = decode_huffman(data)
    except HuffmanError:
        got = None
    assert got == want, f"{data.hex()}: decoded {got!r}, reference {want!r}"
    return got


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, rest = data[0], data[1:]
    if not flags & 1:
        _compare(rest)
        return
    cut = -1
    if flags & 2 and rest:
        cut, rest = rest[0], rest[1:]
    coded = _ENCODER.encode(rest)
    if cut >= 0:
        coded = coded[: cut * len(coded) // 255]
    got = _compare(coded)
    if cut < 0:
        assert got == rest, f"round trip of {rest!r} gave {got!r}"
