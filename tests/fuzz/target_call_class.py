"""Fuzz target: admission-control metadata (`fastpath.router.call_class.call_class`).

Input: lines `name: value` (split at the first ": "), as header fields off the wire.

Contract checked: call_class returns a CallClass or raises MetadataError (never
anything else); a priority is 0..9 or -1 (absent); a tenant is a token of at
most 64 bytes; a timeout is finite and non-negative, and a grpc-timeout value
written back in the same unit parses to the same seconds.
"""
from __future__ import annotations

import math

from fastpath.router import call_class as cc
from fastpath.router.features import MetadataError


def one_input(data: bytes) -> None:
    headers = []
    for line in data.split(b"\n"):
        name, _, value = line.partition(b": ")
        headers.append((name, value))
    try:
        c = cc.call_class(headers)
    except MetadataError as e:
        assert str(e), "an error must say what was wrong"
        return
    assert c.priority == -1 or 0 <= c.priority <= cc.MAX_PRIORITY
    assert len(c.tenant) <= 64 and c.tenant == c.tenant.strip()
    assert math.isfinite(c.timeout_s) and c.timeout_s >= 0.0
    for name, value in headers:
        if name == cc.GRPC_TIMEOUT:
            v = value.strip()
            assert cc.parse_grpc_timeout(b"%d%c" % (int(v[:-1]), v[-1])) == cc.parse_grpc_timeout(value)
