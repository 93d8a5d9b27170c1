"""Pushed configuration, the controller's side: what each subscriber holds and what it needs next.

Shaped like Envoy's xDS: a subscriber gets the whole state on its first
update (and after every reconnect, since a new stream starts from nothing),
then only what changed, each update carrying the state version and a nonce.
The state is a set of named resources (backends, their telemetry, policies,
router settings, client regions, the merged prompt-prefix index, learned sessions, tenants' remaining
budgets); subscribers ignore types
they do not know, so other kinds of resource can join the stream.

Sessions are the only large set. They come from the fleet state's ordered
change log, so a delta costs what changed, not the size of the map; a
subscriber that fell further behind than the log reaches gets the full state.
Everything else is small and is compared resource by resource.

Nothing queues per subscriber: each update is built when the previous one
has been written, against the state as it is then, so a slow subscriber gets
fewer, larger deltas and never holds the controller's memory or the others.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastpath.config import Config
from fastpath.control.policies import to_message as policy_message
from fastpath.gen import control_pb2 as pb

if TYPE_CHECKING:
    from fastpath.control.fleet_state import FleetState
    from fastpath.control.policies import PolicyStore

Key = tuple[str, str]
SESSION = "session"
PREFIX = "prefix"
BUDGET = "budget"  # a tenant's remaining budgets (fastpath.control.budgets.budget_resources)
TYPES = ("backend", "telemetry", "policy", "settings", "limits", "region", PREFIX, SESSION, BUDGET)
_subscription_ids = itertools.count(1)


def config_resources(config: Config, policies: "PolicyStore") -> dict[Key, pb.Resource]:
    """The resources a config file (with run-time policy overrides) stands for."""
    out: dict[Key, pb.Resource] = {}
    for b in config.backends:
        out["backend", b.name] = pb.Resource(type="backend", name=b.name, backend=pb.BackendSpec(
            name=b.name, address=b.address, region=b.region, cost_per_1k_tokens=b.cost_per_1k_tokens,
            power_budget_watts=b.power_budget_watts, models=list(b.models), metrics_url=b.metrics_url))
    for name in sorted(policies.policies):
        out["policy", name] = pb.Resource(type="policy", name=name, policy=policy_message(policies.policies[name]))
    out["settings", "router"] = pb.Resource(type="settings", name="router", settings=pb.RouterSettings(
        default_policy=policies.default_policy, affinity_max_utilisation=config.affinity_max_utilisation))
    out["limits", "proxy"] = pb.Resource(type="limits", name="proxy", limits=pb.LimitSettings(values=config.limits))
    for client, row in sorted(config.rtt_ms.items()):
        out["region", client] = pb.Resource(type="region", name=client, region=pb.RegionRtt(rtt_ms=row))
    return out


class Subscription:
    """One subscriber's stream: remembers what was sent and builds the next update."""

    def __init__(self, proxy_id: str, types: Iterable[str] = ()) -> None:
        self.proxy_id = proxy_id
        self.id = next(_subscription_ids)
        self.types = frozenset(types) or None  # None: every type
        self.held: dict[Key, pb.Resource] = {}
        self.session_seq = -1  # -1: nothing sent yet, the next update is the full state
        self.sent = 0
        self.version = 0  # the latest version sent
        self.connected_at = time.monotonic()

    def _wants(self, type_: str) -> bool:
        return self.types is None or type_ in self.types

    def next_update(self, state: "FleetState", resources: dict[Key, pb.Resource],
                    config_generation: int) -> pb.ConfigUpdate:
        """The update that brings this subscriber to `state` (an empty delta when nothing changed: a heartbeat)."""
        current = {k: r for k, r in resources.items() if self._wants(k[0])}
        for b in state.config.backends:
            if self._wants("telemetry"):
                current["telemetry", b.name] = pb.Resource(type="telemetry", name=b.name,
                                                           telemetry=state.backend_telemetry(b.name))
        if self._wants(PREFIX):
            current.update(state.prefix_resources())
        sessions = state.session_changes(self.session_seq) if self.session_seq >= 0 else None
        self.sent += 1
        msg = pb.ConfigUpdate(version=state.version, nonce=f"{self.proxy_id}/{self.id}/{self.sent}",
                              full_state=sessions is None, generated_unix_ms=int(time.time() * 1000),
                              config_generation=config_generation)
        if sessions is None:
            msg.resources.extend(current.values())
            if self._wants(SESSION):
                msg.resources.extend(pb.Resource(type=SESSION, name=s, session_backend=b)
                                     for s, b in state.sessions.items())
        else:
            held = self.held
            msg.resources.extend(r for k, r in current.items() if held.get(k) != r)
            msg.removed.extend(pb.ResourceRef(type=t, name=n) for t, n in held.keys() - current.keys())
            if self._wants(SESSION):
                for s, b in sessions.items():
                    if b:
                        msg.resources.append(pb.Resource(type=SESSION, name=s, session_backend=b))
                    else:
                        msg.removed.append(pb.ResourceRef(type=SESSION, name=s))
        msg.offload_sessions.extend(state.offload_requests)
        self.held = current
        self.session_seq = state.session_seq
        self.version = msg.version
        return msg


def has_changes(msg: pb.ConfigUpdate) -> bool:
    return msg.full_state or bool(msg.resources) or bool(msg.removed)
