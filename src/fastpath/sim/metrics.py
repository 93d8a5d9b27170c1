"""Prometheus text exposition for a simulated site, with vLLM's metric names.

The controller scrapes real vLLM servers and simulated sites alike, so the
names and labels are vLLM's (`vllm:num_requests_waiting{model_name=...}`
and friends); the simulator's own extras (power, slots) carry the
`fastpath_sim_` prefix.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# vLLM's buckets for vllm:time_to_first_token_seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass
class Histogram:
    """A cumulative-bucket histogram, as Prometheus clients keep one."""

    buckets: tuple[float, ...] = TTFT_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = []
        acc = 0
        for le, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{le:g}"}} {acc}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.n}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.n}")
        return out


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class ModelCounters:
    """Per-model counters a site keeps for its /metrics."""

    ttft: Histogram = field(default_factory=Histogram)
    success: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0


def render(
    *,
    site: str,
    models: tuple[str, ...],
    waiting: dict[str, int],
    running: dict[str, int],
    cache_usage: float,
    counters: dict[str, ModelCounters],
    power_draw: float,
    power_budget: float,
    slots: int,
    kv_hits: int,
    kv_misses: int,
    fault: str,
) -> str:
    """The Prometheus text page of a site."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    labels = {m: f'model_name="{escape_label(m)}"' for m in models}
    family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.")
    lines += [f"vllm:num_requests_running{{{labels[m]}}} {running.get(m, 0)}" for m in models]
    family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.")
    lines += [f"vllm:num_requests_waiting{{{labels[m]}}} {waiting.get(m, 0)}" for m in models]
    family("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.")
    lines += [f"vllm:gpu_cache_usage_perc{{{labels[m]}}} {cache_usage:.6f}" for m in models]
    family("vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds.")
    for m in models:
        lines += counters[m].ttft.lines("vllm:time_to_first_token_seconds", labels[m])
    family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
    lines += [f"vllm:request_success_total{{{labels[m]}}} {counters[m].success}" for m in models]
    family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.")
    lines += [f"vllm:prompt_tokens_total{{{labels[m]}}} {counters[m].prompt_tokens}" for m in models]
    family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.")
    lines += [f"vllm:generation_tokens_total{{{labels[m]}}} {counters[m].generation_tokens}" for m in models]
    family("fastpath_sim_request_errors_total", "counter", "Requests that ended in an error status.")
    lines += [f"fastpath_sim_request_errors_total{{{labels[m]}}} {counters[m].errors}" for m in models]
    family("fastpath_sim_power_draw_watts", "gauge", "Simulated power draw: idle + per-slot x running.")
    lines.append(f"fastpath_sim_power_draw_watts {power_draw:g}")
    family("fastpath_sim_power_budget_watts", "gauge", "The site's power budget.")
    lines.append(f"fastpath_sim_power_budget_watts {power_budget:g}")
    family("fastpath_sim_max_num_seqs", "gauge", "Batch slots (vLLM's max_num_seqs).")
    lines.append(f"fastpath_sim_max_num_seqs {slots}")
    family("fastpath_sim_kv_cache_lookups_total", "counter", "Warm-cache lookups by result.")
    lines.append(f'fastpath_sim_kv_cache_lookups_total{{result="hit"}} {kv_hits}')
    lines.append(f'fastpath_sim_kv_cache_lookups_total{{result="miss"}} {kv_misses}')
    family("fastpath_sim_fault", "gauge", "The fault injected into this site (1 for the active mode).")
    lines.append(f'fastpath_sim_fault{{site="{escape_label(site)}",fault="{escape_label(fault)}"}} 1')
    return "\n".join(lines) + "\n"


def parse_prometheus_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A small reader of the text format: (name, sorted labels) → value.

    Enough for tests and tools to check a site's page; raises ValueError on a
    line it cannot read.
    """
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels: list[tuple[str, str]] = []
        if "{" in line:
            name, _, rest = line.partition("{")
            body, sep, value = rest.rpartition("}")
            if not sep:
                raise ValueError(f"line {lineno}: unclosed label set: {line!r}")
            i = 0
            while i < len(body):
                eq = body.index("=", i)
                key = body[i:eq].strip().lstrip(",").strip()
                if body[eq + 1] != '"':
                    raise ValueError(f"line {lineno}: label {key} value not quoted: {line!r}")
                j = eq + 2
                buf = []
                while body[j] != '"':
                    if body[j] == "\\":
                        j += 1
                        buf.append({"n": "\n"}.get(body[j], body[j]))
                    else:
                        buf.append(body[j])
                    j += 1
                labels.append((key, "".join(buf)))
                i = j + 1
                while i < len(body) and body[i] in ", ":
                    i += 1
        else:
            name, _, value = line.partition(" ")
        parts = value.split()
        if not parts:
            raise ValueError(f"line {lineno}: no value: {line!r}")
        out[(name.strip(), tuple(sorted(labels)))] = float(parts[0])
    return out
