"""Stack: the fleet, controller and proxy start as real processes, and every one of them stops."""
from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.up import Stack, StackError, children_of

from .conftest import alive, reap_zombies, start_time


def test_stack_serves_names_a_dead_child_and_leaves_no_process_behind(config):
    before = set(children_of(os.getpid()))  # other tests' processes are not this test's business
    with Stack(config, ready_timeout_s=60) as stack:
        assert set(stack.pids) == {"sim", "controller", "proxy"}
        sites = [b for b in config.backends if b.sim]
        tracked = {p: start_time(p) for p in stack.all_pids()}
        # The fleet runs each site in its own process: they must be among what the stack tracks.
        assert len(tracked) >= 3 + len(sites)
        assert stack.served["llama-3-70b"] == [b.name for b in config.backends if "llama-3-70b" in b.models]
        with grpc.insecure_channel(stack.proxy_address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = pb.ModelInferRequest(model_name="mistral-7b")
            req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
            resp, call = stub.ModelInfer.with_call(req, metadata=[("x-fastpath-region", "eu-west")], timeout=10)
            backend = dict(call.trailing_metadata())["x-fastpath-backend"]
            assert "mistral-7b" in config.backend(backend).models
        stack.check()  # all alive: no error
        # A child that dies is named, with how it died.
        os.kill(stack.pids["proxy"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not stack.dead() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StackError, match=r"proxy \(pid \d+\) was killed by SIGKILL"):
            stack.check()
        # A fleet supervisor killed outright must not leave its sites running once the stack stops.
        os.kill(stack.pids["sim"], signal.SIGKILL)
    time.sleep(0.2)
    reap_zombies()
    left = [p for p, st in tracked.items() if alive(p, st)]
    assert not left, f"processes left running after the stack stopped: {left}"
    assert not set(children_of(os.getpid())) - before, "orphans of the stack were re-parented to the test"


def test_busy_ports_are_refused_with_what_to_do(config):
    import socket

    host, port = config.proxy.listen.rsplit(":", 1)
    with socket.socket() as s:
        s.bind((host, int(port)))
        s.listen()
        with pytest.raises(StackError, match=f"ports already in use: proxy {config.proxy.listen}.*--base-port"):
            with Stack(config):
                pass
