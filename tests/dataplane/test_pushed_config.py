"""Pushed configuration end to end: real fleet, controller and three proxy processes.

A policy set on the controller reaches every proxy; editing the config file and
sending SIGHUP (or `fastpath reload`) changes a policy while calls are in flight
and adds a backend, with no call failing; an invalid file is refused with the
reason and the old config keeps serving. The same stack's /metrics (proxy and
controller) parse with prometheus_client's own parser and hold the histograms.
"""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastpath.config import load_config, parse_config, with_ports
from fastpath.control.auth import metadata as control_metadata
from fastpath.gen import control_pb2, control_pb2_grpc
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.launch import stop_process
from fastpath.ports import free_port
from fastpath.sim.fleet import FleetProcess
from tests.support.waiting import wait_for

from .test_kserve_fleet import infer_request, port_block

FLEET = ["use1-a100", "use1-l4", "euw1-l4"]
START = ["use1-l4", "euw1-l4"]  # use1-a100 (the only one serving llama-3-70b here) joins by reload
CONTROL_MD = control_metadata(os.environ["FASTPATH_CONTROL_TOKEN"])


def _config(raw: dict, sites: list[str], p1: dict[str, float], limits: dict | None = None) -> dict:
    data = copy.deepcopy(raw)
    data["backends"] = [b for b in raw["backends"] if b["name"] in sites]
    data["policies"]["p1"] = p1
    if limits:
        data["limits"] = limits
    return data


def _advertised_streams(listen: str) -> int:
    """SETTINGS_MAX_CONCURRENT_STREAMS the proxy tells a new connection (routed mode: after its first call)."""
    import struct

    from fastpath.h2 import frames as fr

    from .rawh2 import RawH2

    def advertised(frames: list) -> int:
        for ftype, flags, _, payload in frames:
            if ftype == fr.SETTINGS and not flags & fr.ACK:
                values = dict(struct.iter_unpack(">HI", bytes(payload)))
                if fr.SETTINGS_MAX_CONCURRENT_STREAMS in values:
                    return values[fr.SETTINGS_MAX_CONCURRENT_STREAMS]
        return 0

    h2 = RawH2(listen)
    try:
        h2.call("/inference.GRPCInferenceService/ServerLive", b"")
        return advertised(h2.read_until(advertised))
    finally:
        h2.close()


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", *args], stdout=subprocess.PIPE, stderr=err,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args[0]} did not start: {line!r}\n{log.read_text()[-3000:]}")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc)
    proc.stdout.close()


