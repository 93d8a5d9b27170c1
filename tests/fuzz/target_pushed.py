"""Fuzz target: `PushedState`, the proxy's side of pushed configuration, fed update messages.

Input layout: a sequence of chunks (FuzzInput.chunk), each the bytes of one
fastpath.v1.ConfigUpdate as it would arrive on the Subscribe stream; bytes
protobuf cannot decode are skipped, as the gRPC layer would refuse them.

Contract checked: apply() never raises; after every update the state equals a
plain reference model (full state replaces, deltas upsert then remove, last
write wins; sessions likewise); the fleet view lists exactly the telemetry
resources; the policy list holds the policy resources sorted by name; and
building a routing config from the state either works or raises ConfigError
(a message saying what is wrong), never anything else.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError

from fastpath.config import ConfigError, parse_config
from fastpath.control.pushed_state import PushedState
from fastpath.gen import control_pb2 as pb

from .fuzz_input import FuzzInput

BASE = parse_config({"backends": [{"name": "a", "address": "127.0.0.1:1", "region": "r",
                                   "cost_per_1k_tokens": 1.0, "models": ["m"]}]}, "fuzz base")


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    state = PushedState()
    model: dict[tuple[str, str], pb.Resource] = {}
    sessions: dict[str, str] = {}
    order = ["a"]
    while src.left():
        raw = src.chunk()
        try:
            msg = pb.ConfigUpdate.FromString(raw)
        except DecodeError:
            continue
        state.apply(msg)
        if msg.full_state:
            model, sessions = {}, {}
        for r in msg.resources:
            if r.type == "session":
                sessions[r.name] = r.session_backend
            else:
                model[r.type, r.name] = r
        for ref in msg.removed:
            if ref.type == "session":
                sessions.pop(ref.name, None)
            else:
                model.pop((ref.type, ref.name), None)
        got = {(t, n): r for t, named in state.resources.items() for n, r in named.items()}
        assert got == model, f"held {sorted(got)} != expected {sorted(model)}"
        assert state.sessions == sessions
        assert state.version == msg.version and state.offload_sessions == list(msg.offload_sessions)
        view = state.view()
        assert sorted(b.SerializeToString() for b in view.backends) == sorted(
            r.telemetry.SerializeToString() for (t, _), r in model.items() if t == "telemetry")
        assert [p.SerializeToString() for p in state.policy_list().policies] == [
            model[k].policy.SerializeToString() for k in sorted(k for k in model if k[0] == "policy")]
        order += [n for t, n in sorted(model) if t == "backend" and n not in order]
        try:
            cfg = state.config(BASE, keep=order)
        except ConfigError:
            continue
        names = [b.name for b in cfg.backends]
        assert len(names) == len(set(names)) and names, names
