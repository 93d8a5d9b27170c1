"""Panic routing end to end: with every backend failing its probes, calls still go out and succeed
where a backend can answer, and the decision trailer says the router was in panic."""
from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc

from fastpath.config import parse_config
from fastpath.launch import stop_process
from fastpath.gen import control_pb2, control_pb2_grpc
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port
from tests.support.waiting import wait_for


class NotReadyButServing(pb_grpc.GRPCInferenceServiceServicer):
    """Says "not ready" to every probe, yet answers inference calls."""

    def __init__(self) -> None:
        self.calls = 0

    def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=False)

    def ModelInfer(self, request, context):  # noqa: N802
        self.calls += 1
        return pb.ModelInferResponse(model_name=request.model_name, id=request.id)


def test_every_backend_failing_probes_still_gets_calls_in_panic(tmp_path):
    servicer = NotReadyButServing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cfg = parse_config({
        "proxy": {"listen": f"127.0.0.1:{free_port()}", "metrics_listen": f"127.0.0.1:{free_port()}"},
        "control": {"listen": f"127.0.0.1:{free_port()}", "health_interval_ms": 50, "health_timeout_ms": 200,
                    "token_file": str(tmp_path / "token")},
        "regions": {"rtt_ms": {"us-east": {"us-east": 2.0, "eu-west": 80.0}}},
        "backends": [
            {"name": "dead", "address": f"127.0.0.1:{free_port()}", "region": "us-east",
             "cost_per_1k_tokens": 0.1, "power_budget_watts": 5000, "models": ["m"]},
            {"name": "answers", "address": f"127.0.0.1:{port}", "region": "eu-west",
             "cost_per_1k_tokens": 1.0, "power_budget_watts": 5000, "models": ["m"]},
        ],
    }, "panic test")
    path = cfg.write(tmp_path / "fastpath.toml")
    procs = []
    try:
        for role in ("controller", "proxy"):
            procs.append(subprocess.Popen([sys.executable, "-m", "fastpath.cli", role, "--config", str(path)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        control = control_pb2_grpc.ControlStub(grpc.insecure_channel(cfg.control.listen))

        def all_unhealthy():
            try:
                fleet = control.ListBackends(control_pb2.ListBackendsRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return all(b.health_detail and not b.healthy for b in fleet.backends)

        wait_for(all_unhealthy, what="both backends failing their probes")
        assert "listening on" in procs[1].stdout.readline()
        with grpc.insecure_channel(cfg.proxy.listen) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            def routed_in_panic():  # once the proxy's workers have the controller's pushed health
                _, call = stub.ModelInfer.with_call(pb.ModelInferRequest(model_name="m", id="x"), timeout=10,
                                                    metadata=(("x-fastpath-region", "us-east"),))
                return "panic=0/2" in dict(call.trailing_metadata())["x-fastpath-decision"]

            wait_for(routed_in_panic, what="the proxy routing in panic")
            servicer.calls = 0
            trailers = []
            for k in range(6):
                resp, call = stub.ModelInfer.with_call(pb.ModelInferRequest(model_name="m", id=str(k)), timeout=10,
                                                       metadata=(("x-fastpath-region", "us-east"),))
                assert resp.id == str(k)  # answered, although every probe says "not ready"
                trailers.append(dict(call.trailing_metadata()))
        assert all(t["x-fastpath-backend"] == "answers" for t in trailers)
        assert "panic=0/2" in trailers[0]["x-fastpath-decision"]
        assert servicer.calls == 6
        # The calls it answers count as health evidence: while they flow, the controller takes it back.
        with grpc.insecure_channel(cfg.proxy.listen) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            def answered_and_healthy():
                stub.ModelInfer(pb.ModelInferRequest(model_name="m"), timeout=10)
                fleet = control.ListBackends(control_pb2.ListBackendsRequest(), timeout=2)
                return {b.name: b.healthy for b in fleet.backends}["answers"]

            wait_for(answered_and_healthy, what="in-band successes counted")
    finally:
        for p in procs:
            stop_process(p)
        server.stop(None)
