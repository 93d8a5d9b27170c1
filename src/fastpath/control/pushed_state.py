"""Pushed configuration, the subscriber's side: folds ConfigUpdates into the state they describe.

Sans-IO: fed update messages, it keeps the resources by type and name and
says what changed, so a proxy rebuilds its routing config only when backends,
policies or settings moved, and its fleet snapshot when telemetry or sessions
did. A full-state update replaces everything; a delta upserts and removes.
Resource types it does not know are kept (by name) and otherwise ignored.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from fastpath.config import AXES, Config, parse_config
from fastpath.gen import control_pb2 as pb

CONFIG_TYPES = frozenset({"backend", "settings", "limits", "region"})


@dataclass
class Changes:
    """What one update changed."""

    config: bool = False  # backends, settings, limits or regions
    policies: bool = False
    telemetry: bool = False
    sessions: bool = False
    full: bool = False
    other: set[str] = field(default_factory=set)  # resource types this side does not interpret


@dataclass
class FleetView:
    """The fleet telemetry the router reads, in the shape of a FleetTelemetry message.

    `session_backend` is the live dict this state updates in place (single
    assignments, atomic for readers on another thread): a new snapshot does
    not copy the session map.
    """

    version: int
    generated_unix_ms: int
    backends: list[pb.BackendTelemetry]
    session_backend: dict[str, str]
    offload_sessions: list[str]
    prefix_index: list[pb.PrefixBlocks] = field(default_factory=list)  # merged prompt-prefix blocks per backend


class PushedState:
    """Resources by type and name, as the controller's updates describe them."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, pb.Resource]] = {}
        self.sessions: dict[str, str] = {}
        self.offload_sessions: list[str] = []
        self.version = 0
        self.nonce = ""
        self.generated_unix_ms = 0
        self.config_generation = 0
        self.updates = 0
        self.full_updates = 0

    def apply(self, msg: pb.ConfigUpdate) -> Changes:
        ch = Changes(full=msg.full_state)
        if msg.full_state:
            self.full_updates += 1
            old = self.resources
            self.resources = {}
            for t, named in old.items():  # anything held that the full state lacks is a change
                if named:
                    self._mark(ch, t)
            if self.sessions:  # a new dict: the router, reading the old one meanwhile, never sees it half empty
                self.sessions = {}
                ch.sessions = True
        for r in msg.resources:
            if r.type == "session":
                if self.sessions.get(r.name) != r.session_backend:
                    self.sessions[r.name] = r.session_backend
                    ch.sessions = True
                continue
            named = self.resources.setdefault(r.type, {})
            if msg.full_state or named.get(r.name) != r:
                named[r.name] = r
                self._mark(ch, r.type)
        for ref in msg.removed:
            if ref.type == "session":
                if self.sessions.pop(ref.name, None) is not None:
                    ch.sessions = True
            elif self.resources.get(ref.type, {}).pop(ref.name, None) is not None:
                self._mark(ch, ref.type)
        if list(msg.offload_sessions) != self.offload_sessions:
            self.offload_sessions = list(msg.offload_sessions)
            ch.telemetry = True
        self.version = msg.version
        self.nonce = msg.nonce
        self.generated_unix_ms = msg.generated_unix_ms
        self.config_generation = msg.config_generation
        self.updates += 1
        return ch

    @staticmethod
    def _mark(ch: Changes, type_: str) -> None:
        if type_ in CONFIG_TYPES:
            ch.config = True
        elif type_ == "policy":
            ch.policies = True
        elif type_ in ("telemetry", "prefix"):
            ch.telemetry = True
        else:
            ch.other.add(type_)

    def named(self, type_: str) -> dict[str, pb.Resource]:
        return self.resources.get(type_, {})

    def view(self, extra: list[pb.BackendTelemetry] = ()) -> FleetView:  # type: ignore[assignment]
        backends = [r.telemetry for r in self.named("telemetry").values()]
        backends.extend(extra)
        prefix = [r.prefix for r in self.named("prefix").values()]
        return FleetView(self.version, self.generated_unix_ms, backends, self.sessions, list(self.offload_sessions),
                         prefix)

    def policy_list(self) -> pb.PolicyList:
        settings = self.named("settings").get("router")
        default = settings.settings.default_policy if settings is not None else ""
        return pb.PolicyList(default_policy=default,
                             policies=[r.policy for _, r in sorted(self.named("policy").items())])

    def config_data(self, base: dict[str, Any], keep: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        """`base` (a parsed config file) with the pushed backends, policies, router settings, limits and regions.

        Backends named in `keep` but no longer pushed stay, in their old place
        and with their old spec, when `base` has them: callers that index
        backends by position (a running proxy) keep every index valid.
        """
        data = copy.deepcopy(base)
        pushed = {n: r.backend for n, r in self.named("backend").items()}
        old = {b.get("name"): b for b in base.get("backends", []) if isinstance(b, dict)}
        order = list(keep) + sorted(n for n in pushed if n not in keep)
        backends = []
        for name in order:
            spec = pushed.get(name)
            if spec is None:
                if name in old:
                    backends.append(old[name])
                continue
            entry = {"name": spec.name, "address": spec.address, "region": spec.region,
                     "cost_per_1k_tokens": spec.cost_per_1k_tokens, "power_budget_watts": spec.power_budget_watts,
                     "models": list(spec.models)}
            if spec.metrics_url:
                entry["metrics_url"] = spec.metrics_url
            if "sim" in old.get(name, {}):
                entry["sim"] = old[name]["sim"]
            backends.append(entry)
        data["backends"] = backends
        policies = {n: {a: getattr(r.policy, a) for a in AXES} for n, r in self.named("policy").items()}
        if policies:
            data["policies"] = policies
        settings = self.named("settings").get("router")
        if settings is not None:
            router = data.setdefault("router", {})
            router["default_policy"] = settings.settings.default_policy
            router["affinity_max_utilisation"] = settings.settings.affinity_max_utilisation
        limits = self.named("limits").get("proxy")
        if limits is not None:
            data["limits"] = {k: int(v) if math.isfinite(v) and v == int(v) else v
                              for k, v in limits.limits.values.items()}
        regions = self.named("region")
        if regions:
            data.setdefault("regions", {})["rtt_ms"] = {n: dict(r.region.rtt_ms) for n, r in regions.items()}
        return data

    def config(self, base: Config, keep: list[str] = ()) -> Config:  # type: ignore[assignment]
        """A Config: `base` with what was pushed (raises ConfigError when the result is not valid)."""
        return parse_config(self.config_data(base.raw, keep), f"{base.source} + controller push v{self.version}")
