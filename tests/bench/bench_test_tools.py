"""Helpers for the benchmark harness tests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def need_tool(found: bool, what: str) -> None:
    """Skip when a tool is missing on a developer machine; under CI=true, fail instead."""
    if found:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not installed")


def which(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()
