"""Fuzz target: the Prometheus text parser (`fastpath.control.promtext.parse`).

Input: the whole input is an exposition, as bytes off the wire.

Contract checked: strict parsing returns an Exposition or raises
PromTextError (nothing else) naming a line that exists; lenient parsing
never raises, and agrees with strict parsing (same result when strict
succeeds; its first skipped line is strict's error otherwise); every sample
is well formed (metric and label names valid, labels unique, a float value,
an int64 timestamp or none); a sample written back with format_sample parses
to the same sample; and `only=` gives exactly the lenient parse's samples of
those families.
"""
from __future__ import annotations

import math
import re

from fastpath.control import promtext as pt

ROUND_TRIPS = 8  # samples per input written back and re-read (each is a parse)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _same(a: pt.Sample, b: pt.Sample) -> bool:
    values = a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
    return values and (a.name, a.labels, a.timestamp_ms) == (b.name, b.labels, b.timestamp_ms)


def _check_sample(s: pt.Sample) -> None:
    assert _NAME.fullmatch(s.name), s.name
    keys = [k for k, _ in s.labels]
    assert len(keys) == len(set(keys)), f"repeated label in {s}"
    assert all(_LABEL.fullmatch(k) and isinstance(v, str) for k, v in s.labels), s.labels
    assert isinstance(s.value, float), s.value
    assert s.timestamp_ms is None or (isinstance(s.timestamp_ms, int) and -(2**63) <= s.timestamp_ms < 2**63)
    again = pt.parse(pt.format_sample(s))
    assert len(again.samples) == 1 and _same(again.samples[0], s), f"{s} wrote {pt.format_sample(s)!r}, read back {again.samples}"


def one_input(data: bytes) -> None:
    n_lines = data.count(b"\n") + 1
    lenient = pt.parse(data, strict=False)
    try:
        strict: pt.Exposition | None = pt.parse(data)
    except pt.PromTextError as e:
        assert 1 <= e.lineno <= n_lines, f"error names line {e.lineno} of {n_lines}"
        assert lenient.skipped and lenient.skipped[0] == (e.lineno, e.reason), (lenient.skipped[:1], e.lineno, e.reason)
        strict = None
    if strict is not None:
        assert not lenient.skipped, lenient.skipped
        assert len(strict.samples) == len(lenient.samples) and all(map(_same, strict.samples, lenient.samples))
        assert (strict.help, strict.types) == (lenient.help, lenient.types)
    linenos = [n for n, _ in lenient.skipped]
    assert all(1 <= n <= n_lines for n in linenos), linenos
    for s in lenient.samples[:ROUND_TRIPS]:
        _check_sample(s)
    for name, text in lenient.help.items():
        assert _NAME.fullmatch(name)
        if text == text.strip(" \t\r"):
            assert pt.parse(pt.format_help(name, text)).help == {name: text}, (name, text)
    for name, kind in lenient.types.items():
        assert _NAME.fullmatch(name) and kind in pt.METRIC_TYPES
    if lenient.samples:
        family = lenient.samples[len(lenient.samples) // 2].name
        series = {family + s for s in ("", *pt.FAMILY_SUFFIXES)}
        only = pt.parse(data, strict=False, only=[family])
        want = [s for s in lenient.samples if s.name in series]
        assert len(only.samples) == len(want) and all(map(_same, only.samples, want)), (
            f"only=[{family!r}] read {only.samples}, the full parse has {want}")
