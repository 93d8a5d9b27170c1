"""Each peer's generated config starts the real proxy and carries real gRPC calls."""
from __future__ import annotations

import os

import grpc
import pytest

from fastpath.bench import backend, peers, proc_cpu

from .bench_test_tools import need_tool, which

MD = (("x-fastpath-model", "bench"),)


def _installed(name: str) -> bool:
    if name == "envoy":
        try:
            return os.access(peers.envoy_binary(), os.X_OK)
        except peers.PeerUnavailable:
            return False
    return which(name)


@pytest.mark.parametrize("name", peers.PEERS)
def test_peer_carries_unary_and_streaming_calls(name, bench_backend, tmp_path):
    need_tool(_installed(name), name)
    running = peers.start_peer(name, bench_backend, tmp_path / name, timeout_s=30)
    try:
        assert running.address != bench_backend
        assert running.version and running.version != "unknown"
        with grpc.insecure_channel(running.address) as ch:
            body = ch.unary_unary(backend.UNARY)(backend.encode_request(1, 300), metadata=MD, timeout=10)
            assert body == b"x" * 300
            msgs = list(ch.unary_stream(backend.STREAM)(backend.encode_request(40, 64), metadata=MD, timeout=10))
            assert msgs == [b"x" * 64] * 40
            # a unique request id per call passes as well
            for i in range(3):
                md = MD + (("x-request-id", f"req-{i}"),)
                assert ch.unary_unary(backend.UNARY)(backend.encode_request(1, 5), metadata=md, timeout=10) == b"xxxxx"
        # the proxy itself did the work: its CPU counter moved
        assert proc_cpu.cpu_seconds(running.pid) >= 0
    finally:
        running.stop()
    assert running.proc is not None and running.proc.poll() is not None, "peer still running after stop()"


def test_nginx_runs_one_worker(bench_backend, tmp_path):
    need_tool(which("nginx"), "nginx")
    running = peers.start_peer("nginx", bench_backend, tmp_path / "nginx", timeout_s=30)
    try:
        assert len(proc_cpu.descendants(running.pid)) == 1  # master + exactly one worker
    finally:
        running.stop()
    assert proc_cpu.descendants(running.pid) == []


def test_backend_rejects_a_body_that_is_not_a_shape(bench_backend):
    with grpc.insecure_channel(bench_backend) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(backend.UNARY)(b"\xff\xff\xff", timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
