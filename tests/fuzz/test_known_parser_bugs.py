"""Contract violations the fuzzers found, kept as reproducers until the parsers are fixed.

Each case is a strict xfail: it fails (as expected) while the bug is there,
and turns into an XPASS error the day it is fixed, so the marker is removed
and the input stays behind as a regression test.
"""
from __future__ import annotations

import pytest

from .registry import TARGETS

KNOWN = [
    # promtext.parse(text, only=[...]) used to drop a sample line starting with '\r' that the full parse reads.
    pytest.param("promtext", b"\rfoo 1\nfoo 2\n", id="promtext-only-keeps-line-starting-with-CR"),
]


@pytest.mark.parametrize("target,data", KNOWN)
def test_known_bug_reproducer(target, data):
    TARGETS[target](data)
