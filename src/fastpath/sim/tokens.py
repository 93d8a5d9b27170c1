"""Deterministic token text for the simulated model.

The completion is a pure function of (prompt, position), so tests can check
that what a client received is exactly what a site produced, and two sites
given the same prompt answer the same words (as replicas of one model would).
"""
from __future__ import annotations

import hashlib

WORDS = (
    "the", "fleet", "routes", "tokens", "through", "a", "fast", "path", "near", "sites", "warm",
    "cache", "keeps", "latency", "low", "while", "power", "budget", "holds", "steady", "and",
    "every", "region", "sees", "its", "answer", "stream", "back", "quickly", "under", "load",
    "with", "fair", "cost", "per", "token", "gpu", "batch", "queue", "slot", "prefill", "decode",
    "model", "session", "prefix", "kernel", "splice", "moves", "bytes", "without", "python",
    "router", "scores", "five", "axes", "health", "proximity", "capacity", "affinity", "time",
    "first", "grows", "near", "saturation",
)


def token(prompt: str, i: int) -> str:
    """Token number i (0-based) of the completion of `prompt`: a word with a leading space."""
    h = hashlib.blake2b(f"{i}\x00{prompt}".encode("utf-8", errors="replace"), digest_size=4).digest()
    return " " + WORDS[int.from_bytes(h, "little") % len(WORDS)]


def completion_tokens(prompt: str, n: int) -> list[str]:
    """The first n tokens a site streams for `prompt`."""
    return [token(prompt, i) for i in range(n)]


def completion(prompt: str, n: int) -> str:
    """The whole completion ModelInfer returns: the tokens concatenated."""
    return "".join(completion_tokens(prompt, n))


def prompt_tokens(prompt: str) -> int:
    """A rough token count of a prompt (words), for KV-cache accounting and metrics."""
    return max(1, len(prompt.split()))
