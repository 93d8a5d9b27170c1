"""Routing policies (named weight sets over the five axes) and in-memory overrides.

The config file names the policies a deployment starts with; an operator may
change or add one at run time through `SetPolicy` without restarting
anything. Overrides live in the controller's memory only: a restarted
controller is back to the config file, which stays the source of truth.
"""
from __future__ import annotations

import math
import re

from google.protobuf import unknown_fields

from fastpath.config import AXES, Config, Policy
from fastpath.gen import control_pb2

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Field numbers of the axes in fastpath.v1.Policy (1 is the name).
_KNOWN_FIELDS = {1, 2, 3, 4, 5, 6}


class PolicyError(ValueError):
    """A policy that cannot be used; the message says what to change."""


def validate(msg: control_pb2.Policy) -> Policy:
    """The policy a SetPolicy request describes, weights normalised to sum 1."""
    if not _NAME_RE.fullmatch(msg.name):
        raise PolicyError(
            f"policy name {msg.name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    unknown = sorted({f.field_number for f in unknown_fields.UnknownFieldSet(msg)} - _KNOWN_FIELDS)
    if unknown:
        raise PolicyError(
            f"policy {msg.name!r}: unknown axis field(s) {unknown}; the axes are {', '.join(AXES)}"
        )
    weights = {a: float(getattr(msg, a)) for a in AXES}
    bad = {a: w for a, w in weights.items() if not math.isfinite(w) or w < 0}
    if bad:
        raise PolicyError(f"policy {msg.name!r}: weights must be finite and not negative; got {bad}")
    total = math.fsum(weights.values())
    if total <= 0:
        raise PolicyError(f"policy {msg.name!r}: all weights are zero; give at least one of {', '.join(AXES)} a positive weight")
    return Policy(msg.name, {a: w / total for a, w in weights.items()})


def to_message(p: Policy) -> control_pb2.Policy:
    return control_pb2.Policy(name=p.name, **{a: p.weights.get(a, 0.0) for a in AXES})


class PolicyStore:
    """The config's policies plus run-time overrides."""

    def __init__(self, config: Config) -> None:
        self.default_policy = config.default_policy
        self.policies: dict[str, Policy] = dict(config.policies)
        self.overridden: set[str] = set()

    def set(self, msg: control_pb2.Policy) -> Policy:
        p = validate(msg)
        self.policies[p.name] = p
        self.overridden.add(p.name)
        return p

    def to_message(self) -> control_pb2.PolicyList:
        return control_pb2.PolicyList(
            default_policy=self.default_policy,
            policies=[to_message(self.policies[n]) for n in sorted(self.policies)],
        )
