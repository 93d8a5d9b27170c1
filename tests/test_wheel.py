"""The wheel is what users install: built from this tree, installed into a fresh virtualenv outside any
checkout, it runs `fastpath up`, `fastpath demo` and, as root, `fastpath up --offload ebpf` with the
kernel splice taking repeat sessions."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import grpc
import pytest

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port_block

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("CI") == "true"
PORTS = 40  # a --base-port block wide enough for the default stack
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Builds the wheel and installs it into a fresh venv; returns the venv's paths."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp / "dist")],
                           capture_output=True, text=True, cwd=tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "dist").glob("fastpath-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, cwd=tmp)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # A run directory outside the checkout that holds a folder named fastpath, which must not be imported.
    run = tmp / "run"
    (run / "fastpath").mkdir(parents=True)
    (run / "fastpath" / "__init__.py").write_text("raise ImportError('the folder in the cwd was imported')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTPATH_BPF_DIR", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return {"wheel": wheel, "venv": venv, "run": run, "env": env, "fastpath": str(venv / "bin" / "fastpath"),
            "python": str(venv / "bin" / "python")}


def test_wheel_carries_the_bpf_headers_and_objects(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for header in sorted(p.relative_to(ROOT / "bpf") for p in (ROOT / "bpf").rglob("*.h")):
        assert f"fastpath/bpf/{header}" in names
    objects = [n for n in names if n.startswith("fastpath/bpf/build/") and n.endswith(".bpf.o")]
    if shutil.which("clang"):
        want = {f"fastpath/bpf/build/{p.name[:-2]}.o" for p in (ROOT / "bpf").glob("*.bpf.c")}
        assert want <= set(objects), (want, objects)
    assert not any(n.startswith("tests/") for n in names)
    # A compiled (mypyc) module, when setup.py's COMPILED_MODULES lists any, ships beside its pure-Python source.
    for so in (n for n in names if n.startswith("fastpath/") and n.endswith(".so")):
        assert so.split(".", 1)[0] + ".py" in names, f"{so} without its pure-Python fallback"
    # Installed: the package and its BPF files come from the venv, not from this checkout or the cwd.
    probe = ("import fastpath, fastpath.offload.bpf_files as b; "
             "print(fastpath.__file__); print(b.bpf_dir()); print(b.bpf_object('sockmap_splice.bpf.o').is_file())")
    out = subprocess.run([installed["python"], "-c", probe], cwd=installed["run"].parent, env=installed["env"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pkg, bpf_dir, obj = out.stdout.split()
    assert pkg.startswith(str(installed["venv"])) and bpf_dir.startswith(str(installed["venv"]))
    assert obj == "True" or not shutil.which("clang")


def _up(installed: dict, tmp: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    base = free_port_block(PORTS)
    err = tmp / f"up-{base}.err"
    proc = subprocess.Popen([installed["fastpath"], "up", "--base-port", str(base), *args], cwd=installed["run"],
                            env=installed["env"], stdout=subprocess.PIPE, stderr=open(err, "w"), text=True)
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready in"):
            break
    return proc, "".join(lines), err


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _address(text: str, prefix: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return line[len(prefix):].split()[0]


def _infer(address: str, session: str = "") -> str:
    with grpc.insecure_channel(address) as ch:  # one connection per call: a session that comes back
        req = pb.ModelInferRequest(model_name="llama-3-8b")
        req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hello there")
        req.parameters["max_tokens"].int64_param = 4
        md = [("x-fastpath-region", "us-east")] + ([("x-fastpath-session", session)] if session else [])
        resp = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, metadata=md, timeout=15)
        return resp.model_name


def test_installed_up_serves_from_a_cwd_with_a_fastpath_folder(installed, tmp_path):
    proc, text, err = _up(installed, tmp_path)
    try:
        assert "fastpath proxy listening on" in text, err.read_text()[-3000:]
        assert _infer(_address(text, "fastpath proxy listening on ")) == "llama-3-8b"
    finally:
        rc = _stop(proc)
    assert rc == 0, err.read_text()[-3000:]


def test_installed_demo_runs(installed, tmp_path):
    base = free_port_block(PORTS)
    out = subprocess.run([installed["fastpath"], "demo", "--base-port", str(base), "--json", "--requests", "40"],
                         cwd=installed["run"], env=installed["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads(out.stdout)
    assert s["totals"]["ok"] == s["totals"]["requests"] == 40, s.get("error_examples")
    if os.geteuid() == 0:  # as root the embedded demo uses the ebpf driver
        assert "cannot work" not in out.stderr, out.stderr[-2000:]
        assert s["proxy"]["offloaded"] >= 1, s["proxy"]


def test_installed_up_with_ebpf_offload_splices_repeat_sessions(installed, tmp_path):
    if os.geteuid() != 0:
        if CI:
            pytest.fail("CI runs as root: the installed ebpf offload must be tested")
        pytest.skip("the ebpf offload needs root")
    proc, text, err = _up(installed, tmp_path, "--offload", "ebpf")
    try:
        assert "fastpath proxy listening on" in text, err.read_text()[-3000:]
        assert "cannot work" not in err.read_text(), err.read_text()[-2000:]
        proxy = _address(text, "fastpath proxy listening on ")
        metrics = _address(text, "fastpath proxy metrics on ")
        # The first visit is learned; later connections go to the kernel. With one worker per core a
        # repeat connection may reach a worker that learns of the session from the controller's next push.
        offloaded, body = 0.0, ""
        for turn in range(12):
            assert _infer(proxy, session="wheel-session-1") == "llama-3-8b", turn
            with urllib.request.urlopen(metrics, timeout=5) as resp:  # noqa: S310 - our own proxy on loopback
                body = resp.read().decode()
            offloaded = sum(float(line.split()[-1]) for line in body.splitlines()
                            if line.startswith("fastpath_offloaded_total"))
            if offloaded >= 1:
                break
            time.sleep(0.25)
        assert offloaded >= 1, body
    finally:
        rc = _stop(proc)
    assert rc == 0, err.read_text()[-3000:]
