"""`fastpath up --config F` where F lists only real backends: controller and proxy run, nothing is simulated."""
from __future__ import annotations

import signal
import subprocess
import sys
from concurrent import futures

import grpc

from fastpath.config import parse_config
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port
from tests.support.output import read_until


class RealBackend(pb_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request, context):  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    def ModelInfer(self, request, context):  # noqa: N802
        return pb.ModelInferResponse(model_name=request.model_name, id="answered by the real backend")


def test_up_with_only_real_backends_runs_controller_and_proxy(tmp_path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(RealBackend(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cfg = parse_config({
        "proxy": {"listen": f"127.0.0.1:{free_port()}", "metrics_listen": f"127.0.0.1:{free_port()}"},
        "control": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(tmp_path / "token")},
        "regions": {"rtt_ms": {"us-east": {"us-east": 2.0}}},
        "backends": [{"name": "kserve-1", "address": f"127.0.0.1:{port}", "region": "us-east",
                      "cost_per_1k_tokens": 0.5, "power_budget_watts": 0, "models": ["m"]}],
    }, "real backends only")
    path = cfg.write(tmp_path / "fastpath.toml")
    proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "up", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = read_until(proc, "ready in", 60)
        assert "ready in" in text, proc.stderr.read() if proc.poll() is not None else text
        assert "none simulated" in text and "kserve-1" in text and "external" in text
        with grpc.insecure_channel(cfg.proxy.listen) as ch:
            resp, call = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer.with_call(
                pb.ModelInferRequest(model_name="m"), timeout=10)
        assert resp.id == "answered by the real backend"
        assert dict(call.trailing_metadata())["x-fastpath-backend"] == "kserve-1"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop(None)
