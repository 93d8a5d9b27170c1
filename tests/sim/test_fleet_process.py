"""The fleet as processes: FleetProcess and `fastpath sim` start, supervise and always clean up."""
from __future__ import annotations

import copy
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from fastpath.config import Config, load_config, parse_config, with_ports
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.fleet import FleetError, FleetProcess, ReadyLine
from fastpath.sim.llm_request import make_request, text_output
from fastpath.sim.tokens import completion_tokens

from fastpath.ports import free_port_block


def two_site_config() -> Config:
    """The default config cut to its two us-east sites, on free ports."""
    data = copy.deepcopy(load_config().raw)
    data["backends"] = [b for b in data["backends"] if b["region"] == "us-east"][:2]
    return with_ports(parse_config(data), free_port_block(3 + 2 * 2))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def ready(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as ch:
        try:
            return pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=timeout).ready
        except grpc.RpcError:
            return False


def test_fleet_process_runs_each_site_in_its_own_process_and_cleans_up():
    cfg = two_site_config()
    with FleetProcess(cfg) as fleet:
        pids = fleet.pids
        assert set(pids) == {b.name for b in cfg.backends}
        assert fleet.live_config().backends == cfg.backends
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        for b in cfg.backends:
            assert ready(b.address)
        victim, other = cfg.backends[0], cfg.backends[1]
        fleet.kill(victim.name)
        assert victim.name not in fleet.pids and not alive(pids[victim.name])
        assert not ready(victim.address, timeout=0.5)
        assert ready(other.address)  # the others keep serving
        new_pid = fleet.start_site(victim.name)
        assert new_pid != pids[victim.name] and ready(victim.address)
        all_pids = list(fleet.pids.values())
    for pid in all_pids:
        assert not alive(pid)


def test_fleet_process_cleans_up_when_the_body_raises():
    cfg = two_site_config()
    with pytest.raises(RuntimeError, match="boom"):
        with FleetProcess(cfg) as fleet:
            pids = list(fleet.pids.values())
            raise RuntimeError("boom")
    assert pids and not any(alive(p) for p in pids)


def test_die_mid_stream_exits_the_site_process_and_drops_the_connection():
    cfg = two_site_config()
    site = cfg.backends[0]
    with FleetProcess(cfg, faults={site.name: "die_mid_stream&after_tokens=2"}) as fleet:
        pid = fleet.pids[site.name]
        got = []
        with grpc.insecure_channel(site.address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                for m in stub.ModelStreamInfer(iter([make_request(site.models[0], "die", 6)]), timeout=10):
                    got.append(text_output(m.infer_response))
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert got == completion_tokens("die", 2)
        assert wait_dead(pid)
        assert fleet.returncode(site.name) == 17
        assert ready(cfg.backends[1].address)


def test_fleet_process_sets_faults_over_http():
    cfg = two_site_config()
    site = cfg.backends[1]
    with FleetProcess(cfg, sites=[site.name]) as fleet:
        assert fleet.set_fault(site.name, "refuse") == "mode=refuse"
        assert not ready(site.address)
        with pytest.raises(FleetError, match="unknown fault mode"):
            fleet.set_fault(site.name, "explode")
        fleet.set_fault(site.name, "none")
        assert ready(site.address)


def test_fleet_process_reports_a_site_that_cannot_start():
    cfg = two_site_config()
    with FleetProcess(cfg, sites=[cfg.backends[0].name]):
        with pytest.raises(FleetError, match="exited with code 1") as e:
            with FleetProcess(cfg, sites=[cfg.backends[0].name], ready_timeout_s=20):
                pass
        assert "in use" in str(e.value)


def read_lines_until(proc: subprocess.Popen, pattern: str, timeout: float = 30.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode())
                if pattern in lines[-1]:
                    return lines
    raise AssertionError(f"no line with {pattern!r} in {lines}")


def test_cli_supervises_restarts_and_stops_every_child(tmp_path):
    cfg = two_site_config()
    path = cfg.write(tmp_path / "fleet.toml")
    proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "--log-level", "WARNING", "sim", "--config", str(path),
                             "--restart-after", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = read_lines_until(proc, "sites running")
        sites = {r.name: r for r in (ReadyLine.parse(line) for line in lines if line.startswith("site "))}
        assert set(sites) == {b.name for b in cfg.backends}
        for b in cfg.backends:
            r = sites[b.name]
            assert (r.address, r.metrics_url, r.region, r.models) == (b.address, b.metrics_url, b.region, b.models)
            assert ready(r.address)
        victim = cfg.backends[0].name
        os.kill(sites[victim].pid, signal.SIGKILL)
        again = ReadyLine.parse(read_lines_until(proc, f"site {victim} ")[-1])
        assert again.pid != sites[victim].pid and ready(again.address)
        os.kill(again.pid, signal.SIGKILL)  # a site that dies twice comes back twice
        again = ReadyLine.parse(read_lines_until(proc, f"site {victim} ")[-1])
        assert ready(again.address)
        children = [again.pid, sites[cfg.backends[1].name].pid]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for pid in children:
            assert wait_dead(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_children_stop_when_the_supervisor_is_killed_outright(tmp_path):
    cfg = two_site_config()
    path = cfg.write(tmp_path / "fleet.toml")
    proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "sim", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = read_lines_until(proc, "sites running")
        pids = [ReadyLine.parse(line).pid for line in lines if line.startswith("site ")]
        proc.kill()
        proc.wait()
        for pid in pids:
            assert wait_dead(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_fault_flag_and_single_site_mode(tmp_path):
    cfg = two_site_config()
    path = cfg.write(tmp_path / "fleet.toml")
    site = cfg.backends[0]
    proc = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "sim", "--config", str(path), "--site", site.name,
                             "--fault", f"{site.name}=refuse"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = read_lines_until(proc, f"site {site.name} ")[-1]
        assert ReadyLine.parse(line).pid == proc.pid  # --site runs in this very process
        with grpc.insecure_channel(site.address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("extra, words", [
    (["--site", "nowhere"], "no site ['nowhere']"),
    (["--fault", "nowhere=hang"], "no site 'nowhere'"),
    (["--fault", "use1-a100=explode"], "unknown fault mode"),
    (["--config", "/nonexistent.toml"], "cannot read config"),
])
def test_cli_bad_arguments_exit_2_with_a_reason(extra, words):
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "sim", *extra], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert words in r.stderr
