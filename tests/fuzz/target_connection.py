"""Fuzz target: the sans-IO `H2Connection` (server side) fed a client's byte stream cut at fuzzed points.

Input layout: as target_frames (byte 0: number of cuts in the low 4 bits;
one byte per cut; then the stream, which follows the client preface).

Contract checked: nothing escapes `receive_data` (every violation is answered
on the wire); what the connection writes parses as well-formed frames; once it
sent GOAWAY for an error it is closed and writes nothing more; every stream it
still tracks is in a state of the §5.1 table and has an odd id no greater than
the last one the peer opened; its receive windows never go below zero.
"""
from __future__ import annotations

from fastpath.h2 import frames as fr
from fastpath.h2 import stream_state as ss
from fastpath.h2.connection import H2Connection
from fastpath.h2.constraints import Constraints

from .fuzz_input import FuzzInput


class _Handler:
    def __init__(self) -> None:
        self.conn: H2Connection | None = None
        self.errors = 0

    def on_headers(self, st, headers, end):
        assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
        st.owner = self

    def on_data(self, st, data, end):
        assert isinstance(data, bytes)
        self.conn.credit(st.sid, len(data))

    def on_reset(self, st, code):
        pass

    def on_stream_error(self, st, code, message):
        assert message

    def on_refused(self, sid, why, message):
        assert message

    def on_goaway(self, last, code, debug):
        pass

    def on_connection_error(self, code, message):
        assert code in fr.ERROR_NAMES and message
        self.errors += 1

    def on_limit(self, name):
        pass


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    head = src.byte()
    fractions = [src.byte() for _ in range(head & 0x0F)]
    stream = src.rest()
    cuts = sorted({f * len(stream) // 256 for f in fractions})
    bounds = [0, *cuts, len(stream)]
    pieces = [fr.PREFACE] + [stream[a:b] for a, b in zip(bounds, bounds[1:])]

    h = _Handler()
    conn = H2Connection(Constraints(max_concurrent_streams=16), False, h)
    h.conn = conn
    conn.initiate()
    reader = fr.FrameReader(1 << 24, 1 << 24)
    for piece in pieces:
        was_closed = conn.closed
        conn.receive_data(piece)
        out = conn.data_to_send()
        if was_closed:
            assert out == b"", "a closed connection wrote more frames"
        for ftype, flags, sid, payload in reader.feed(out):
            assert 0 <= sid <= fr.MAX_STREAM_ID
        assert reader.error is None
        assert conn.recv_window >= 0
        for sid, st in conn.streams.items():
            assert st.sid == sid and sid & 1 and sid <= conn.last_peer_stream
            assert st.state in (ss.OPEN, ss.HALF_CLOSED_LOCAL, ss.HALF_CLOSED_REMOTE), st.state
            assert st.recv_window >= 0
    assert h.errors <= 1
