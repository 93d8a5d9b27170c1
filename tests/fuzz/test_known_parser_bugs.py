"""Contract violations the fuzzers found, kept as reproducers until the parsers are fixed.

Each case is a strict xfail: it fails (as expected) while the bug is there,
and turns into an XPASS error the day it is fixed, so the marker is removed
and the input stays behind as a regression test.
"""
from __future__ import annotations

import pytest

from .registry import TARGETS

KNOWN = [
    pytest.param(
        "promtext", b"\rfoo 1\nfoo 2\n",
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
            "promtext.parse(text, only=[...]) drops a sample line that starts with '\\r', which the full parse "
            "reads (it strips ' \\t\\r' from both ends; _wanted_lines only tolerates leading ' \\t')")),
        id="promtext-only-skips-line-starting-with-CR"),
]


@pytest.mark.parametrize("target,data", KNOWN)
def test_known_bug_reproducer(target, data):
    TARGETS[target](data)
