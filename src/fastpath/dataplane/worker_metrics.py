"""Every worker's Prometheus exposition as one, each sample labelled `worker="<i>"`.

The text format wants a metric family's samples together under one HELP/TYPE
header, so the texts are regrouped by family rather than concatenated. Values
are not summed (a gauge such as a snapshot version must not be): dashboards
aggregate with `sum without (worker) (...)`. A few dozen lines of string work
on a scrape (not the hot path); no parser library is needed for it.
"""
from __future__ import annotations


def _name(sample: str) -> str:
    end = len(sample)
    for ch in "{ ":
        i = sample.find(ch)
        if i != -1:
            end = min(end, i)
    return sample[:end]


def _label(sample: str, worker: str) -> str:
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
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    headers.setdefault(family, [])
                    samples.setdefault(family, [])
                    if line not in headers[family]:
                        headers[family].append(line)
                continue
            name = _name(line)
            if not family or not name.startswith(family):
                family = name  # a sample without a header of its own
                headers.setdefault(family, [])
            samples.setdefault(family, []).append(_label(line, worker))
    out: list[str] = []
    for family in headers:
        out += headers[family]
        out += samples.get(family, [])
    return "\n".join(out) + "\n" if out else ""
