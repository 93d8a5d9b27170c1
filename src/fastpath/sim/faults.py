"""Fault injection for simulated sites: what can go wrong with a GPU site.

A fault is a mode plus parameters, written the same way everywhere
(`mode=die_mid_stream&after_tokens=3`): in `POST /fault` bodies, in
`fastpath sim --fault SITE=MODE[&key=value...]`, and in `Site.set_fault`.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import grpc

MODES = {
    "none": "serve normally",
    "refuse": "answer every RPC with UNAVAILABLE at once, before any response",
    "hang": "accept every RPC and never answer",
    "slow": "prefill and tokens `factor` times slower (factor=5)",
    "stall": "a `share` of inference calls (0.3) wait `stall_ms` (1000) before their first token",
    "die_mid_stream": "after `after_tokens` tokens (2) the site process exits abruptly",
    "reset": "abort after `after_tokens` tokens (2) with status `code` (UNAVAILABLE)",
}
PARAMS = {"factor": float, "after_tokens": int, "code": str, "share": float, "stall_ms": float}


class FaultError(ValueError):
    """A fault description that cannot be applied; the message lists what is allowed."""


@dataclass(frozen=True)
class Fault:
    mode: str = "none"
    factor: float = 5.0
    after_tokens: int = 2
    code: str = "UNAVAILABLE"
    share: float = 0.3
    stall_ms: float = 1000.0

    @property
    def status_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    def describe(self) -> str:
        """The fault in the same form `parse` reads."""
        if self.mode == "none":
            return "mode=none"
        if self.mode == "slow":
            return f"mode=slow&factor={_num(self.factor)}"
        if self.mode == "die_mid_stream":
            return f"mode=die_mid_stream&after_tokens={self.after_tokens}"
        if self.mode == "stall":
            return f"mode=stall&share={_num(self.share)}&stall_ms={_num(self.stall_ms)}"
        if self.mode == "reset":
            return f"mode=reset&after_tokens={self.after_tokens}&code={self.code}"
        return f"mode={self.mode}"


def _num(x: float) -> str:
    """A float as `parse` reads it back: %g, with "+" escaped (a query string reads "+" as a space)."""
    return f"{x:g}".replace("+", "%2B")


def make_fault(mode: str, **params: object) -> Fault:
    """Validates a mode and its parameters; FaultError names what was wrong."""
    if mode not in MODES:
        raise FaultError(f"unknown fault mode {mode!r}; modes are: " + ", ".join(f"{m} ({d})" for m, d in MODES.items()))
    kwargs: dict[str, object] = {}
    for key, value in params.items():
        if key not in PARAMS:
            raise FaultError(f"unknown fault parameter {key!r}; parameters are {sorted(PARAMS)}")
        try:
            kwargs[key] = PARAMS[key](value)  # type: ignore[operator]
        except (TypeError, ValueError):
            raise FaultError(f"fault parameter {key}={value!r}: expected {PARAMS[key].__name__}") from None
    f = Fault(mode=mode, **kwargs)  # type: ignore[arg-type]
    if f.factor <= 0 or f.factor != f.factor or f.factor == float("inf"):
        raise FaultError(f"factor={f.factor!r}: expected a positive finite number, e.g. factor=5")
    if f.after_tokens < 0:
        raise FaultError(f"after_tokens={f.after_tokens}: must not be negative")
    code = f.code.upper()
    if code not in grpc.StatusCode.__members__ or code == "OK":
        raise FaultError(f"code={f.code!r}: expected a gRPC status name such as UNAVAILABLE or INTERNAL")
    if not (0.0 <= f.share <= 1.0) or not (0.0 <= f.stall_ms < float("inf")):
        raise FaultError(f"share={f.share!r}, stall_ms={f.stall_ms!r}: expected a share within 0..1 and "
                         "milliseconds at least 0, e.g. share=0.3&stall_ms=1000")
    return Fault(f.mode, f.factor, f.after_tokens, code, f.share, f.stall_ms)


def parse_fault(text: str) -> Fault:
    """Reads `mode=hang`, `mode=die_mid_stream&after_tokens=3`, or a bare `hang` / `slow&factor=3`."""
    text = text.strip()
    if not text:
        raise FaultError("empty fault: write e.g. mode=hang or mode=slow&factor=3")
    text = text.replace(",", "&")
    first = text.split("&", 1)[0]
    if "=" not in first:
        text = "mode=" + text
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise FaultError(f"fault parameter {key!r} given twice in {text!r}")
        params[key] = value
    if "mode" not in params:
        raise FaultError(f"no mode in {text!r}: write e.g. mode=hang")
    mode = params.pop("mode")
    return make_fault(mode, **params)


def parse_site_fault(text: str) -> tuple[str, Fault]:
    """Reads the CLI form SITE=MODE[&key=value...], e.g. use1-a100=die_mid_stream&after_tokens=3."""
    site, sep, rest = text.partition("=")
    if not sep or not site or not rest:
        raise FaultError(f"--fault {text!r}: expected SITE=MODE, e.g. use1-a100=hang or use1-a100=slow&factor=3")
    return site, parse_fault(rest)
