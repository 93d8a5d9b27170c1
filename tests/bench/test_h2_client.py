"""The lean HTTP/2 gRPC load client: HPACK table tracking and message framing across any split."""
from __future__ import annotations

import asyncio

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.bench import h2_client as h2

names = st.sampled_from([b"x-request-id", b"x-fastpath-model", b"grpc-status", b"content-type", b"x-a", b"te"])
values = st.binary(min_size=0, max_size=40).map(lambda b: b.hex().encode())
header_lists = st.lists(st.tuples(names, values, st.booleans()), min_size=1, max_size=6)


@given(blocks=st.lists(header_lists, min_size=1, max_size=6), huffman=st.booleans())
def test_table_neutral_matches_what_decoding_does_to_the_table(blocks, huffman):
    enc, dec = hpack.Encoder(), hpack.Decoder()
    for hs in blocks:
        headers = [hpack.NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in hs]
        block = enc.encode(headers, huffman=huffman)
        before = list(dec.header_table.dynamic_entries)
        dec.decode(block)
        changed = list(dec.header_table.dynamic_entries) != before
        if h2.table_neutral(block):
            assert not changed
        # a neutral verdict is never given to a block that adds entries
        if changed:
            assert not h2.table_neutral(block)


@given(st.binary(max_size=64))
def test_table_neutral_never_raises(block):
    h2.table_neutral(block)


class _Transport:
    def __init__(self):
        self.out = bytearray()

    def write(self, data):
        self.out += data

    def is_closing(self):
        return False

    def close(self):
        pass

    def get_extra_info(self, name):
        return None


def _server_bytes(sizes: list[int], frame_cut: int, padded: bool, status: bytes) -> bytes:
    enc = hpack.Encoder()
    body = b"".join(h2.grpc_message(bytes([i % 251]) * n) for i, n in enumerate(sizes))
    out = h2.frame(h2.SETTINGS, 0, 0)
    out += h2.frame(h2.HEADERS, h2.END_HEADERS, 1, enc.encode([(":status", "200"), ("content-type", "application/grpc")]))
    for i in range(0, len(body), frame_cut):
        chunk = body[i:i + frame_cut]
        if padded:
            out += h2.frame(h2.DATA, h2.PADDED, 1, bytes([3]) + chunk + b"\0\0\0")
        else:
            out += h2.frame(h2.DATA, 0, 1, chunk)
    out += h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, enc.encode([("grpc-status", status)]))
    return out


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=12), frame_cut=st.integers(1, 400),
       padded=st.booleans(), splits=st.lists(st.integers(1, 200), max_size=30))
def test_counts_every_message_however_the_bytes_are_cut(sizes, frame_cut, padded, splits):
    async def go():
        conn = h2.H2GrpcConnection("t:1")
        conn.connection_made(_Transport())
        task = asyncio.get_running_loop().create_task(conn.call("/s/m", b"req", (("k", "v"),)))
        await asyncio.sleep(0)
        data = _server_bytes(sizes, frame_cut, padded, b"0")
        pos = 0
        for n in splits:
            conn.data_received(data[pos:pos + n])
            pos += n
        conn.data_received(data[pos:])
        first, msgs = await asyncio.wait_for(task, 5)
        assert msgs == len(sizes)
        assert first >= 0
    asyncio.run(go())


def test_a_failed_status_is_an_error_with_its_code():
    async def go():
        conn = h2.H2GrpcConnection("t:1")
        conn.connection_made(_Transport())
        task = asyncio.get_running_loop().create_task(conn.call("/s/m", b"req"))
        await asyncio.sleep(0)
        conn.data_received(_server_bytes([3], 100, False, b"14"))
        try:
            await task
        except h2.GrpcCallError as e:
            assert "14" in str(e)
        else:
            raise AssertionError("grpc-status 14 accepted as success")
    asyncio.run(go())
