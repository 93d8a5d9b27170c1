"""Fuzz target: merging workers' expositions (`fastpath.dataplane.worker_metrics.merge_expositions`).

Input: the whole input is one worker's exposition; the merge sees it from two workers.

Contract checked: the merge never raises; when the input is a valid exposition
(the strict parser accepts it) without a `worker` label, the merged page is
valid too and holds every input sample once per worker, with its labels and
value unchanged plus `worker="<id>"`.
"""
from __future__ import annotations

import math

from fastpath.control import promtext as pt
from fastpath.dataplane.worker_metrics import merge_expositions


def _key(s: pt.Sample) -> tuple:
    value = "nan" if math.isnan(s.value) else s.value
    return (s.name, tuple(sorted(s.labels)), value, s.timestamp_ms)


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    merged = merge_expositions([("0", text), ("1", text)])
    try:
        page = pt.parse(text)
    except pt.PromTextError:
        return
    if any(k == "worker" for s in page.samples for k, _ in s.labels) or "\r" in text:
        return
    out = pt.parse(merged)
    for w in ("0", "1"):
        got = sorted(_key(pt.Sample(s.name, tuple(kv for kv in s.labels if kv[0] != "worker"), s.value, s.timestamp_ms))
                     for s in out.samples if ("worker", w) in s.labels)
        assert got == sorted(_key(s) for s in page.samples), (w, merged)
    assert len(out.samples) == 2 * len(page.samples)
