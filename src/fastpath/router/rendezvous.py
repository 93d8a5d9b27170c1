"""Rendezvous (highest-random-weight) hashing: the same session lands on the same backend in every
worker and every proxy, with no state shared between them.

Each candidate backend gets a weight hash(session, backend name); the highest
wins. Every process that sees the same candidate set picks the same backend,
and when a backend leaves the set only the sessions it held move (to their
second choice) — the property that makes it fit KV-cache affinity. The
candidates are the backends the router found eligible for the request
(healthy, serving the model, within the request's region and cost limits),
narrowed to the nearest region the client's RTT row names, so a new session
still lands near its client. The controller's learned session map is applied
on top by the caller: a session the fleet already knows goes back to its
backend.

Pure: no I/O, no clocks; called once per new pinned session, never per message.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from hashlib import blake2b


def weight(key: bytes, name: bytes) -> int:
    """The 64-bit weight of backend `name` for session `key` (stable across processes and runs)."""
    # Length-prefixed, so ("ab", "c") and ("a", "bc") differ; any session length is hashed whole.
    return int.from_bytes(blake2b(len(key).to_bytes(4, "big") + key + name, digest_size=8).digest(), "big")


def rank(key: str, names: Sequence[str]) -> list[int]:
    """Indices into names, best first; ties (equal weights) go to the earlier name."""
    k = key.encode()
    return sorted(range(len(names)), key=lambda i: (-weight(k, names[i].encode()), i))


def pick(key: str, names: Sequence[str]) -> int:
    """Index into names of the session's backend; ValueError when names is empty."""
    if not names:
        raise ValueError("rendezvous pick over no candidates")
    k = key.encode()
    best, best_w = 0, -1
    for i, n in enumerate(names):
        w = weight(k, n.encode())
        if w > best_w:
            best, best_w = i, w
    return best


def nearest(candidates: Sequence[int], site_region: Sequence[str], rtt_row: Mapping[str, float] | None) -> list[int]:
    """The candidates in the nearest site region the client's RTT row names (all of them without a row)."""
    if not rtt_row:
        return list(candidates)
    known = [c for c in candidates if site_region[c] in rtt_row]
    if not known:
        return list(candidates)
    best = min(rtt_row[site_region[c]] for c in known)
    return [c for c in known if rtt_row[site_region[c]] == best]


def session_backend(session: str, candidates: Sequence[int], names: Sequence[str], site_region: Sequence[str],
                    rtt_row: Mapping[str, float] | None = None) -> int:
    """The backend index a new session goes to: rendezvous over the nearest eligible candidates.

    `candidates` are backend indices (any order: the result does not depend on it);
    `names`/`site_region` are indexed by backend. Returns -1 without candidates.
    """
    tier = sorted(nearest(candidates, site_region, rtt_row))
    if not tier:
        return -1
    return tier[pick(session, [names[i] for i in tier])]
