"""What `fastpath up` checks for its user: the installed package whatever the cwd, TLS readiness,
an offload that cannot work named at startup, JSON logs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastpath
from fastpath.config import parse_config
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.launch import fastpath_argv, python_argv
from fastpath.offload.bpf_files import bpf_header
from fastpath.up import Stack, channel
from tests.support.output import read_until

INSTALLED = str(Path(fastpath.__file__).resolve().parent)


def shadow_folder(tmp_path: Path) -> Path:
    """A cwd holding a folder named fastpath that is not the package (a checkout's parent, say)."""
    cwd = tmp_path / "cwd"
    (cwd / "fastpath").mkdir(parents=True)
    (cwd / "fastpath" / "__init__.py").write_text("raise ImportError('the shadow folder was imported')\n")
    return cwd


def test_children_start_the_installed_package_even_with_a_fastpath_folder_in_cwd(tmp_path):
    cwd = shadow_folder(tmp_path)
    probe = "import fastpath, os; print(os.path.dirname(os.path.realpath(fastpath.__file__)))"
    child = subprocess.run(python_argv("fastpath.launch")[:2] + ["-c", probe], cwd=cwd, capture_output=True, text=True)
    assert child.stdout.strip() == INSTALLED, child.stderr
    helped = subprocess.run(fastpath_argv("--help"), cwd=cwd, capture_output=True, text=True)
    assert helped.returncode == 0 and "usage: fastpath" in helped.stdout, helped.stderr
    # What the launcher avoids: a plain `python -m` imports the folder in the cwd.
    plain = subprocess.run([sys.executable, "-m", "fastpath.cli", "--help"], cwd=cwd, capture_output=True, text=True)
    assert plain.returncode != 0 and "shadow folder" in plain.stderr


def test_up_from_a_shadowing_cwd_starts_and_names_an_offload_that_cannot_work(config, tmp_path):
    """`--offload ebpf` without the BPF objects: one line at startup saying why and the fix; the stack still serves."""
    path = config.write(tmp_path / "fastpath.toml")
    bpf = tmp_path / "bpf"
    bpf.mkdir()
    (bpf / "fastpath_maps.h").write_text(bpf_header().read_text())
    env = dict(os.environ, FASTPATH_BPF_DIR=str(bpf))  # header there, objects not built
    err = tmp_path / "err.txt"
    with open(err, "w") as err_f:
        proc = subprocess.Popen(fastpath_argv("up", "--config", str(path), "--offload", "ebpf"), cwd=shadow_folder(tmp_path),
                                stdout=subprocess.PIPE, stderr=err_f, text=True, env=env)
        try:
            text = read_until(proc, "ready in", 60)
            assert f"fastpath proxy listening on {config.proxy.listen}" in text, err.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    lines = [line for line in err.read_text().splitlines() if "offload ebpf cannot work" in line]
    assert len(lines) == 1, err.read_text()[-3000:]
    assert "fix:" in lines[0] and ("make bpf" in lines[0] or "root" in lines[0]), lines[0]
    assert proc.returncode == 0


def test_up_is_ready_when_the_proxy_terminates_tls(config, tmp_path):
    """The readiness probe speaks TLS to a TLS listener (a self-signed certificate made by openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fastpath.test",
                    "-addext", "subjectAltName=DNS:fastpath.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    data = dict(config.raw)
    data["proxy"] = dict(data["proxy"], tls_cert=str(cert), tls_key=str(key))
    tls_config = parse_config(data, "tls test")
    t0 = time.monotonic()
    with Stack(tls_config, ready_timeout_s=40) as stack:
        assert time.monotonic() - t0 < 40
        with channel(stack.proxy_address, str(cert)) as ch:
            assert pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=5).live


def test_json_logs_are_one_object_per_line(config, tmp_path):
    path = config.write(tmp_path / "fastpath.toml")
    proc = subprocess.Popen(fastpath_argv("--log-format", "json", "proxy", "--config", str(path), "--no-controller"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in read_until(proc, "fastpath proxy listening", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records, "no log lines"
    assert any("draining" in r["message"] for r in records), records
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)


def test_log_format_is_validated():
    out = subprocess.run(fastpath_argv("--log-format", "xml", "flows"), capture_output=True, text=True)
    assert out.returncode == 2 and "json" in out.stderr


@pytest.fixture(autouse=True)
def _no_token_prompt(monkeypatch):
    monkeypatch.setenv("FASTPATH_CONTROL_TOKEN", os.environ.get("FASTPATH_CONTROL_TOKEN", "fastpath-test-token"))


def test_no_child_is_started_with_the_cwd_on_its_import_path():
    """Every `python -m`/`-c` child in the package goes through fastpath.launch (or passes -P itself)."""
    import re

    root = Path(__file__).resolve().parents[2]
    bad = []
    for folder in ("src", "offload", "bench"):
        for f in (root / folder).rglob("*.py"):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if re.search(r'sys\.executable,\s*"-[mc]"', line):
                    bad.append(f"{f.relative_to(root)}:{n}: {line.strip()}")
    assert not bad, bad
