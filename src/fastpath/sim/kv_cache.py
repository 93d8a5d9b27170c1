"""A site's warm KV cache: which sessions and prompt prefixes it has seen lately.

Two models of it, used together:
- KVCache: a repeat session (or a prompt sharing its first characters with a
  recent one) finds its KV still resident and pays a fraction of the prefill.
  Bounded LRU with an age limit, so a site forgets old sessions.
- PrefixKVCache: what engines with automatic prefix caching do (vLLM's APC,
  SGLang's radix cache): the prompt is cut into fixed blocks, each identified
  by the hash of everything up to its end, and a request reuses the longest
  run of leading blocks still resident; blocks are evicted least recently
  used when the cache is full. The uncached part is what a request prefills.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Callable

PREFIX_CHARS = 64
KV_BLOCK_CHARS = 64  # ~16 tokens per KV block (a vLLM page)


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


class PrefixKVCache:
    """Prompt blocks resident in a site's KV cache: LRU over chain-hashed blocks, bounded in blocks."""

    def __init__(self, capacity_blocks: int = 4096, block_chars: int = KV_BLOCK_CHARS) -> None:
        if capacity_blocks < 1 or block_chars < 1:
            raise ValueError("capacity_blocks and block_chars must be at least 1")
        self.capacity = capacity_blocks
        self.block_chars = block_chars
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.lookups = 0
        self.blocks_hit = 0  # prompt blocks found resident, summed over lookups
        self.blocks_seen = 0  # prompt blocks looked up

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup_and_insert(self, prompt: str, model: str) -> tuple[int, int]:
        """(leading blocks resident, full blocks in the prompt); all of them are resident
        and most recently used afterwards (the prefill computed the missing ones)."""
        from fastpath.router.prefix import prompt_blocks

        data = prompt.encode("utf-8", errors="replace")
        hashes = prompt_blocks(data, model, self.block_chars, len(data))
        blocks = self._blocks
        cached = 0
        while cached < len(hashes) and hashes[cached] in blocks:
            cached += 1
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
        self.lookups += 1
        self.blocks_hit += cached
        self.blocks_seen += len(hashes)
        return cached, len(hashes)
