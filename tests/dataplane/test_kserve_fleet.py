"""A stock KServe v2 client, pointed at `fastpath proxy`, works unchanged against the simulated fleet."""
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from fastpath.config import load_config, parse_config, with_ports
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.fleet import FleetProcess
from fastpath.sim.metrics import parse_prometheus_text

from fastpath.ports import free_port_block
from tests.support.waiting import wait_for

SITES = ["use1-a100", "use1-l4", "euw1-l4"]


def port_block(n: int) -> int:
    return free_port_block(n)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cfg = with_ports(load_config(), port_block(20))
    raw = dict(cfg.raw)
    raw["backends"] = [b for b in raw["backends"] if b["name"] in SITES]
    cfg = parse_config(raw, "test")
    path = cfg.write(tmp_path_factory.mktemp("cfg") / "fastpath.toml")
    with FleetProcess(cfg):
        proxy = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "proxy", "--config", str(path), "--no-controller"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proxy.stdout.readline()
        assert "listening on" in line, proxy.stderr.read()
        try:
            yield cfg, proxy
        finally:
            if proxy.poll() is None:
                proxy.send_signal(signal.SIGTERM)
                proxy.wait(10)


def infer_request(model: str, prompt: str, max_tokens: int = 8) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id="t1")
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(prompt.encode())
    req.parameters["max_tokens"].int64_param = max_tokens
    return req


def running_at_sites(cfg) -> float:
    """Calls the fleet's sites are running now, from their /metrics."""
    total = 0.0
    for b in cfg.backends:
        if b.name in SITES and b.metrics_url:
            text = urllib.request.urlopen(b.metrics_url, timeout=5).read().decode()
            total += sum(v for (name, _), v in parse_prometheus_text(text).items()
                         if name == "vllm:num_requests_running")
    return total


def test_liveness_metadata_and_infer(stack):
    cfg, _ = stack
    with grpc.insecure_channel(cfg.proxy.listen) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="mistral-7b"), timeout=5).ready
        resp, call = stub.ModelInfer.with_call(infer_request("llama-3-8b", "hello world"),
                                               metadata=(("x-fastpath-region", "us-east"),), timeout=10)
        assert resp.model_name == "llama-3-8b"
        text = resp.outputs[0].contents.bytes_contents[0] if resp.outputs[0].contents.bytes_contents else resp.raw_output_contents[0]
        assert text
        trailers = dict(call.trailing_metadata())
        assert trailers["x-fastpath-backend"] in ("use1-a100", "use1-l4")  # serves llama, near us-east


def test_stream_infer_tokens_arrive_one_by_one(stack):
    cfg, _ = stack
    with grpc.insecure_channel(cfg.proxy.listen) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        stamps = []
        call = stub.ModelStreamInfer(iter([infer_request("mistral-7b", "tell me a story", 24)]),
                                     metadata=(("x-fastpath-region", "eu-west"),), timeout=20)
        for r in call:
            assert not r.error_message
            stamps.append(time.monotonic())
            final = r.infer_response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
        assert len(stamps) >= 24
        # 24 tokens take the site at least 24/120 s to generate; a buffering proxy would deliver them at once.
        assert stamps[-2] - stamps[0] > 0.05
        call.cancel()


def test_model_read_from_the_request_body_never_picks_a_site_without_it(stack):
    cfg, _ = stack
    with grpc.insecure_channel(cfg.proxy.listen) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for _ in range(10):
            _, call = stub.ModelInfer.with_call(infer_request("llama-3-70b", "x", 2),
                                                metadata=(("x-fastpath-region", "eu-west"),), timeout=10)
            assert dict(call.trailing_metadata())["x-fastpath-backend"] == "use1-a100"  # only 70b site here


def test_a_repeated_long_prompt_returns_to_its_backend_and_says_so(stack):
    """Prefix affinity through the proxy: the prompt is read from the request's first DATA frame(s)."""
    cfg, _ = stack
    prompt = "You are the fastpath support assistant. Answer briefly. " * 40  # 2240 bytes: 8 blocks
    blocks = len(prompt) // cfg.prefix.block_bytes
    with grpc.insecure_channel(cfg.proxy.listen) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        seen = []
        for turn in range(3):
            _, call = stub.ModelInfer.with_call(infer_request("llama-3-8b", prompt), timeout=10,
                                                metadata=(("x-fastpath-region", "us-east"),))
            trailers = dict(call.trailing_metadata())
            seen.append((trailers["x-fastpath-backend"], trailers["x-fastpath-decision"]))
        (first, d1), (second, d2), (third, d3) = seen
        assert f"prefix=0/{blocks}" in d1
        assert f"prefix={blocks}/{blocks}" in d2 and second == first
        assert f"prefix={blocks}/{blocks}" in d3 and third == first
        # The same request as a ModelStreamInfer call finds the same prefix.
        call = stub.ModelStreamInfer(iter([infer_request("llama-3-8b", prompt, 4)]),
                                     metadata=(("x-fastpath-region", "us-east"),), timeout=20)
        for _ in call:
            pass
        trailers = dict(call.trailing_metadata())
        assert f"prefix={blocks}/{blocks}" in trailers["x-fastpath-decision"]
        assert trailers["x-fastpath-backend"] == first


def test_sigterm_drains_in_flight_calls(stack):
    cfg, proxy = stack
    with grpc.insecure_channel(cfg.proxy.listen) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        fut = stub.ModelInfer.future(infer_request("llama-3-8b", "long", 300), timeout=20)  # a second or more
        wait_for(lambda: running_at_sites(cfg) >= 1, timeout=10, what="the call running at a site")
        proxy.send_signal(signal.SIGTERM)
        resp = fut.result()
        assert resp.model_name == "llama-3-8b"
    assert proxy.wait(10) == 0
    with pytest.raises(ConnectionRefusedError):
        import socket

        host, port = cfg.proxy.listen.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2)

