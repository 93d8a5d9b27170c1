"""`fastpath demo --json` and `fastpath up`, run as a user runs them: real processes, real traffic."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.tokens import completion
from fastpath.up import children_of
from fastpath.workload import nearest_sites
from tests.support.output import read_until

from .conftest import alive, reap_zombies, start_time

CLI = [sys.executable, "-m", "fastpath.cli"]


def _watch_descendants(proc: subprocess.Popen, seen: dict[int, int | None]) -> None:
    for p in children_of(proc.pid):
        if p not in seen:
            seen[p] = start_time(p)


def test_demo_json_answers_every_request_on_sites_that_serve_it_and_near_at_low_load(config, tmp_path):
    """With the eBPF offload driver, so repeat sessions' bytes also cross the kernel splice."""
    path = config.write(tmp_path / "fastpath.toml")
    # Output to files: a pipe nobody reads while the demo runs would fill up and stall it.
    out_f, err_f = open(tmp_path / "out.json", "w+"), open(tmp_path / "err.txt", "w+")
    proc = subprocess.Popen([*CLI, "demo", "--config", str(path), "--json", "--requests", "100", "--seed", "11",
                             "--offload", "ebpf"],
                            stdout=out_f, stderr=err_f, text=True)
    seen: dict[int, int | None] = {}
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        _watch_descendants(proc, seen)
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    out, err = (tmp_path / "out.json").read_text(), (tmp_path / "err.txt").read_text()
    out_f.close()
    err_f.close()
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{err[-3000:]}"
    s = json.loads(out)

    # Every request answered, through the proxy (the trailer names the backend).
    assert s["totals"]["requests"] == s["planned"] == 100
    assert s["totals"]["ok"] == 100, s["error_examples"]
    results = s["results"]
    # Routed calls carry the x-fastpath-backend trailer; a session's pinned connection is relayed
    # verbatim, so there the site is named by the response itself.
    routed = [r for r in results if not r["spec"]["session"]]
    assert all(r["backend_from"] == "trailer" and r["decision"] for r in routed), "routed calls without trailers"
    assert all(r["backend"] for r in results)
    # Only sites serving the model (or, for a call that allowed it, the substitute named in the
    # x-fastpath-served-model trailer), and the answer is the model's (deterministic) completion.
    for r in results:
        b = config.backend(r["backend"])
        if r["served_model"]:
            assert r["spec"]["allow_substitute"], r
            assert r["served_model"] in config.model_groups[r["spec"]["model"]].substitutes, r
        assert (r["served_model"] or r["spec"]["model"]) in b.models, r
        assert r["tokens"] == r["spec"]["max_tokens"], r
        assert r["text"] == completion(r["spec"]["prompt"], r["spec"]["max_tokens"]), r
    # At low load each client region's traffic mostly lands in its nearest region serving the model.
    site_regions = {b.region for b in config.backends}
    for region in sorted(site_regions & set(config.rtt_ms)):
        low = [r for r in results if r["spec"]["phase"] == "mixed" and r["spec"]["region"] == region]
        assert low, region
        near = [r for r in low if config.backend(r["backend"]).region
                in {b.region for b in nearest_sites(config, region, r["spec"]["model"])}]
        assert len(near) / len(low) > 0.5, (region, [(r["spec"]["model"], r["backend"]) for r in low])
    # Model switching: the region without the model is served by a nearer substitute when it allows one.
    sub = s["substitute"]
    assert sub["allowed"]["ok"] and set(sub["allowed"]["served_models"]) == {"llama-3-8b"}, sub
    assert set(sub["not_allowed"]["served_models"]) == {sub["model"]}, sub
    assert any(o.startswith("model switching:") for o in s["observations"])
    # Sessions come back on new connections: the proxy recognised them and handed them to the kernel,
    # and every session answer (checked above, byte for byte) still came through.
    assert s["proxy"]["offloaded"] >= 1, s["proxy"]
    sessions = [r for r in results if r["spec"]["session"]]
    assert sessions and all(len({x["backend"] for x in sessions if x["spec"]["session"] == r["spec"]["session"]}) == 1
                            for r in sessions), "a session moved between sites at low load"
    # The burst filled its near site and the rest spilled elsewhere, to sites serving the model.
    burst = s["burst"]
    assert burst["requests"] > burst["slots"] and burst["stayed"] >= 1, burst
    assert burst["spilled"] and burst["site"] not in burst["spilled"], burst
    # Requests with a cost ceiling never went to a site priced above it.
    assert s["budget"]["requests"] > 0 and not s["budget"]["over_ceiling"]
    # The stack had its processes while running, and none is left.
    assert len(seen) >= 3 + len([b for b in config.backends if b.sim])
    time.sleep(0.2)
    reap_zombies()
    left = [p for p, st in seen.items() if alive(p, st)]
    assert not left, f"demo left processes running: {left}"


