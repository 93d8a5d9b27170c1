"""The fastpath rows of the benchmark: each mode starts the real proxy and carries real calls."""
from __future__ import annotations

import importlib.util

import grpc
import pytest

from fastpath.bench import backend, paths, proc_cpu


@pytest.mark.parametrize("name", ["fastpath", "fastpath-pinned"])
def test_fastpath_path_carries_calls(name, bench_backend, tmp_path):
    ep = paths.REGISTRY[name].start(paths.PathContext(bench_backend, tmp_path / name, timeout_s=30))
    try:
        md = (("x-fastpath-model", "bench"), *ep.metadata)
        with grpc.insecure_channel(ep.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            assert ch.unary_unary(backend.UNARY)(backend.encode_request(1, 99), metadata=md, timeout=10) == b"x" * 99
            msgs = list(ch.unary_stream(backend.STREAM)(backend.encode_request(20, 10), metadata=md, timeout=10))
            assert msgs == [b"x" * 10] * 20
        assert ep.pid is not None and proc_cpu.cpu_seconds(ep.pid) > 0
        counters = ep.check() if ep.check else ""
        if name == "fastpath-pinned":
            assert "pinned_total=0" not in counters and "pinned_total=None" not in counters, counters
    finally:
        ep.stop()


def test_missing_proxy_is_reported_unavailable_not_a_crash(bench_backend, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "fastpath.dataplane.server" else real(n, *a))
    with pytest.raises(paths.PathUnavailable, match="not in this install"):
        paths.REGISTRY["fastpath"].start(paths.PathContext(bench_backend, tmp_path / "fp"))


def test_quick_runs_leave_out_the_slow_paths():
    quick = [p.name for p in paths.resolve(None, quick=True)]
    assert {"direct", "nginx", "haproxy", "envoy", "fastpath"} <= set(quick)
    assert "fastpath-splice" not in quick
    with pytest.raises(ValueError, match="known paths"):
        paths.resolve(["nope"])
