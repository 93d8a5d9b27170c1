"""Shared fixtures for the benchmark harness tests: a real bench backend in a child process."""
from __future__ import annotations

import pytest

from fastpath.bench import backend, procs


@pytest.fixture(scope="session")
def bench_backend(tmp_path_factory: pytest.TempPathFactory):
    """host:port of a bench backend process, stopped by PID at the end."""
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    proc = procs.spawn(procs.python_module_argv("fastpath.bench.backend", "--listen", "127.0.0.1:0"),
                       log_path=log, stdout_pipe=True)
    try:
        line = procs.read_line_until(proc, backend.READY_PREFIX, 30)
        yield line.split()[-1]
    finally:
        procs.stop(proc)
