"""Small fleets and telemetry for router tests, built through the real config parser."""
from __future__ import annotations

from typing import Any

from fastpath.config import Config, parse_config
from fastpath.gen import control_pb2

RTT = {
    "near": {"near": 2.0, "far": 60.0, "mid": 30.0},
    "far": {"near": 60.0, "far": 2.0, "mid": 30.0},
    "mid": {"near": 30.0, "far": 30.0, "mid": 2.0},
}

POLICIES = {
    "balanced": {"ttft": 0.35, "cost": 0.15, "affinity": 0.2, "capacity": 0.15, "proximity": 0.15},
    "latency-first": {"ttft": 0.55, "affinity": 0.15, "capacity": 0.1, "proximity": 0.2},
    "cost-first": {"ttft": 0.15, "cost": 0.6, "affinity": 0.1, "capacity": 0.1, "proximity": 0.05},
}


def site(name: str, region: str, cost: float = 0.5, models: tuple[str, ...] = ("m",), slots: int = 8,
         prefill_ms: float = 25.0, power: float = 5000.0) -> dict[str, Any]:
    return {
        "name": name,
        "address": "127.0.0.1:1",
        "region": region,
        "cost_per_1k_tokens": cost,
        "power_budget_watts": power,
        "models": list(models),
        "sim": {"slots": slots, "prefill_ms": prefill_ms},
    }


def fleet(*sites: dict[str, Any], rtt: dict | None = None, policies: dict | None = None,
          affinity_max_utilisation: float = 0.85, default_policy: str = "balanced") -> Config:
    data = {
        "router": {"default_policy": default_policy, "affinity_max_utilisation": affinity_max_utilisation},
        "policies": policies or POLICIES,
        "regions": {"rtt_ms": rtt or RTT},
        "backends": list(sites),
    }
    return parse_config(data, "<test fleet>")


def telemetry(config: Config, version: int = 1, sessions: dict[str, str] | None = None,
              **per_backend: dict[str, Any]) -> control_pb2.FleetTelemetry:
    """Telemetry with metrics for every backend; per_backend[name] overrides fields."""
    t = control_pb2.FleetTelemetry(version=version)
    for b in config.backends:
        fields = {"name": b.name, "healthy": True, "has_metrics": True,
                  "max_num_seqs": float(b.sim.slots if b.sim else 8)}
        fields.update(per_backend.get(b.name.replace("-", "_"), {}))
        t.backends.add(**fields)
    for s, name in (sessions or {}).items():
        t.session_backend[s] = name
    return t
