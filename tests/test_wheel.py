"""The wheel is what users install: built from this tree, installed into a fresh virtualenv outside any
checkout, it runs `fastpath up`, `fastpath demo` and, as root, `fastpath up --offload ebpf` with the
kernel splice taking repeat sessions. Built where a C compiler is, its fast path runs compiled (mypyc),
with the pure-Python fallback beside it (FASTPATH_PURE=1); built with FASTPATH_COMPILE=0 it is pure."""
from __future__ import annotations

import json
import os
import re
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

from tests.support.requirements import missing

from fastpath import _build
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port_block
from fastpath.up import children_of
from tests.support.output import read_until

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("CI") == "true"
PORTS = 40  # a --base-port block wide enough for the default stack
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


HAVE_CC = shutil.which(os.environ.get("CC") or "cc") is not None
# Where each hot module was loaded from, and what `fastpath --version` says, in the installed package.
PROBE = ("import json, importlib, fastpath._build as b; "
         "print(json.dumps({m: importlib.import_module(m).__file__ for m in b.HOT_MODULES}))")


def _build_wheel(tmp: Path, **env: str) -> Path:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp / "dist")],
                           capture_output=True, text=True, cwd=tmp, env={**os.environ, **env})
    assert built.returncode == 0, built.stderr[-3000:]
    return next((tmp / "dist").glob("fastpath-*.whl"))


def _install(wheel: Path, tmp: Path) -> dict:
    """Installs `wheel` into a fresh venv under `tmp`; returns its paths and an environment that runs it."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, cwd=tmp)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # A run directory outside the checkout that holds a folder named fastpath, which must not be imported.
    run = tmp / "run"
    (run / "fastpath").mkdir(parents=True)
    (run / "fastpath" / "__init__.py").write_text("raise ImportError('the folder in the cwd was imported')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FASTPATH_BPF_DIR", "VIRTUAL_ENV", "FASTPATH_PURE")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return {"wheel": wheel, "venv": venv, "run": run, "env": env, "fastpath": str(venv / "bin" / "fastpath"),
            "python": str(venv / "bin" / "python")}


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> dict:
    """The wheel as `pip wheel .` builds it here (compiled where a C compiler is), in a fresh venv; built once."""
    if not HAVE_CC and CI:
        pytest.fail("CI installs a C compiler: the wheel's compiled fast path must be built and tested")
    tmp = tmp_path_factory.mktemp("wheel")
    return _install(_build_wheel(tmp), tmp)


def _loaded_from(inst: dict, **env: str) -> dict[str, str]:
    out = subprocess.run([inst["python"], "-c", PROBE], cwd=inst["run"].parent, env={**inst["env"], **env},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _version(inst: dict, **env: str) -> str:
    out = subprocess.run([inst["fastpath"], "--version"], cwd=inst["run"], env={**inst["env"], **env},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_wheel_carries_the_bpf_headers_and_objects(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for header in sorted(p.relative_to(ROOT / "bpf") for p in (ROOT / "bpf").rglob("*.h")):
        assert f"fastpath/bpf/{header}" in names
    objects = [n for n in names if n.startswith("fastpath/bpf/build/") and n.endswith(".bpf.o")]
    if shutil.which("clang"):
        want = {f"fastpath/bpf/build/{p.name[:-2]}.o" for p in (ROOT / "bpf").glob("*.bpf.c")}
        assert want <= set(objects), (want, objects)
    assert not any(n.startswith("tests/") for n in names)
    # Every compiled (mypyc) module ships beside its pure-Python source, the fallback, and with the
    # shared library all of them load.
    shims = [n for n in names if n.startswith("fastpath/") and n.endswith(".so") and "__mypyc." not in n]
    for so in shims:
        assert so.split(".", 1)[0] + ".py" in names, f"{so} without its pure-Python fallback"
    group = [n for n in names if n.startswith("fastpath/_hot__mypyc.") and n.endswith(".so")]
    assert len(group) == (1 if shims else 0), (group, shims)
    # Installed: the package and its BPF files come from the venv, not from this checkout or the cwd.
    probe = ("import fastpath, fastpath.offload.bpf_files as b; "
             "print(fastpath.__file__); print(b.bpf_dir()); print(b.bpf_object('sockmap_splice.bpf.o').is_file())")
    out = subprocess.run([installed["python"], "-c", probe], cwd=installed["run"].parent, env=installed["env"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pkg, bpf_dir, obj = out.stdout.split()
    assert pkg.startswith(str(installed["venv"])) and bpf_dir.startswith(str(installed["venv"]))
    assert obj == "True" or not shutil.which("clang")


def _up(installed: dict, tmp: Path, *args: str, env: dict[str, str] | None = None
        ) -> tuple[subprocess.Popen, str, Path]:
    base = free_port_block(PORTS)
    err = tmp / f"up-{base}.err"
    proc = subprocess.Popen([installed["fastpath"], "up", "--base-port", str(base), *args], cwd=installed["run"],
                            env={**installed["env"], **(env or {})}, stdout=subprocess.PIPE, stderr=open(err, "w"),
                            text=True)
    return proc, read_until(proc, "ready in", 90), err


def _mapped_extensions(pid: int) -> set[str]:
    """fastpath's compiled objects mapped into `pid` or any process under it (the proxy among them): the
    shared library with every hot module's code ("_hot") and the per-module extensions Python loaded."""
    names = set()
    for p in [pid, *children_of(pid)]:
        try:
            maps = Path(f"/proc/{p}/maps").read_text()
        except OSError:
            continue
        names |= set(re.findall(r"/fastpath/(_hot)__mypyc\.", maps))
        names |= set(re.findall(r"/fastpath/(?:h2|dataplane|router)/(\w+)\.cpython", maps))
    return names


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


