"""A site's warm KV cache: which sessions and prompt prefixes it has seen lately.

A repeat session (or a prompt sharing a prefix with a recent one) finds its
KV blocks still resident and pays only a fraction of the prefill; this is
what makes session affinity worth routing for.  Bounded LRU with an age
limit, so a site forgets old sessions as a real cache would.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Callable

PREFIX_CHARS = 64


def cache_key(session: str, prompt: str) -> str:
    """The session id when there is one, else a digest of the prompt's first PREFIX_CHARS characters."""
    if session:
        return "s:" + session
    return "p:" + hashlib.blake2b(prompt[:PREFIX_CHARS].encode("utf-8", errors="replace"), digest_size=8).hexdigest()


class KVCache:
    """LRU of cache keys → token count held, bounded by entries and by age."""

    def __init__(self, max_entries: int = 4096, max_age_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self._entries.values())

    def lookup_and_touch(self, key: str, tokens: int) -> bool:
        """True when `key` is warm; either way it is warm (most recent) afterwards."""
        now = self._clock()
        hit = False
        entry = self._entries.pop(key, None)
        if entry is not None and now - entry[0] <= self.max_age_s:
            hit = True
        self._entries[key] = (now, max(tokens, entry[1] if entry else 0))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return hit
