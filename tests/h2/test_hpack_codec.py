"""HPACK: our decoder agrees with the reference encoder, our encoder with the reference decoder."""
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.h2.frames import H2Error
from fastpath.h2.hpack_codec import HpackDecoder, HpackEncoder

names = st.sampled_from([b":path", b"content-type", b"grpc-timeout", b"x-request-id", b"x-fastpath-region",
                         b"te", b"authorization", b"user-agent"]) | st.binary(min_size=1, max_size=20).map(
    lambda b: b.lower().replace(b":", b"x"))
header = st.tuples(names, st.binary(max_size=60))
blocks = st.lists(st.lists(header, max_size=12), min_size=1, max_size=8)


@settings(max_examples=200)
@given(blocks, st.sampled_from([0, 256, 4096]), st.booleans())
def test_decoder_matches_reference_encoder(seq, table_size, huffman):
    enc = hpack.Encoder()
    enc.header_table_size = table_size
    dec = HpackDecoder()
    for headers in seq:
        block = enc.encode(headers, huffman=huffman)
        assert dec.decode(block) == headers


@settings(max_examples=200)
@given(blocks, st.sampled_from([0, 100, 4096]))
def test_encoder_matches_reference_decoder(seq, peer_table):
    enc = HpackEncoder()
    enc.set_max_table_size(peer_table)
    dec = hpack.Decoder()
    dec.max_allowed_table_size = 4096
    for headers in seq * 2:  # repeats exercise the block cache and indexed fields
        assert [tuple(h) for h in dec.decode(enc.encode(headers), raw=True)] == headers
        assert enc.size <= enc.max_size


def test_a_list_encoded_again_after_the_table_changed_is_encoded_afresh():
    """The encoder remembers the block it made for a list of fields; once other blocks changed the
    table, those bytes would point at entries that are gone."""
    enc = HpackEncoder()
    enc.set_max_table_size(100)  # room for one small entry: every new field evicts the last
    dec = hpack.Decoder()
    a = [(b"x-a", b"1" * 20)]
    b = [(b"x-b", b"2" * 20)]
    for headers in (a, a, b, a, b, b, a):
        assert [tuple(h) for h in dec.decode(enc.encode(headers), raw=True)] == headers
    assert enc.encode(a) == enc.encode(a)  # unchanged table: the same block


def test_the_decoder_says_whether_a_list_will_come_back():
    """A block that adds to the table (a per-call value the peer indexes) decodes to a list seen
    once; a block that leaves the table alone comes back as the same list."""
    enc, dec = hpack.Encoder(), HpackDecoder()
    for i in range(3):
        headers = [(b":path", b"/x"), (b"x-request-id", b"%032x" % i)]
        assert dec.decode(enc.encode(headers)) == headers
        assert not dec.cached  # x-request-id was indexed: the table changed
    repeat = [(b":path", b"/x")]
    block = enc.encode(repeat)
    first = dec.decode(block)
    assert dec.cached and dec.decode(block) is first and dec.cached


def test_repeated_blocks_are_decoded_once():
    hs = [(b":path", b"/inference.GRPCInferenceService/ModelInfer"), (b"x-fastpath-region", b"us-east")]
    enc, dec = hpack.Encoder(), HpackDecoder()
    assert dec.decode(enc.encode(hs)) == hs  # first block inserts into the table
    repeat = enc.encode(hs)  # later blocks only reference it
    first = dec.decode(repeat)
    assert first == hs
    assert dec.decode(repeat) is first  # unchanged table: the cached result, no decoding


def test_unique_values_are_not_indexed_forever():
    enc = HpackEncoder()
    dec = hpack.Decoder()
    for i in range(50):
        headers = [(b":path", b"/x"), (b"x-request-id", str(i).encode() * 8), (b"x-fastpath-model", b"m")]
        assert [tuple(h) for h in dec.decode(enc.encode(headers), raw=True)] == headers
    assert len(enc.entries) <= 4  # two fields, and the id's first two values: then it stops being inserted


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_blocks_raise_compression_error_only(block):
    try:
        HpackDecoder().decode(block)
    except H2Error as e:
        assert e.code == 0x9


def test_table_size_update_above_our_limit_is_refused():
    with pytest.raises(H2Error, match="above"):
        HpackDecoder(settings_max=4096).decode(b"\x3f\xe1\x3f")  # size update to 8192
