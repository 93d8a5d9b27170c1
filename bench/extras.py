"""Figures other modules measure, run in a child process of the benchmark.

`fastpath.bench.router_cost.measure(...)` (router decision time vs fleet size)
and `fastpath.bench.splice_bench.measure(quick)` (kernel splice vs relay) are
written alongside the harness. Each runs in its own child, bounded in time,
so a hang or a crash there costs a note in the results, not the whole run.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import procs

UNAVAILABLE_EXIT = 3

_CHILD = r"""
import importlib, json, sys
try:
    name, _, func = sys.argv[1].partition(":")
    measure = getattr(importlib.import_module(name), func or "measure")
    kwargs = json.loads(sys.argv[2])
    try:
        rows = measure(**kwargs)
    except TypeError as e:
        if not kwargs or "argument" not in str(e):
            raise
        rows = measure()
except ModuleNotFoundError as e:
    print(f"not available: {e}", file=sys.stderr)
    sys.exit(3)
with open(sys.argv[3], "w") as f:
    json.dump(list(rows), f, default=str)
"""


def run_measure(module: str, kwargs: dict[str, Any], timeout_s: float, workdir: Path) -> dict[str, Any]:
    """Calls module.measure(**kwargs) ("module:function" names another function) in a child;
    returns {"available", "rows", "note", "seconds"}."""
    spec = module
    module = module.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return {"available": False, "rows": [], "note": f"not available ({module} is not in this install yet)", "seconds": 0.0}
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{module.rsplit('.', 1)[-1]}.json"
    log = workdir / f"{module.rsplit('.', 1)[-1]}.log"
    t0 = time.monotonic()
    proc = procs.spawn([sys.executable, "-P", "-c", _CHILD, spec, json.dumps(kwargs), str(out)], log_path=log, cwd=workdir)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        return {"available": True, "rows": [], "note": f"{module}.measure did not finish within {timeout_s:.0f} s",
                "seconds": time.monotonic() - t0}
    seconds = time.monotonic() - t0
    if code == UNAVAILABLE_EXIT:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        return {"available": False, "rows": [], "note": " ".join(tail)[-300:] or "not available", "seconds": seconds}
    if code != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        return {"available": True, "rows": [], "note": f"{module}.measure failed (exit {code}): {' | '.join(tail)[-400:]}",
                "seconds": seconds}
    rows = json.loads(out.read_text())
    return {"available": True, "rows": rows, "note": "", "seconds": seconds}
