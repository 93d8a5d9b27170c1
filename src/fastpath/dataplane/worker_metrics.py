"""Every worker's Prometheus exposition as one, each sample labelled `worker="<i>"`.

The text format wants a metric family's samples together under one HELP/TYPE
header, so the texts are regrouped by family rather than concatenated. Values
are not summed (a gauge such as a snapshot version must not be): dashboards
aggregate with `sum without (worker) (...)`. A few dozen lines of string work
on a scrape (not the hot path); no parser library is needed for it.
"""
from __future__ import annotations

import re


SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount")  # series of one family
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _name(sample: str) -> str:
    """The metric name a sample line starts with (the text format's name grammar)."""
    m = _NAME.match(sample.lstrip(" \t"))
    return m.group(0) if m else ""


def _label(sample: str, worker: str) -> str:
    sample = sample.lstrip(" \t")
    name = _name(sample)
    rest = sample[len(name):]
    label = f'worker="{worker}"'
    if rest.startswith("{"):
        close = rest.rfind("}")
        inner = rest[1:close].strip().rstrip(",")
        return f"{name}{{{inner + ',' if inner else ''}{label}}}{rest[close + 1:]}"
    return f"{name}{{{label}}}{rest}"


def merge_expositions(texts: list[tuple[str, str]]) -> str:
    """(worker id, exposition text) pairs -> one exposition with a worker label on every sample."""
    headers: dict[str, dict[str, str]] = {}  # family -> HELP/TYPE line (the first worker's wins)
    samples: dict[str, list[str]] = {}
    for worker, text in texts:
        family = ""
        for line in text.split("\n"):  # the format's only line break (not str.splitlines' many)
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    headers.setdefault(family, {}).setdefault(parts[1], line)
                    samples.setdefault(family, [])
                continue
            name = _name(line)
            if name != family and not (name.startswith(family) and name[len(family):] in SUFFIXES):
                family = name  # a sample without a header of its own
                headers.setdefault(family, {})
            samples.setdefault(family, []).append(_label(line, worker))
    out: list[str] = []
    for family in headers:
        out += [headers[family][k] for k in ("HELP", "TYPE") if k in headers[family]]
        out += samples.get(family, [])
    return "\n".join(out) + "\n" if out else ""
