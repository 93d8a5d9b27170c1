"""Helpers for the benchmark harness tests."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.requirements import missing


def need_tool(found: bool, what: str) -> None:
    """A missing tool skips the test on a developer machine and fails it under CI=true."""
    if not found:
        missing(f"{what} not installed")


def which(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()
