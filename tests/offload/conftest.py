"""Fixtures of the offload tests: real BPF in the real kernel, or a clear reason why not.

Outside CI a machine without root or BPF skips the bpf-marked tests with the
reason; under CI=true the same condition fails them, so a CI run can never
pass without having exercised the kernel path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.requirements import missing

REPO = Path(__file__).resolve().parents[2]


def _bpf_problem() -> str:
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN)"
    if shutil.which("clang") is None and not (REPO / "bpf/build/sockmap_splice.bpf.o").exists():
        return "clang missing and bpf/build not built: apt-get install clang llvm libbpf-dev, make bpf"
    if shutil.which("clang"):
        r = subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=False, capture_output=True, text=True)
        if r.returncode != 0:
            return f"make -C bpf failed: {r.stderr.strip()[-400:]}"
    from fastpath.offload.bpf_cli import REQUIRED, features

    feats = features()
    bad = [f"{k}: {feats[k][1]}" for k in REQUIRED if not feats.get(k, (False, ""))[0]]
    return "; ".join(bad)


@pytest.fixture(scope="session")
def bpf_ready() -> None:
    problem = _bpf_problem()
    if problem:
        missing(f"BPF unavailable: {problem}")


@pytest.fixture
def driver(bpf_ready):
    from fastpath.offload.ebpf import EbpfDriver

    d = EbpfDriver(pin_dir=None)
    yield d
    d.close()


@pytest.fixture
def servers():
    """Starts echo server processes on demand; kills them all (by PID) afterwards."""
    from tests.offload.splice_support import start_server

    started = []

    def start():
        proc, port = start_server()
        started.append(proc)
        return proc, port

    yield start
    for p in started:
        p.kill()