def test_up_prints_addresses_serves_and_stops_cleanly_on_sigint(config, tmp_path):
    path = config.write(tmp_path / "fastpath.toml")
    before = set(children_of(os.getpid()))  # other tests' processes are not this test's business
    proc = subprocess.Popen([*CLI, "up", "--config", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        text = read_until(proc, "ready in", 60)
        assert f"fastpath proxy listening on {config.proxy.listen}" in text, proc.stderr.read() if proc.poll() else text
        assert f"fastpath control API on {config.control.listen}" in text
        for b in config.backends:
            assert b.name in text
        seen = {p: start_time(p) for p in children_of(proc.pid)}
        assert len(seen) >= 3 + len(config.backends)
        with grpc.insecure_channel(config.proxy.listen) as ch:
            req = pb.ModelInferRequest(model_name="llama-3-70b")
            req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"why")
            req.parameters["max_tokens"].int64_param = 5
            resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
            assert resp.raw_output_contents or resp.outputs
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert rc == 0, err
        assert "SIGINT received" in err and "stopped cleanly" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)
    reap_zombies()
    left = [p for p, st in seen.items() if alive(p, st)]
    assert not left, f"fastpath up left processes running: {left}"
    assert not set(children_of(os.getpid())) - before


def test_demo_exits_non_zero_and_says_why_when_most_requests_fail(config, tmp_path):
    import copy

    from fastpath.config import parse_config

    data = copy.deepcopy(config.raw)
    data["backends"] = data["backends"][:1]  # one site, refusing everything, is enough to fail
    one = parse_config(data)
    path = one.write(tmp_path / "fastpath.toml")
    proc = subprocess.run([*CLI, "demo", "--config", str(path), "--requests", "20",
                           "--fault", f"{one.backends[0].name}=refuse"],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "most requests failed (20 of 20)" in proc.stderr
    assert "UNAVAILABLE" in proc.stderr and one.backends[0].name in proc.stderr.rsplit("most requests failed", 1)[1]
    reap_zombies()


def test_bad_arguments_say_what_to_do(config, tmp_path):
    path = config.write(tmp_path / "fastpath.toml")
    bad = subprocess.run([*CLI, "demo", "--config", str(path), "--fault", "nosuch=refuse"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "no simulated site 'nosuch'" in bad.stderr and "use1-a100" in bad.stderr
    bad = subprocess.run([*CLI, "demo", "--config", str(tmp_path / "missing.toml")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "cannot read config" in bad.stderr


def test_up_names_a_child_that_dies_and_stops_the_rest(config, tmp_path):
    import copy
    import re

    from fastpath.config import parse_config

    data = copy.deepcopy(config.raw)
    data["backends"] = data["backends"][:1]  # one site is enough here, and starts faster
    path = parse_config(data).write(tmp_path / "one-site.toml")
    proc = subprocess.Popen([*CLI, "up", "--config", str(path), "--no-controller"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        text = read_until(proc, "ready in", 60)
        m = re.search(r"fastpath proxy listening on \S+ +\(pid (\d+)", text)
        assert m, text
        seen = {p: start_time(p) for p in children_of(proc.pid)}
        os.kill(int(m.group(1)), signal.SIGKILL)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert rc == 1, err
        assert f"proxy (pid {m.group(1)}) was killed by SIGKILL" in err and "stopping the rest" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)
    reap_zombies()
    assert not [p for p, st in seen.items() if alive(p, st)]
