"""Failover: invisible before the first response byte, a clear status after it."""
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from fastpath.ports import free_port

from .conftest import NEAR, server_stream, unary


def test_backend_refusing_connections_fails_over_invisibly(harness):
    dead = free_port()  # nothing listens here
    b = harness.add_backend("b")
    harness.start_proxy([
        {"name": "a", "address": f"127.0.0.1:{dead}", "region": "r1", "cost_per_1k_tokens": 1.0, "models": ["m"]},
        {"name": "b", "address": f"127.0.0.1:{b.port}", "region": "r2", "cost_per_1k_tokens": 1.0, "models": ["m"]},
    ])
    stub = unary(harness.channel())
    for i in range(5):
        resp, call = stub.with_call(b"%d" % i, metadata=NEAR, timeout=5)
        assert resp == b"b:%d" % i
        assert dict(call.trailing_metadata())["x-fastpath-backend"] == "b"


def test_backend_answering_unavailable_before_any_message_fails_over(harness):
    harness.simple("a", "b")
    harness.backends["a"].refuse = True
    resp, call = unary(harness.channel()).with_call(b"q", metadata=NEAR, timeout=5)
    assert resp == b"b:q"
    assert harness.backends["a"].calls >= 1  # a was tried first, and the client never saw it


def test_client_stream_body_is_replayed_on_failover(harness):
    from .conftest import client_stream

    harness.simple("a", "b")
    harness.backends["a"].refuse = True
    msgs = [b"x" * 1000] * 10
    assert client_stream(harness.channel())(iter(msgs), metadata=NEAR, timeout=5) == b"10,10000"


@pytest.fixture
def dying_backend():
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("echo_process.py")), "3"],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield port
    proc.kill()
    proc.wait()


def test_backend_dying_mid_stream_ends_only_that_call_naming_the_backend(harness, dying_backend):
    b = harness.add_backend("b")
    harness.start_proxy([
        {"name": "a", "address": f"127.0.0.1:{dying_backend}", "region": "r1", "cost_per_1k_tokens": 1.0, "models": ["m"]},
        {"name": "b", "address": f"127.0.0.1:{b.port}", "region": "r2", "cost_per_1k_tokens": 1.0, "models": ["m"]},
    ])
    it = server_stream(harness.channel())(b"100,100", metadata=NEAR, timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for m in it:
            got.append(m)
    assert len(got) == 3
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "backend a" in e.value.details()
    assert "127.0.0.1" not in e.value.details()  # names the backend, never its address
    # The next call goes elsewhere (a is gone) and succeeds.
    resp = unary(harness.channel())(b"after", metadata=NEAR, timeout=5)
    assert resp == b"b:after"


def test_all_backends_down_gives_unavailable(harness):
    harness.start_proxy([
        {"name": "a", "address": f"127.0.0.1:{free_port()}", "region": "r1", "cost_per_1k_tokens": 1.0, "models": ["m"]},
        {"name": "b", "address": f"127.0.0.1:{free_port()}", "region": "r2", "cost_per_1k_tokens": 1.0, "models": ["m"]},
    ])
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        unary(harness.channel())(b"x", metadata=NEAR, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "backend" in e.value.details()
    assert time.monotonic() - t0 < 4  # answered, not left to the deadline
