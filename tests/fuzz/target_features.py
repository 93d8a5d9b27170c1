"""Fuzz target: `features_from_headers`, the routing inputs read from request metadata.

Input layout: records of (selector byte, value chunk); a selector below 0xF0
picks one of the known header names (x-fastpath-* and a few gRPC ones), from
0xF0 up the name itself follows as a chunk.

Contract checked: the result is a RequestFeatures or the error is a
MetadataError whose message starts with the offending header's name; every
field is well formed (model and session visible ASCII of at most 256 bytes,
region and policy tokens of at most 64, SLO and cost finite and >= 0, the
allow-list sorted, unique, at most 32 tokens); and the outcome matches a
plain restatement of the documented rules (last value wins, an empty value
is absent except where it is an error, surrounding blanks ignored).
"""
from __future__ import annotations

import math
import re

from fastpath.router import features as ft

from .fuzz_input import FuzzInput

NAMES = (ft.MODEL, ft.REGION, ft.SESSION, ft.POLICY, ft.SLO_TTFT_MS, ft.MAX_COST, ft.ALLOW_REGIONS,
         b"x-fastpath-unknown", b":path", b"grpc-timeout", b"content-type")
MAX_PAIRS = 24

_VISIBLE = re.compile(rb"[\x21-\x7e]*")
_TOKEN = re.compile(rb"[A-Za-z0-9._-]*")
_TOKEN_STR = re.compile(r"[A-Za-z0-9._-]+")


def headers_of(data: bytes) -> list[tuple[bytes, bytes]]:
    src = FuzzInput(data)
    out: list[tuple[bytes, bytes]] = []
    while src.left() and len(out) < MAX_PAIRS:
        sel = src.byte()
        name = NAMES[sel % len(NAMES)] if sel < 0xF0 else src.chunk()
        out.append((name, src.chunk()))
    return out


def _expected(headers: list[tuple[bytes, bytes]]) -> dict | bytes:
    """The documented rules restated: the fields, or the name of the header that must be refused."""
    want: dict = {"model": "", "region": "", "session": "", "policy": "", "slo_ttft_ms": 0.0, "max_cost": 0.0,
                  "allow_regions": ()}
    for name, value in headers:
        v = value.strip()
        if name in (ft.MODEL, ft.SESSION):
            if not value:
                continue
            if len(v) > ft.MAX_NAME_LEN or not _VISIBLE.fullmatch(v):
                return name
            want["model" if name == ft.MODEL else "session"] = v.decode()
        elif name in (ft.REGION, ft.POLICY):
            if not value:
                continue
            if len(v) > ft.MAX_TOKEN_LEN or not _TOKEN.fullmatch(v):
                return name
            want["region" if name == ft.REGION else "policy"] = v.decode()
        elif name in (ft.SLO_TTFT_MS, ft.MAX_COST):
            try:
                number = float(v) if v and len(v) <= ft.MAX_NUMBER_LEN else -1.0
            except ValueError:
                return name
            if not math.isfinite(number) or number < 0:
                return name
            want["slo_ttft_ms" if name == ft.SLO_TTFT_MS else "max_cost"] = number
        elif name == ft.ALLOW_REGIONS:
            parts = [p.strip() for p in value.split(b",") if p.strip()]
            if not parts or len(parts) > ft.MAX_ALLOW_REGIONS:
                return name
            if any(len(p) > ft.MAX_TOKEN_LEN or not _TOKEN.fullmatch(p) for p in parts):
                return name
            want["allow_regions"] = tuple(sorted({p.decode() for p in parts}))
    return want


def _check_well_formed(f: ft.RequestFeatures) -> None:
    for text, limit in ((f.model, ft.MAX_NAME_LEN), (f.session, ft.MAX_NAME_LEN)):
        assert isinstance(text, str) and len(text) <= limit and _VISIBLE.fullmatch(text.encode()), text
    for text in (f.region, f.policy):
        assert isinstance(text, str) and len(text) <= ft.MAX_TOKEN_LEN and _TOKEN.fullmatch(text.encode()), text
    for number in (f.slo_ttft_ms, f.max_cost):
        assert isinstance(number, float) and math.isfinite(number) and number >= 0, number
    regions = f.allow_regions
    assert isinstance(regions, tuple) and len(regions) <= ft.MAX_ALLOW_REGIONS
    assert list(regions) == sorted(set(regions)), regions
    assert all(_TOKEN_STR.fullmatch(r) and len(r) <= ft.MAX_TOKEN_LEN for r in regions), regions


def one_input(data: bytes) -> None:
    headers = headers_of(data)
    want = _expected(headers)
    try:
        f = ft.features_from_headers(headers)
    except ft.MetadataError as e:
        assert isinstance(want, bytes), f"refused {headers!r} ({e}); expected {want}"
        assert str(e).startswith(want.decode() + ":"), f"error names the wrong header: {e} (expected {want!r})"
        return
    _check_well_formed(f)
    assert not isinstance(want, bytes), f"accepted {headers!r} as {f}; {want!r} should have been refused"
    got = {k: getattr(f, k) for k in want}
    assert got == want, f"{headers!r}: got {got}, expected {want}"
