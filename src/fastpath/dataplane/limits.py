"""The proxy's per-connection limits: `fastpath.h2.constraints.Constraints` under its dataplane name.

Every limit and its formula is written down in `fastpath.h2.constraints`.
"""
from __future__ import annotations

from fastpath.h2.constraints import Constraints as Limits
from fastpath.h2.constraints import TokenBucket

__all__ = ["Limits", "TokenBucket"]
