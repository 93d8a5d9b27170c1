"""`fastpath proxy --workers 2` under the stack: both workers serve, a session keeps its backend whichever
worker takes each of its connections, and a worker that dies takes only its own calls with it."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import pytest

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.launch import fastpath_argv
from fastpath.up import Stack

pytestmark = pytest.mark.slow


def _request(model: str, tokens: int, prompt: str = "hello workers") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(prompt.encode())
    req.parameters["max_tokens"].int64_param = tokens
    return req


def _site(resp: pb.ModelInferResponse) -> str:
    return resp.parameters["fastpath_site"].string_param


def _call(address: str, region: str, session: str = "", model: str = "llama-3-8b") -> str:
    """One call on a new connection (a session that comes back reconnects); the site that answered."""
    md = [("x-fastpath-region", region)] + ([("x-fastpath-session", session)] if session else [])
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        return _site(pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_request(model, 3), metadata=md, timeout=15))


def _per_worker(metrics_listen: str, name: str) -> dict[str, float]:
    """Samples of `name` by worker label (summed over other labels), from the proxy's /metrics."""
    with urllib.request.urlopen(f"http://{metrics_listen}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(rf'^{name}{{([^}}]*)}} (\S+)', text, re.M):
        worker = re.search(r'worker="([^"]*)"', m.group(1))
        if worker:
            out[worker.group(1)] = out.get(worker.group(1), 0.0) + float(m.group(2))
    return out


def _worker_pids(stack: Stack) -> list[int]:
    """Worker PIDs in worker order, from the supervisor's `listening on ... (2 workers, pids A, B; ...)` line."""
    child = stack.children["proxy"]
    line = next(x for x in list(child.stdout) if x.startswith("fastpath proxy listening on") and "pids " in x)
    return [int(p) for p in line.split("pids ", 1)[1].split(";", 1)[0].split(", ")]


def test_both_workers_take_connections_and_flows_list_every_workers_sessions(config):
    with Stack(config, workers=2) as stack:
        assert len(_worker_pids(stack)) == 2
        sessions = [f"both-{i}" for i in range(24)]
        for s in sessions:
            assert _call(stack.proxy_address, "us-east", session=s)
        taken = _per_worker(config.proxy.metrics_listen, "fastpath_connections_total")
        assert set(taken) == {"0", "1"} and all(v >= 1 for v in taken.values()), taken
        # `fastpath flows` (the controller's table) names each session's worker in proxy_id.
        deadline = time.monotonic() + 15
        workers: set[str] = set()
        while time.monotonic() < deadline:
            out = subprocess.run(fastpath_argv("flows", "--control", stack.control_address, "--json"),
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            flows = [f for f in json.loads(out.stdout) if f["session"] in sessions]
            workers = {f["proxy_id"].rsplit("-", 1)[-1] for f in flows}
            if len(flows) == len(sessions) and workers == {"w0", "w1"}:
                break
            time.sleep(0.5)
        assert workers == {"w0", "w1"}, flows


def test_a_session_keeps_its_backend_whichever_worker_takes_the_connection(config):
    """No controller here: only rendezvous hashing can agree across the workers."""
    with Stack(config, controller=False, workers=2) as stack:
        sites: dict[str, set[str]] = {}
        for i in range(8):
            region = ("us-east", "eu-west", "us-west", "ap-south")[i % 4]
            session = f"keep-{i}"
            sites[session] = {_call(stack.proxy_address, region, session=session) for _ in range(6)}
        assert all(len(s) == 1 for s in sites.values()), sites
        pinned = _per_worker(config.proxy.metrics_listen, "fastpath_pinned_total")
        assert set(pinned) == {"0", "1"} and all(v >= 1 for v in pinned.values()), pinned
        # Sessions spread over the eligible sites rather than all landing on one.
        assert len({next(iter(s)) for s in sites.values()}) >= 2, sites


def test_killing_a_worker_leaves_the_other_workers_calls_running(config):
    with Stack(config, controller=False, workers=2) as stack:
        victim, survivor = _worker_pids(stack)
        n = 12
        messages = [0] * n
        results: list[tuple[bool, str] | None] = [None] * n

        def stream(i: int) -> None:
            # A connection of its own per call (gRPC would otherwise share one between channels).
            with grpc.insecure_channel(stack.proxy_address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                call = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(
                    iter([_request("llama-3-8b", 300, f"long answer {i}")]),
                    metadata=[("x-fastpath-region", ("us-east", "us-west", "eu-west")[i % 3])], timeout=30)
                try:
                    for _ in call:
                        messages[i] += 1
                    results[i] = (True, f"{messages[i]} messages")
                except grpc.RpcError as e:
                    results[i] = (False, f"{e.code().name}: {e.details()}")

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while min(messages) == 0 and time.monotonic() < deadline:  # every call is streaming
            time.sleep(0.02)
        assert min(messages) > 0 and not any(results), (messages, results)
        open_ = _per_worker(config.proxy.metrics_listen, "fastpath_connections_open")
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        assert all(results), results
        assert open_.get("0", 0) >= 1 and open_.get("1", 0) >= 1 and sum(open_.values()) == n, open_
        failed = [r for r in results if not r[0]]
        # Every call on the surviving worker finished; only the killed worker's calls can have failed.
        assert len(failed) <= open_["0"], (open_, results)
        assert sum(1 for r in results if r[0]) >= open_["1"]
        # The supervisor restarts the dead worker; both serve again and new calls succeed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if set(_per_worker(config.proxy.metrics_listen, "fastpath_connections_total")) == {"0", "1"}:
                break
            time.sleep(0.2)
        assert set(_per_worker(config.proxy.metrics_listen, "fastpath_connections_total")) == {"0", "1"}
        assert os.path.exists(f"/proc/{survivor}") and survivor in _worker_pids_now(stack)
        assert all(_call(stack.proxy_address, "us-east") for _ in range(6))


def _worker_pids_now(stack: Stack) -> list[int]:
    from fastpath.up import children_of

    return children_of(stack.pids["proxy"])


def test_workers_that_cannot_start_stop_the_proxy_with_the_reason(config, tmp_path):
    """A worker failing before it listens (here: a certificate that is not there) is not restarted in a loop."""
    data = dict(config.raw)
    data["proxy"] = dict(data["proxy"], tls_cert=str(tmp_path / "missing.pem"), tls_key=str(tmp_path / "missing.key"))
    from fastpath.config import parse_config

    path = parse_config(data, "bad tls").write(tmp_path / "fastpath.toml")
    out = subprocess.run(fastpath_argv("proxy", "--config", str(path), "--no-controller", "--workers", "2"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "missing.pem" in out.stderr and "before listening" in out.stderr
    assert "restarting" not in out.stderr