@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_installed_up_serves_from_a_cwd_with_a_fastpath_folder(installed, tmp_path, build):
    if build == "compiled" and not HAVE_CC:
        missing("no C compiler: the wheel was built pure")
    proc, text, err = _up(installed, tmp_path, env={"FASTPATH_PURE": "1"} if build == "pure" else None)
    try:
        assert "fastpath proxy listening on" in text, err.read_text()[-3000:]
        assert _infer(_address(text, "fastpath proxy listening on ")) == "llama-3-8b"
        # The processes serving that call run the build asked for: the proxy maps the compiled call path, or none.
        mapped = _mapped_extensions(proc.pid)
        if build == "compiled":
            assert {"_hot", "downstream", "upstream"} <= mapped, mapped
        else:
            assert mapped == set(), mapped
    finally:
        rc = _stop(proc)
    assert rc == 0, err.read_text()[-3000:]


def test_installed_fast_path_is_compiled_and_falls_back_to_pure(installed):
    if not HAVE_CC:
        missing("no C compiler: the wheel was built pure")
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for module in _build.HOT_MODULES:
        stem = module.replace(".", "/")
        assert any(n.startswith(stem + ".") and n.endswith(".so") for n in names), f"{module} not compiled in the wheel"
        assert stem + ".py" in names, f"{module} without its pure-Python source"
    site = str(installed["venv"])
    compiled = _loaded_from(installed)
    assert all(f.startswith(site) and f.endswith(".so") for f in compiled.values()), compiled
    assert _version(installed).splitlines()[1] == f"fast path: compiled (mypyc, {len(_build.HOT_MODULES)} modules)"
    pure = _loaded_from(installed, FASTPATH_PURE="1")
    assert all(f.startswith(site) and f.endswith(".py") for f in pure.values()), pure
    assert _version(installed, FASTPATH_PURE="1").splitlines()[1] == "fast path: pure Python (FASTPATH_PURE=1)"


def test_wheel_built_without_compiling_is_pure_and_serves(tmp_path):
    wheel = _build_wheel(tmp_path, FASTPATH_COMPILE="0")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so") or n.endswith(_build.MANIFEST)]
    inst = _install(wheel, tmp_path)
    assert all(f.endswith(".py") for f in _loaded_from(inst).values())
    assert "fast path: pure Python (this install has no compiled modules)" in _version(inst)
    proc, text, err = _up(inst, tmp_path)
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
        missing("the ebpf offload needs root")
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
