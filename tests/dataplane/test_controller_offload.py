"""End to end with real processes: the controller learns a pinned session and moves it into the kernel.

Fleet, controller and proxy run as `fastpath` processes; the client is a stock
KServe gRPC client. After SetFlowPath the session's bytes are moved by the
kernel (Python's count stays flat, the kernel's grows); killing the controller
does not disturb it.
"""
import signal
import subprocess
import sys
import time

import grpc
import pytest

from fastpath.config import load_config, parse_config, with_ports
from fastpath.launch import stop_process
from fastpath.gen import control_pb2, control_pb2_grpc
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.fleet import FleetProcess
from tests.support.waiting import wait_for

from .test_kserve_fleet import infer_request, port_block
from .test_pinned import bpf_ready  # noqa: F401 (fixture)
from fastpath.control.auth import metadata as _control_metadata

CONTROL_MD = _control_metadata(__import__("os").environ["FASTPATH_CONTROL_TOKEN"])


def start(args, path):
    proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", *args, "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def wait_port(address, timeout=15.0):
    import socket

    host, port = address.rsplit(":", 1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {address}")


def flow_of(control, session):
    for f in control.ListFlows(control_pb2.ListFlowsRequest(), timeout=5).flows:
        if f.session == session:
            return f
    return None


def stream_tokens(stub, n, session):
    call = stub.ModelStreamInfer(iter([infer_request("mistral-7b", "go", n)]),
                                 metadata=(("x-fastpath-session", session), ("x-fastpath-region", "eu-west")), timeout=30)
    got = 0
    for r in call:
        p = r.infer_response.parameters.get("triton_final_response")
        if p is not None and p.bool_param:
            break
        got += 1
    call.cancel()
    return got


@pytest.mark.bpf
def test_set_flow_path_moves_a_live_session_into_the_kernel(tmp_path, bpf_ready):  # noqa: F811
    cfg = with_ports(load_config(), port_block(20))
    raw = dict(cfg.raw)
    raw["backends"] = [b for b in raw["backends"] if b["name"] == "euw1-a100"]
    raw["offload"] = {"driver": "ebpf"}
    cfg = parse_config(raw, "test")
    path = cfg.write(tmp_path / "fastpath.toml")
    procs = []
    with FleetProcess(cfg):
        try:
            controller = start(["controller"], path)
            procs.append(controller)
            wait_port(cfg.control.listen)
            proxy = start(["proxy"], path)
            procs.append(proxy)
            assert "listening on" in proxy.stdout.readline()
            ctl_ch = grpc.insecure_channel(cfg.control.listen)
            control = control_pb2_grpc.ControlStub(ctl_ch)
            with grpc.insecure_channel(cfg.proxy.listen) as ch:
                stub = pb_grpc.GRPCInferenceServiceStub(ch)
                assert stream_tokens(stub, 8, "sess-42") == 8
                # An observation can list the session before the proxy's flow report brings its bytes.
                flow = wait_for(lambda: (f := flow_of(control, "sess-42")) and f.bytes_python > 0 and f)
                assert flow.path == "python" and flow.backend == "euw1-a100" and flow.bytes_python > 0
                moved = control.SetFlowPath(control_pb2.SetFlowPathRequest(session="sess-42", path="kernel"), timeout=10, metadata=CONTROL_MD)
                assert moved.path == "kernel"
                before = wait_for(lambda: (f := flow_of(control, "sess-42")) and f.path == "kernel" and f)
                # The controller dies; the kernel keeps carrying the session.
                controller.send_signal(signal.SIGKILL)
                controller.wait(5)
                assert stream_tokens(stub, 40, "sess-42") == 40
                # Python's byte count did not move (checked through the proxy's own view via a new controller).
                controller = start(["controller"], path)
                procs.append(controller)
                wait_port(cfg.control.listen)
                after = wait_for(lambda: (f := flow_of(control, "sess-42")) and f.bytes_offload > before.bytes_offload and f,
                                 timeout=15)
                assert after.path == "kernel"
                assert after.bytes_python == before.bytes_python
            ctl_ch.close()
        finally:
            for p in procs:
                stop_process(p)
