"""The load-client process: real calls to the bench backend with either client."""
from __future__ import annotations

import pytest

from fastpath.bench import load, procs


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = load.LoadClient(log_path=tmp_path_factory.mktemp("load") / "client.log")
    yield c
    c.close()
    assert c.proc.poll() is not None


@pytest.mark.parametrize("which", load.CLIENTS)
@pytest.mark.parametrize("unique", [False, True])
def test_streams_arrive_whole_and_the_window_is_bracketed(client, bench_backend, which, unique):
    events = []
    w = load.Workload(bench_backend, "stream", concurrency=2, duration_s=0.2, warmup_s=0.05, n=7, size=33,
                      unique_ids=unique, client=which)
    res = client.run(w, on_start=lambda: events.append("start"), on_end=lambda: events.append("end"))
    assert events == ["start", "end"]
    assert res["errors"] == 0, res["first_error"]
    assert res["calls"] > 0
    assert res["messages"] == 7 * res["calls"]
    assert len(res["latencies_us"]) == res["calls"]
    assert all(x > 0 for x in res["latencies_us"])


@pytest.mark.parametrize("which", load.CLIENTS)
def test_unary_calls(client, bench_backend, which):
    res = client.run(load.Workload(bench_backend, "unary", concurrency=3, duration_s=0.15, warmup_s=0.05, client=which))
    assert res["errors"] == 0, res["first_error"]
    assert res["calls"] == res["messages"] > 0


def test_unreachable_target_is_an_error_with_the_reason(client):
    port = procs.free_port()  # nothing listens there
    with pytest.raises(load.LoadError) as e:
        client.run(load.Workload(f"127.0.0.1:{port}", "unary", duration_s=0.1, warmup_s=0))
    assert "refused" in str(e.value).lower() or "connect" in str(e.value).lower()
    # the client process survives and serves the next workload
    assert client.proc.poll() is None


def test_unique_ids_differ_and_keep_the_header_shape():
    md = load._Metadata(unique=True)
    a, b = md.next(), md.next()
    assert a != b
    fixed = load._Metadata(unique=False).next()
    assert [k for k, _ in a] == [k for k, _ in fixed]
    assert [len(v) for _, v in a] == [len(v) for _, v in fixed]


def test_bad_workload_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="kind"):
        load.Workload("127.0.0.1:1", "bidi").validate()
