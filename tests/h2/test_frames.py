"""The frame codec: whatever way a byte stream is cut, the same frames come out."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.h2 import frames as fr

frame_st = st.tuples(
    st.sampled_from([fr.DATA, fr.PRIORITY, fr.RST_STREAM, fr.SETTINGS, fr.PING, fr.GOAWAY, fr.WINDOW_UPDATE, 0x42]),
    st.integers(0, 255).map(lambda f: f & ~(fr.PADDED | fr.PRIORITY_FLAG)),
    st.integers(0, fr.MAX_STREAM_ID),
    st.binary(max_size=300),
)


def encode(frames):
    return b"".join(fr.frame_header(len(p), t, f, s) + p for t, f, s, p in frames)


@given(st.lists(frame_st, max_size=20), st.lists(st.integers(1, 50), max_size=30))
def test_reader_yields_the_frames_for_any_split(frames, cuts):
    wire = encode(frames)
    reader = fr.FrameReader()
    got, pos = [], 0
    for c in cuts:
        got += reader.feed(wire[pos : pos + c])
        pos += c
    got += reader.feed(wire[pos:])
    assert [(t, f, s, bytes(p)) for t, f, s, p in got] == frames
    assert not reader.buf


@given(st.binary(min_size=0, max_size=70000), st.booleans(), st.sampled_from([16384, 20000]))
def test_headers_split_into_continuations_and_joined_back(block, end, max_frame):
    wire = fr.headers_frames(7, block, end, max_frame)
    got = fr.FrameReader(max_frame_size=max_frame, max_header_block=1 << 20).feed(wire)
    assert len(got) == 1
    ftype, flags, sid, payload = got[0]
    assert (ftype, sid, payload) == (fr.HEADERS, 7, block)
    assert bool(flags & fr.END_STREAM) == end


@given(st.binary(max_size=200), st.integers(0, 255))
def test_padding_and_priority_are_stripped(block, pad):
    payload = bytes([pad]) + b"\x00\x00\x00\x01\x10" + block + b"\x00" * pad
    wire = fr.frame_header(len(payload), fr.HEADERS, fr.PADDED | fr.PRIORITY_FLAG | fr.END_HEADERS, 3) + payload
    [(ftype, _, _, got)] = fr.FrameReader().feed(wire)
    assert got == block


def test_oversized_frame_is_a_frame_size_error():
    with pytest.raises(fr.H2Error) as e:
        fr.FrameReader().feed(fr.frame_header(16385, fr.DATA, 0, 1))
    assert e.value.code == fr.FRAME_SIZE_ERROR


def test_continuation_flood_is_stopped():
    reader = fr.FrameReader(max_header_block=1000)
    wire = fr.frame_header(100, fr.HEADERS, 0, 1) + b"x" * 100
    wire += b"".join(fr.frame_header(100, fr.CONTINUATION, 0, 1) + b"x" * 100 for _ in range(20))
    with pytest.raises(fr.H2Error) as e:
        reader.feed(wire)
    assert e.value.code == fr.ENHANCE_YOUR_CALM


def test_interleaved_frame_inside_header_block_is_a_protocol_error():
    wire = fr.frame_header(3, fr.HEADERS, 0, 1) + b"abc" + fr.ping_frame(b"12345678")
    with pytest.raises(fr.H2Error) as e:
        fr.FrameReader().feed(wire)
    assert e.value.code == fr.PROTOCOL_ERROR


@pytest.mark.parametrize("payload, code", [
    (b"\x00\x04\x80\x00\x00\x00", fr.FLOW_CONTROL_ERROR),  # initial window > 2^31-1
    (b"\x00\x05\x00\x00\x10\x00", fr.PROTOCOL_ERROR),      # max frame size below 16384
    (b"\x00\x02\x00\x00\x00\x02", fr.PROTOCOL_ERROR),      # enable_push = 2
    (b"\x00\x04\x00", fr.FRAME_SIZE_ERROR),                 # not a multiple of 6
])
def test_bad_settings_name_the_error(payload, code):
    with pytest.raises(fr.H2Error) as e:
        fr.parse_settings(payload)
    assert e.value.code == code


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_raise_h2error(data):
    reader = fr.FrameReader()
    try:
        for ftype, flags, sid, payload in reader.feed(data):
            assert ftype != fr.CONTINUATION
            assert 0 <= sid <= fr.MAX_STREAM_ID
    except fr.H2Error as e:
        assert e.code in fr.ERROR_NAMES


@given(st.integers(0, 2**24 - 1), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1),
       st.binary(max_size=3), st.binary(max_size=3))
def test_frame_header_decodes_as_written_with_the_reserved_bit_dropped(length, ftype, flags, sid, before, after):
    import struct

    raw = struct.pack(">HBBBL", length >> 8, length & 0xFF, ftype, flags, sid)
    assert fr.unpack_frame_header(before + raw + after, len(before)) == (length, ftype, flags, sid & fr.MAX_STREAM_ID)
    if sid <= fr.MAX_STREAM_ID:
        assert fr.frame_header(length, ftype, flags, sid) == raw


@given(st.binary(max_size=8), st.integers(0, 8))
def test_read_u32_is_big_endian_and_refuses_short_input(data, pos):
    if len(data) - pos >= 4:
        assert fr.read_u32(data, pos) == int.from_bytes(data[pos:pos + 4], "big")
    else:
        with pytest.raises(ValueError):
            fr.read_u32(data, pos)
    if len(data) - pos < 9:
        with pytest.raises(ValueError):
            fr.unpack_frame_header(data, pos)
