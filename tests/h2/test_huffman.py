"""The byte-at-a-time Huffman decoder accepts and decodes exactly what the reference decoder does."""
from __future__ import annotations

import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as reference
from hypothesis import given
from hypothesis import strategies as st

from fastpath.h2.huffman import HuffmanError, decode_huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


@given(st.binary(max_size=200))
def test_round_trip_of_any_bytes(text):
    assert decode_huffman(ENCODER.encode(text)) == text


@given(st.binary(max_size=40))
def test_same_verdict_and_bytes_as_the_reference_on_arbitrary_input(data):
    try:
        want = reference(data)
    except Exception:  # noqa: BLE001 - the reference's own error type
        want = None
    try:
        got = decode_huffman(data)
    except HuffmanError:
        got = None
    assert got == want


@pytest.mark.parametrize("bad, why", [
    (b"\xff\xff\xff\xff", "EOS (30 ones) is a decoding error (RFC 7541 §5.2)"),
    (b"\x18", "'a' (00011) then padding 000 that is not all ones"),
    (b"\xff", "8 bits of padding: more than 7"),
])
def test_invalid_strings_are_refused(bad, why):
    with pytest.raises(HuffmanError):
        decode_huffman(bad)


def test_empty_string_is_empty():
    assert decode_huffman(b"") == b""
