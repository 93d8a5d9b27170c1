"""Three-decimal formatting of scores in [0, 1], as `b"%.3f" % v`, from a table.

The decision trailer carries six scores per call; `%.3f` goes through the
float-to-decimal conversion each time, a table lookup does not. Values within
a hair of a rounding tie, and values outside (0, 1] (zero too: -0.0 prints as
"-0.000"), take the exact `%` path, so the output is always what `%.3f` gives.
"""
from __future__ import annotations

from typing import Final

_TABLE: Final = [b"%.3f" % (i / 1000) for i in range(1001)]
_TIE_EPS: Final = 1e-6  # v*1000 carries ~1e-13 of rounding error; this stays far above it


def fixed3(v: float) -> bytes:
    """`b"%.3f" % v`."""
    if 0.0 < v <= 1.0:
        x = v * 1000.0
        i = int(x)
        frac = x - i
        if frac < 0.5 - _TIE_EPS:
            return _TABLE[i]
        if frac > 0.5 + _TIE_EPS:
            return _TABLE[i + 1]
    return b"%.3f" % v
