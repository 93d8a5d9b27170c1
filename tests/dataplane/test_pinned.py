"""Pinned mode: a session's connection is routed once and relayed verbatim; repeat sessions go to the kernel."""
import time

import grpc
import pytest

from tests.support.requirements import missing

from .conftest import bidi, server_stream, unary

SESSION = (("x-fastpath-session", "s-1"), ("x-fastpath-region", "near"))


def flows(harness):
    return harness.loop.call(harness.proxy.flows)


def test_session_connection_is_pinned_and_relayed_verbatim(harness):
    harness.simple("a", "b")
    ch = harness.channel()
    stub = unary(ch)
    for i in range(5):
        resp, call = stub.with_call(b"%d" % i, metadata=SESSION, timeout=5)
        assert resp == b"a:%d" % i
        trailers = dict(call.trailing_metadata())
        assert trailers["x-backend-name"] == "a"
        assert "x-fastpath-backend" not in trailers  # verbatim: the proxy adds nothing
    # Later calls on the connection follow it, whatever their own metadata says.
    resp = stub(b"x", metadata=(("x-fastpath-region", "far"),), timeout=5)
    assert resp == b"a:x"
    [row] = flows(harness)
    assert (row["session"], row["backend"], row["path"]) == ("s-1", "a", "python")
    assert row["bytes_python"] > 0


def test_pinned_streams_are_not_buffered_and_stay_byte_exact(harness):
    harness.simple("a")
    b = harness.backends["a"]
    ch = harness.channel()
    it = server_stream(ch)(b"3,100,gate", metadata=SESSION, timeout=10)
    assert next(it).startswith(b"00000000")
    harness.loop.call(b.gate.set)
    assert len(list(it)) == 2
    msgs = list(server_stream(ch)(b"20,300000", metadata=SESSION, timeout=20))
    assert [m[:8] for m in msgs] == [b"%08d" % i for i in range(20)] and all(len(m) == 300000 for m in msgs)
    got = list(bidi(ch)(iter([b"p%d" % i for i in range(10)]), metadata=SESSION, timeout=10))
    assert got == [b"a:p%d" % i for i in range(10)]


def test_returning_session_goes_back_to_its_backend(harness):
    harness.simple("a", "b")
    first = unary(harness.channel()).with_call(b"1", metadata=(("x-fastpath-session", "s-9"), ("x-fastpath-region", "far")),
                                               timeout=5)[1]
    backend = dict(first.trailing_metadata())["x-backend-name"]
    assert backend == "b"  # far clients start on b
    # A new connection of the same session, now claiming the other region, still lands on b (its KV cache).
    again = unary(harness.channel()).with_call(b"2", metadata=(("x-fastpath-session", "s-9"), ("x-fastpath-region", "near")),
                                               timeout=5)[1]
    assert dict(again.trailing_metadata())["x-backend-name"] == "b"


def test_connection_without_session_stays_routed(harness):
    harness.simple("a")
    _, call = unary(harness.channel()).with_call(b"q", metadata=(("x-fastpath-region", "near"),), timeout=5)
    assert dict(call.trailing_metadata())["x-fastpath-backend"] == "a"
    assert flows(harness) == []


def test_pinned_flow_is_forgotten_when_the_client_leaves(harness):
    from fastpath.h2 import frames as fr

    from .rawh2 import RawH2

    harness.simple("a")
    c = RawH2(harness.address)
    c.read_until(lambda fs: any(t == fr.SETTINGS and not f & fr.ACK for t, f, *_ in fs))
    c.send(fr.settings_frame(ack=True))
    sid = c.call("/test.Echo/Unary", b"x", metadata=SESSION)
    c.read_until(lambda fs: any(t == fr.HEADERS and s == sid and f & fr.END_STREAM for t, f, s, _ in fs))
    assert len(flows(harness)) == 1
    c.close()
    t_end = time.monotonic() + 5
    while flows(harness) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert flows(harness) == []


def _bpf_problem() -> str:
    from tests.offload.conftest import _bpf_problem as problem

    return problem()


@pytest.fixture
def bpf_ready():
    problem = _bpf_problem()
    if problem:
        missing(f"BPF unavailable: {problem}")


@pytest.mark.bpf
def test_repeat_session_is_spliced_in_the_kernel(harness, bpf_ready):
    proxy = harness.simple("a", offload="ebpf")
    assert proxy.offload.name == "ebpf"
    # First visit: learned, stays in Python.
    ch1 = grpc.insecure_channel(harness.address)
    assert unary(ch1)(b"first", metadata=SESSION, timeout=5) == b"a:first"
    ch1.close()
    # The session comes back on a new connection: offloaded right after its first call is routed.
    ch2 = harness.channel()
    stub = server_stream(ch2)
    assert unary(ch2)(b"hello", metadata=SESSION, timeout=5) == b"a:hello"
    t_end = time.monotonic() + 5
    while time.monotonic() < t_end:
        rows = [r for r in flows(harness) if r["path"] == "kernel"]
        if rows:
            break
        time.sleep(0.05)
    [row] = rows
    python_before = row["bytes_python"]
    msgs = list(stub(b"50,100000", metadata=SESSION, timeout=20))
    assert [m[:8] for m in msgs] == [b"%08d" % i for i in range(50)] and all(len(m) == 100000 for m in msgs)
    [row] = [r for r in flows(harness) if r["path"] == "kernel"]
    assert row["bytes_python"] == python_before          # Python moved none of it
    assert row["bytes_offload"] >= 50 * 100000           # the kernel moved all of it
    ch2.close()
    t_end = time.monotonic() + 5
    while flows(harness) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert flows(harness) == []
    assert proxy.offload.list() == []
