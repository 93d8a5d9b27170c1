"""A test's missing privilege or tool: skipped on a developer machine, a failure under CI=true.

CI runs as root with every tool installed, so there the same condition means a
broken install, and a run that skipped the test must not pass.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(why: str) -> NoReturn:
    """Ends the test for want of `why` (what is missing and, where known, how to get it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (required under CI=true)")
    pytest.skip(why)
