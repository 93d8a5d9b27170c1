"""The sans-IO HTTP/2 connection, fed bytes: stream states, both windows, limits and validation.

No sockets: frames are built with `fastpath.h2.frames` and header blocks with
the reference `hpack` package; what the connection answers is read back with
`data_to_send()` and parsed with a FrameReader.
"""
from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.h2 import frames as fr
from fastpath.h2 import stream_state as ss
from fastpath.h2 import validation
from fastpath.h2.connection import H2Connection, Half
from fastpath.h2.constraints import Constraints

REQ = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Svc/Call"), (":authority", "x"),
       ("content-type", "application/grpc"), ("te", "trailers")]


class Recorder:
    """A handler that keeps every callback; `echo` answers each request with a complete response."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.conn: H2Connection | None = None

    def on_headers(self, st, headers, end):
        self.calls.append(("headers", st.sid, headers, end))

    def on_data(self, st, data, end):
        self.calls.append(("data", st.sid, data, end))

    def on_reset(self, st, code):
        self.calls.append(("reset", st.sid, code))

    def on_stream_error(self, st, code, message):
        self.calls.append(("stream_error", st.sid, code, message))

    def on_refused(self, sid, why, message):
        self.calls.append(("refused", sid, why, message))

    def on_goaway(self, last, code, debug):
        self.calls.append(("goaway", last, code))

    def on_connection_error(self, code, message):
        self.calls.append(("connection_error", code, message))

    def on_limit(self, name):
        self.calls.append(("limit", name))

    def kinds(self):
        return [c[0] for c in self.calls]


class Peer:
    """A client talking to a server-side H2Connection through bytes."""

    def __init__(self, constraints: Constraints | None = None, settings: dict | None = None) -> None:
        self.handler = Recorder()
        self.conn = H2Connection(constraints or Constraints(), False, self.handler)
        self.conn.initiate()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.reader = fr.FrameReader(1 << 24, 1 << 20)
        self.send(fr.PREFACE + fr.settings_frame(settings or {}))
        self.frames()  # our SETTINGS, window grant, SETTINGS ACK

    def send(self, data: bytes) -> None:
        self.conn.receive_data(data)

    def headers(self, sid: int, headers=REQ, end: bool = False) -> None:
        self.send(fr.headers_frames(sid, self.enc.encode(headers), end))

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        return self.reader.feed(self.conn.data_to_send())

    def rst(self, sid_expected: int) -> int | None:
        for t, f, s, p in self.frames():
            if t == fr.RST_STREAM and s == sid_expected:
                return fr.parse_rst_stream(p)
        return None

    def goaway(self) -> int | None:
        for t, f, s, p in self.frames():
            if t == fr.GOAWAY:
                return fr.parse_goaway(p)[1]
        return None


# -- the transition table -------------------------------------------------------
def test_table_follows_rfc_9113_section_5_1():
    t = ss.transition
    assert t(ss.IDLE, ss.RECV_HEADERS) == ss.OPEN
    assert t(ss.OPEN, ss.RECV_END_STREAM) == ss.HALF_CLOSED_REMOTE
    assert t(ss.OPEN, ss.SEND_END_STREAM) == ss.HALF_CLOSED_LOCAL
    assert t(ss.HALF_CLOSED_REMOTE, ss.SEND_END_STREAM) == ss.CLOSED
    assert t(ss.HALF_CLOSED_LOCAL, ss.RECV_END_STREAM) == ss.CLOSED
    assert t(ss.HALF_CLOSED_REMOTE, ss.RECV_DATA) == ss.STREAM_CLOSED_ERROR
    assert t(ss.HALF_CLOSED_REMOTE, ss.RECV_HEADERS) == ss.STREAM_CLOSED_ERROR
    for ev in (ss.RECV_DATA, ss.RECV_RST_STREAM, ss.RECV_WINDOW_UPDATE):
        assert t(ss.IDLE, ev) == ss.PROTOCOL_ERROR_CONN
    assert t(ss.IDLE, ss.RECV_PRIORITY) == ss.IDLE
    for state in range(5):  # RST_STREAM received closes any stream that exists
        if state != ss.IDLE:
            assert t(state, ss.RECV_RST_STREAM) == ss.CLOSED


# -- stream states on the wire ---------------------------------------------------
def test_request_reaches_the_handler_and_a_full_exchange_closes_without_rst():
    p = Peer()
    p.headers(1)
    p.send(fr.data_frame(1, b"hello", True))
    assert p.handler.calls[0][:2] == ("headers", 1) and p.handler.calls[1] == ("data", 1, b"hello", True)
    st = p.conn.streams[1]
    assert st.state == ss.HALF_CLOSED_REMOTE
    half = Half(lambda n: None)
    half.attach(p.conn, 1)
    p.conn.send_headers(1, [(b":status", b"200")], end_stream=False)
    half.trailers = [(b"grpc-status", b"0")]
    half.push(b"reply", True)
    assert 1 not in p.conn.streams
    p.conn.close_stream(1)  # the application is done: nothing more to send
    kinds = [t for t, *_ in p.frames()]
    assert fr.RST_STREAM not in kinds and kinds.count(fr.HEADERS) == 2 and fr.DATA in kinds


def test_data_after_end_stream_is_stream_closed():
    p = Peer()
    p.headers(1, end=True)
    p.send(fr.data_frame(1, b"x"))
    assert p.rst(1) == fr.STREAM_CLOSED


def test_headers_on_half_closed_remote_is_stream_closed():
    p = Peer()
    p.headers(1, end=True)
    p.headers(1, [("grpc-status", "0")], end=True)
    assert p.rst(1) == fr.STREAM_CLOSED


@pytest.mark.parametrize("frame", [
    fr.data_frame(1, b"x"),
    fr.window_update_frame(1, 10),
    fr.rst_stream_frame(1, fr.CANCEL),
], ids=["data", "window_update", "rst_stream"])
def test_frames_on_idle_streams_are_connection_errors(frame):
    p = Peer()
    p.send(frame)
    assert p.goaway() == fr.PROTOCOL_ERROR


def test_decreasing_stream_id_is_protocol_error():
    p = Peer()
    p.headers(5)
    p.headers(3)
    assert p.goaway() == fr.PROTOCOL_ERROR


def test_even_stream_id_from_a_client_is_protocol_error():
    p = Peer()
    p.headers(2)
    assert p.goaway() == fr.PROTOCOL_ERROR


def test_frames_on_a_stream_we_reset_are_ignored():
    p = Peer()
    p.headers(1)
    p.conn.reset_stream(1, fr.CANCEL)
    p.frames()
    p.send(fr.data_frame(1, b"in flight"))
    assert p.frames() == [] and not p.conn.closed


def test_data_on_a_stream_the_client_reset_is_stream_closed():
    p = Peer()
    p.headers(1)
    p.send(fr.rst_stream_frame(1, fr.CANCEL))
    p.send(fr.data_frame(1, b"x"))
    assert p.rst(1) == fr.STREAM_CLOSED
    assert ("reset", 1, fr.CANCEL) in p.handler.calls


def test_closed_streams_are_remembered_up_to_a_bound_newest_kept():
    from fastpath.h2.connection import _RECENT, NOT_REMEMBERED, RESET_BY_US

    p = Peer()
    last = 4 * _RECENT + 1
    for sid in range(1, last + 2, 2):  # each request refused or answered and closed
        p.headers(sid)
        p.conn.reset_stream(sid, fr.CANCEL)
        p.frames()
    kinds = [p.conn.closed_kind(sid) for sid in range(1, last + 2, 2)]
    assert kinds[-_RECENT:] == [RESET_BY_US] * _RECENT  # the newest _RECENT
    assert set(kinds[:-_RECENT]) == {NOT_REMEMBERED}
    # frames for a stream still remembered as reset by us are ignored; a forgotten one is an old stream
    p.send(fr.data_frame(last, b"late"))
    assert p.frames() == [] and not p.conn.closed


def test_stream_errors_on_unknown_streams_stay_bounded():
    from fastpath.h2.connection import _RECENT, NOT_REMEMBERED, RESET_BY_US

    p = Peer()
    for sid in range(1, 6 * _RECENT, 2):
        p.conn.stream_error(sid, fr.PROTOCOL_ERROR, "bad")
    assert len(p.conn._closed) == _RECENT
    assert p.conn.closed_kind(6 * _RECENT - 1) == RESET_BY_US
    assert p.conn.closed_kind(1) == NOT_REMEMBERED


def test_a_late_close_of_an_old_stream_does_not_forget_a_newer_one():
    """A long-lived stream closing after _RECENT newer ones keeps the newer id its slot shares."""
    from fastpath.h2.connection import _RECENT, NOT_REMEMBERED, RESET_BY_US

    p = Peer()
    p.headers(1)  # stays open
    newer = 1 + 2 * _RECENT  # the id that shares stream 1's slot
    for sid in range(3, newer + 1, 2):
        p.headers(sid)
        p.conn.reset_stream(sid, fr.CANCEL)
    p.frames()
    p.conn.reset_stream(1, fr.CANCEL)
    assert p.conn.closed_kind(newer) == RESET_BY_US
    assert p.conn.closed_kind(1) == NOT_REMEMBERED
    assert p.conn.closed_kind(3) == RESET_BY_US


def test_first_frame_must_be_settings():
    h = Recorder()
    c = H2Connection(Constraints(), False, h)
    c.receive_data(fr.PREFACE + fr.ping_frame(b"12345678"))
    assert h.kinds() == ["connection_error"] and h.calls[0][1] == fr.PROTOCOL_ERROR


def test_bad_preface_is_protocol_error():
    h = Recorder()
    c = H2Connection(Constraints(), False, h)
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert h.calls[0][:2] == ("connection_error", fr.PROTOCOL_ERROR)


@pytest.mark.parametrize("frame,code", [
    (fr.frame_header(5, fr.PRIORITY, 0, 0) + b"\x00" * 5, fr.PROTOCOL_ERROR),
    (fr.frame_header(8, fr.GOAWAY, 0, 1) + b"\x00" * 8, fr.PROTOCOL_ERROR),
    (fr.frame_header(4, fr.PING, 0, 0) + b"\x00" * 4, fr.FRAME_SIZE_ERROR),
    (fr.frame_header(8, fr.PING, 0, 1) + b"\x00" * 8, fr.PROTOCOL_ERROR),
    (fr.frame_header(3, fr.RST_STREAM, 0, 1) + b"\x00" * 3, fr.FRAME_SIZE_ERROR),
    (fr.frame_header(1, fr.SETTINGS, fr.ACK, 0) + b"\x00", fr.FRAME_SIZE_ERROR),
    (fr.frame_header(0, fr.SETTINGS, 0, 1), fr.PROTOCOL_ERROR),
    (fr.frame_header(0, fr.CONTINUATION, fr.END_HEADERS, 1), fr.PROTOCOL_ERROR),
], ids=["priority_stream0", "goaway_on_stream", "ping_short", "ping_on_stream", "rst_short",
        "settings_ack_payload", "settings_on_stream", "lone_continuation"])
def test_frame_rules_are_connection_errors(frame, code):
    p = Peer()
    p.send(frame)
    assert p.goaway() == code


def test_priority_of_wrong_length_is_a_stream_error_frame_size():
    p = Peer()
    p.send(fr.frame_header(4, fr.PRIORITY, 0, 1) + b"\x00" * 4)
    assert p.rst(1) == fr.FRAME_SIZE_ERROR and not p.conn.closed


def test_self_dependent_priority_is_a_stream_error():
    p = Peer()
    p.send(fr.frame_header(5, fr.PRIORITY, 0, 1) + b"\x00\x00\x00\x01\x10")
    assert p.rst(1) == fr.PROTOCOL_ERROR


# -- flow control --------------------------------------------------------------
def test_connection_window_overflow_is_flow_control_error():
    p = Peer()
    p.send(fr.window_update_frame(0, fr.MAX_WINDOW))
    assert p.goaway() == fr.FLOW_CONTROL_ERROR


def test_stream_window_overflow_is_a_stream_error():
    p = Peer()
    p.headers(1)
    half = Half(lambda n: None)
    half.attach(p.conn, 1)
    p.send(fr.window_update_frame(1, fr.MAX_WINDOW))
    assert p.rst(1) == fr.FLOW_CONTROL_ERROR and not p.conn.closed


def test_initial_window_change_that_overflows_is_a_connection_flow_control_error():
    p = Peer()
    p.headers(1)
    half = Half(lambda n: None)
    half.attach(p.conn, 1)
    p.send(fr.window_update_frame(1, fr.MAX_WINDOW - fr.DEFAULT_WINDOW))
    p.send(fr.settings_frame({fr.SETTINGS_INITIAL_WINDOW_SIZE: fr.DEFAULT_WINDOW + 1}))
    assert p.goaway() == fr.FLOW_CONTROL_ERROR


def test_data_beyond_the_stream_window_is_a_stream_error():
    p = Peer(Constraints(stream_window=100, max_frame_size=16384))
    p.headers(1)
    p.send(fr.data_frame(1, b"x" * 101))
    assert p.rst(1) == fr.FLOW_CONTROL_ERROR and not p.conn.closed


def test_data_beyond_the_connection_window_is_a_connection_error():
    p = Peer(Constraints(connection_window=fr.DEFAULT_WINDOW, stream_window=1 << 20, max_frame_size=1 << 17))
    p.headers(1)
    p.send(fr.data_frame(1, b"x" * (fr.DEFAULT_WINDOW + 1)))
    assert p.goaway() == fr.FLOW_CONTROL_ERROR


def test_consumed_bytes_are_given_back_per_stream_in_batches():
    p = Peer(Constraints(stream_window=1000))
    p.headers(1)
    p.send(fr.data_frame(1, b"x" * 200))
    p.conn.credit(1, 200)
    assert [t for t, *_ in p.frames()] == []  # below a quarter of the window: no update yet
    p.send(fr.data_frame(1, b"x" * 100))
    p.conn.credit(1, 100)
    ups = [(s, fr.parse_window_update(pl, s)) for t, f, s, pl in p.frames() if t == fr.WINDOW_UPDATE]
    assert ups == [(1, 300)]


def test_sending_waits_for_the_peers_window_and_splits_frames():
    p = Peer(settings={fr.SETTINGS_INITIAL_WINDOW_SIZE: 100})
    p.headers(1, end=True)
    sent = []
    half = Half(sent.append)
    half.attach(p.conn, 1)
    p.conn.send_headers(1, [(b":status", b"200")], end_stream=False)
    half.push(b"y" * 250, True)
    data = [pl for t, f, s, pl in p.frames() if t == fr.DATA]
    assert [len(d) for d in data] == [100] and half.pending_bytes == 150
    p.send(fr.window_update_frame(1, 1000))
    frames = [(t, f, len(pl)) for t, f, s, pl in p.frames() if t == fr.DATA]
    assert frames == [(fr.DATA, fr.END_STREAM, 150)] and sum(sent) == 250 and half.done


# -- limits ----------------------------------------------------------------------
def test_window_update_flood_is_enhance_your_calm():
    p = Peer(Constraints(window_update_base=10, window_update_per_stream=1, window_update_per_data_frame=1))
    p.send(fr.window_update_frame(0, 1) * 20)
    assert p.goaway() == fr.ENHANCE_YOUR_CALM
    assert ("limit", "WINDOW_UPDATE flood") in p.handler.calls


def test_window_updates_the_data_we_sent_justifies_are_fine():
    p = Peer(Constraints(window_update_base=10, window_update_per_stream=1, window_update_per_data_frame=2))
    p.headers(1, end=True)
    half = Half(lambda n: None)
    half.attach(p.conn, 1)
    p.conn.send_headers(1, [(b":status", b"200")], end_stream=False)
    for _ in range(20):
        half.push(b"z", False)
    p.send(fr.window_update_frame(0, 1) * 40)
    assert not p.conn.closed


def test_rapid_reset_is_enhance_your_calm():
    p = Peer(Constraints(resets_per_s=1, reset_burst=5))
    for sid in range(1, 40, 2):
        p.headers(sid)
        p.send(fr.rst_stream_frame(sid, fr.CANCEL))
    assert p.goaway() == fr.ENHANCE_YOUR_CALM


def test_empty_data_flood_is_enhance_your_calm():
    p = Peer(Constraints(max_consecutive_empty_data=5))
    p.headers(1)
    p.send(fr.data_frame(1, b"") * 10)
    assert p.goaway() == fr.ENHANCE_YOUR_CALM


def test_concurrent_streams_beyond_the_limit_are_refused():
    p = Peer(Constraints(max_concurrent_streams=2))
    for sid in (1, 3, 5):
        p.headers(sid)
    assert p.rst(5) == fr.REFUSED_STREAM and set(p.conn.streams) == {1, 3}


# -- validation ------------------------------------------------------------------
MALFORMED = {
    "connection_header": REQ + [("connection", "keep-alive")],
    "transfer_encoding": REQ + [("transfer-encoding", "chunked")],
    "upgrade": REQ + [("upgrade", "h2c")],
    "te_not_trailers": REQ[:-1] + [("te", "gzip")],
    "uppercase_name": REQ + [("X-Upper", "1")],
    "space_in_name": REQ + [("x bad", "1")],
    "cr_in_value": REQ + [("x-v", "a\rb")],
    "lf_in_value": REQ + [("x-v", "a\nb")],
    "nul_in_value": REQ + [("x-v", "a\x00b")],
    "leading_space": REQ + [("x-v", " a")],
    "trailing_space": REQ + [("x-v", "a ")],
    "pseudo_after_regular": REQ[:3] + [("x-a", "1"), (":authority", "x")],
    "duplicate_pseudo": REQ + [],
    "unknown_pseudo": [(":foo", "bar")] + REQ,
    "response_pseudo": [(":status", "200")] + REQ,
    "missing_method": REQ[1:],
    "missing_scheme": [REQ[0]] + REQ[2:],
    "missing_path": REQ[:2] + REQ[3:],
    "empty_path": REQ[:2] + [(":path", "")] + REQ[3:],
}
MALFORMED["duplicate_pseudo"] = REQ[:1] + [(":method", "GET")] + REQ[1:]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_are_refused_and_never_reach_the_handler(name):
    p = Peer()
    p.headers(1, MALFORMED[name])
    assert p.rst(1) == fr.PROTOCOL_ERROR
    assert [c[0] for c in p.handler.calls] == ["refused"] and p.handler.calls[0][2] == "malformed"
    assert not p.conn.closed


def test_pseudo_headers_in_trailers_are_a_stream_error():
    p = Peer()
    p.headers(1)
    p.headers(1, [(":path", "/x")], end=True)
    assert p.rst(1) == fr.PROTOCOL_ERROR


def test_trailers_without_end_stream_are_a_stream_error():
    p = Peer()
    p.headers(1)
    p.headers(1, [("x-a", "1")], end=False)
    assert p.rst(1) == fr.PROTOCOL_ERROR


@pytest.mark.parametrize("body,end_len", [(b"abc", 5), (b"abcdef", 5)])
def test_content_length_must_match_the_data(body, end_len):
    p = Peer()
    p.headers(1, REQ + [("content-length", str(end_len))])
    p.send(fr.data_frame(1, body, True))
    assert p.rst(1) == fr.PROTOCOL_ERROR


def test_content_length_that_matches_is_fine():
    p = Peer()
    p.headers(1, REQ + [("content-length", "3")])
    p.send(fr.data_frame(1, b"abc", True))
    assert p.handler.calls[-1] == ("data", 1, b"abc", True)


def test_validation_verdict_is_cached_per_header_list():
    p = Peer()
    p.headers(1, end=True)
    p.headers(3, end=True)  # the same block again: HPACK decodes to the same list
    assert [c[0] for c in p.handler.calls] == ["headers", "headers"]


_name = st.binary(min_size=1, max_size=12)
_value = st.binary(max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_name, _value), max_size=6))
def test_request_validation_agrees_with_the_rules(extra):
    headers = [(n.encode(), v.encode()) for n, v in REQ] + extra
    err = validation.request_error(headers)
    bad = False
    for n, v in extra:
        if n.startswith(b":"):
            bad = True
        elif any(c not in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz" for c in n):
            bad = True
        elif any(c in b"\x00\r\n" for c in v) or v[:1] in (b" ", b"\t") or v[-1:] in (b" ", b"\t"):
            bad = True
        elif n in validation.CONNECTION_SPECIFIC or (n == b"te" and v != b"trailers"):
            bad = True
    assert (err is not None) == bad, (extra, err)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=12))
def test_pseudo_header_values_follow_the_field_value_rules(path):
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path)]
    bad = any(c in b"\x00\r\n" for c in path) or path[:1] in (b" ", b"\t") or path[-1:] in (b" ", b"\t")
    assert (validation.request_error(headers) is not None) == bad, path


# -- client side -----------------------------------------------------------------
def test_client_side_response_validation_and_unknown_streams():
    h = Recorder()
    c = H2Connection(Constraints(), True, h)
    c.initiate()
    assert c.data_to_send().startswith(fr.PREFACE)
    enc = hpack.Encoder()
    c.receive_data(fr.settings_frame({}))
    st1 = c.open_stream(owner="call")
    c.send_headers(st1.sid, [(b":method", b"POST")], end_stream=True)
    c.receive_data(fr.headers_frames(1, enc.encode([(":path", "/x")]), True))  # not a response
    assert h.calls[-1][:3] == ("stream_error", 1, fr.PROTOCOL_ERROR)
    c.receive_data(fr.headers_frames(7, enc.encode([(":status", "200")]), True))  # never opened
    assert h.calls[-1][:2] == ("connection_error", fr.PROTOCOL_ERROR)