def _decision(call) -> dict[str, str]:
    trailers = dict(call.trailing_metadata())
    out = dict(kv.split("=", 1) for kv in trailers["x-fastpath-decision"].split(";") if "=" in kv)
    out["backend"] = trailers["x-fastpath-backend"]
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pushed")
    full = with_ports(load_config(), port_block(20))
    raw = copy.deepcopy(full.raw)
    raw["control"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
    raw["control"]["scrape_interval_ms"] = 50
    fleet_cfg = parse_config(_config(raw, FLEET, {"ttft": 1.0}), "fleet")
    path = tmp / "fastpath.toml"
    parse_config(_config(raw, START, {"ttft": 1.0}), "start").write(path)
    with FleetProcess(fleet_cfg):
        procs: list[subprocess.Popen] = []
        try:
            procs.append(_spawn(["controller", "--config", str(path)], tmp / "controller.log"))
            proxies = []
            for i in range(3):
                listen = f"127.0.0.1:{free_port()}"
                procs.append(_spawn(["proxy", "--config", str(path), "--listen", listen, "--workers", "1"], tmp / f"proxy{i}.log"))
                proxies.append(listen)
            yield {"path": path, "raw": raw, "control": raw["control"]["listen"], "proxies": proxies,
                   "controller": procs[0], "tmp": tmp, "proxy_metrics": raw["proxy"]["metrics_listen"],
                   "control_metrics": raw["control"]["metrics_listen"]}
        finally:
            for p in reversed(procs):
                _stop(p)


def _infer(listen: str, model: str = "mistral-7b", policy: str = "", region: str = "us-east", tokens: int = 4,
           session: str = ""):
    md = [("x-fastpath-region", region)] + ([("x-fastpath-policy", policy)] if policy else [])
    md += [("x-fastpath-session", session)] if session else []
    # A connection of its own per call: gRPC would otherwise share one across channels (a pinned one, too).
    with grpc.insecure_channel(listen, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        return pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer.with_call(
            infer_request(model, "hello there", tokens), metadata=md, timeout=10)


def _status(stack) -> control_pb2.Status:
    with grpc.insecure_channel(stack["control"]) as ch:
        return control_pb2_grpc.ControlStub(ch).GetStatus(control_pb2.StatusRequest(), timeout=5)


def test_a_policy_set_on_the_controller_reaches_all_three_proxies(stack) -> None:
    wait_for(lambda: sum(p.subscribed for p in _status(stack).proxies) >= 3, what="three proxies subscribed")
    for listen in stack["proxies"]:
        with pytest.raises(grpc.RpcError) as e:
            _infer(listen, policy="green")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(stack["control"]) as ch:
        control_pb2_grpc.ControlStub(ch).SetPolicy(control_pb2.Policy(name="green", cost=1.0), metadata=CONTROL_MD,
                                                    timeout=5)

    def everywhere() -> bool:
        try:
            return all(_decision(_infer(listen, policy="green")[1])["policy"] == "green" for listen in stack["proxies"])
        except grpc.RpcError:
            return False

    wait_for(everywhere, what="policy green routed by every proxy")
    version = _status(stack).version
    wait_for(lambda: all(p.config_version >= version for p in _status(stack).proxies if p.subscribed),
          what="every proxy reports the pushed version")


def test_reload_changes_a_policy_and_adds_a_backend_with_calls_in_flight(stack) -> None:
    with pytest.raises(grpc.RpcError):  # nobody serves llama-3-70b before the reload
        _infer(stack["proxies"][0], model="llama-3-70b")
    failures: list[str] = []
    done: list[dict[str, str]] = []
    stop = threading.Event()

    def client(listen: str) -> None:
        with grpc.insecure_channel(listen) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            while not stop.is_set():
                try:
                    _, call = stub.ModelInfer.with_call(infer_request("mistral-7b", "keep going", 16), timeout=20,
                                                        metadata=[("x-fastpath-policy", "p1"),
                                                                  ("x-fastpath-region", "us-east")])
                    done.append(_decision(call))
                except grpc.RpcError as e:
                    failures.append(f"{e.code().name}: {e.details()}")

    threads = [threading.Thread(target=client, args=(listen,)) for listen in stack["proxies"] for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(done) >= 12, what="calls flowing")
        assert all(abs(float(d["score"]) - float(d["ttft"])) < 1e-3 for d in done)  # p1 = ttft only
        assert all(_advertised_streams(listen) == 256 for listen in stack["proxies"])
        parse_config(_config(stack["raw"], FLEET, {"cost": 1.0}, {"max_concurrent_streams": 77}),
                     "edited").write(stack["path"])
        stack["controller"].send_signal(signal.SIGHUP)
        wait_for(lambda: done and abs(float(done[-1]["score"]) - float(done[-1]["cost"])) < 1e-3, timeout=20,
              what="p1 = cost only, after the reload")
        n = len(done)
        wait_for(lambda: len(done) >= n + 12, what="more calls after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert _status(stack).config_generation == 2
    for listen in stack["proxies"]:  # the new limit, told to new connections
        wait_for(lambda: _advertised_streams(listen) == 77, what="max_concurrent_streams 77 from [limits]")
    for listen in stack["proxies"]:
        _, call = wait_for(lambda: _try_infer(listen, model="llama-3-70b"), what="the added backend serves llama-3-70b")
        assert _decision(call)["backend"] == "use1-a100"


def _try_infer(listen: str, **kw):
    try:
        return _infer(listen, **kw)
    except grpc.RpcError:
        return None


def test_an_invalid_config_is_refused_with_the_reason_and_the_old_one_kept(stack) -> None:
    generation = _status(stack).config_generation
    good = stack["path"].read_text()
    bad = _config(stack["raw"], FLEET, {"cost": 1.0})
    bad["router"]["default_policy"] = "no-such-policy"
    import tomli_w

    stack["path"].write_text(tomli_w.dumps(bad))
    try:
        r = subprocess.run([sys.executable, "-m", "fastpath.cli", "reload", "--control", stack["control"],
                            "--config", str(stack["path"])], capture_output=True, text=True, timeout=30)
    finally:
        stack["path"].write_text(good)
    assert r.returncode == 1
    assert "refused" in r.stderr and "no-such-policy" in r.stderr, r.stderr
    assert _status(stack).config_generation == generation
    for listen in stack["proxies"]:
        assert _infer(listen, policy="p1")[0].model_name == "mistral-7b"
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "reload", "--control", stack["control"],
                        "--config", str(stack["path"])], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "reloaded" in r.stdout, r.stderr
    assert _status(stack).config_generation == generation + 1


def _families(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _hist_count(fam) -> float:
    return sum(s.value for s in fam.samples if s.name.endswith("_count"))


def test_metrics_of_proxy_and_controller_parse_and_hold_the_histograms(stack) -> None:
    proxy = stack["proxies"][0]  # the first proxy holds [proxy] metrics_listen
    for i in range(30):
        _infer(proxy, model="mistral-7b" if i % 2 else "llama-3-8b", region="eu-west" if i % 3 else "us-east")
    for i in range(3):  # pinned sessions: relayed verbatim, their bytes counted by path when they close
        _infer(proxy, session=f"metrics-{i}")
    fams = wait_for(lambda: (f := _families(stack["proxy_metrics"]))
                 and sum(s.value for s in f["fastpath_flow_bytes"].samples if s.labels["path"] == "python") > 0
                 and f, what="proxy metrics with the closed sessions' bytes")
    assert sum(s.value for s in fams["fastpath_pinned"].samples) >= 3
    for name in ("gen_ai_server_request_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
                 "fastpath_router_decision_seconds"):
        assert fams[name].type == "histogram" and _hist_count(fams[name]) >= 30, name
    models = {s.labels.get("gen_ai_request_model") for s in fams["gen_ai_server_request_duration_seconds"].samples}
    assert {"mistral-7b", "llama-3-8b"} <= models
    assert sum(s.value for s in fams["fastpath_router_decisions"].samples) >= 30
    assert {s.labels["axis"] for s in fams["fastpath_router_decisions"].samples} <= {
        "ttft", "cost", "affinity", "capacity", "proximity", "none"}
    for name in ("fastpath_failovers", "fastpath_hedges", "fastpath_sheds", "fastpath_budget_refusals",
                 "fastpath_flows", "fastpath_flow_bytes", "fastpath_limit_hits", "fastpath_upstream_connections"):
        assert name in fams, name
    ctl = _families(stack["control_metrics"])
    assert _hist_count(ctl["fastpath_controller_scrape_duration_seconds"]) > 0
    assert _hist_count(ctl["fastpath_controller_push_latency_seconds"]) > 0
    assert ctl["fastpath_controller_subscribers"].samples[0].value >= 3
    assert ctl["fastpath_controller_state_version"].samples[0].value > 0


def test_top_once_against_the_running_stack(stack) -> None:
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            _try_infer(stack["proxies"][1], region="eu-west")

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(1.5)  # the proxies report their decision counts about once a second
        r = subprocess.run([sys.executable, "-m", "fastpath.cli", "top", "--once", "--control", stack["control"],
                            "--interval", "2.5"], capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        t.join(15)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert {"use1-a100", "use1-l4", "euw1-l4"} <= {line.split()[0] for line in lines if line}
    rates = next(line for line in lines if line.startswith("decisions/s")).split()[1:]
    assert sum(float(v) for v in rates[1::2]) > 0, lines
