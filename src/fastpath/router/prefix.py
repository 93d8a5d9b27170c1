"""Prompt-prefix affinity: chain hashes of prompt blocks and a per-backend index of them.

A backend that served a prompt recently holds its prefix in its KV cache; a
request that shares that prefix skips that much prefill there. fastpath does
not see the engines' caches, so, like the Gateway API Inference Extension's
approximate prefix scorer, it learns which blocks each backend has seen from
its own routing decisions and forgets them in LRU order and after a TTL.

Blocks are fixed-size byte runs of the prompt; block j's hash covers the whole
prompt up to the end of block j (a chain), salted with the model name, so two
prompts share a block hash only when they share everything before it, for the
same model. CRC-32 and Adler-32 are both continued from the previous value
(zlib's C code, ~0.1 µs per block) and paired into one 64-bit key; a
collision only costs a wrong guess about a cache, never a wrong answer.
"""
from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

BLOCK_BYTES = 256  # ~64 tokens: the granularity at which a prefix counts as shared
MAX_PROMPT_BYTES = 16 * 1024  # prompt bytes read per request (64 blocks)
MIN_MATCH_BLOCKS = 4  # a shorter match scores 0: one shared system prompt must not pin everything
CAPACITY_BLOCKS = 16384  # blocks remembered per backend (LRU)
TTL_S = 300.0  # a block not routed for this long is forgotten (engines evict too)


def prompt_blocks(prompt: bytes, model: str, block_bytes: int = BLOCK_BYTES,
                  max_bytes: int = MAX_PROMPT_BYTES) -> tuple[int, ...]:
    """Chain hashes of the full blocks in the first max_bytes of `prompt`, salted with `model`.

    A trailing partial block is not hashed: the next request in a conversation
    extends it, and a half block is no evidence of a shared cache page.
    """
    n = min(len(prompt), max_bytes)
    if block_bytes <= 0 or n < block_bytes:
        return ()
    salt = model.encode("utf-8", "surrogatepass")
    crc = zlib.crc32(salt)
    adl = zlib.adler32(salt)
    view = memoryview(prompt)
    out = []
    crc32, adler32 = zlib.crc32, zlib.adler32
    for start in range(0, n - block_bytes + 1, block_bytes):
        block = view[start:start + block_bytes]
        crc = crc32(block, crc)
        adl = adler32(block, adl)
        out.append((crc << 32) | adl)
    return tuple(out)


class PrefixIndex:
    """Which backends were sent which prompt blocks: bounded per backend, expiring.

    `owners` maps a block hash to {backend: last time learned}; `lru[i]` holds
    backend i's blocks oldest first, so learning past capacity forgets the
    oldest. Lookups ignore entries older than ttl_s; learning sweeps them out.
    """

    def __init__(self, n_backends: int, capacity_blocks: int = CAPACITY_BLOCKS, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.n = n_backends
        self.capacity = max(1, int(capacity_blocks))
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.owners: dict[int, dict[int, float]] = {}
        self.lru: list[OrderedDict[int, float]] = [OrderedDict() for _ in range(n_backends)]
        self.learned = 0  # blocks learned in total (for reports)

    def __len__(self) -> int:
        return sum(len(d) for d in self.lru)

    def learn(self, backend: int, blocks: Sequence[int], now: float | None = None) -> None:
        """Backend `backend` was sent a prompt with these blocks: it will hold them in its cache."""
        if not blocks or not 0 <= backend < self.n:
            return
        now = self.clock() if now is None else now
        lru = self.lru[backend]
        owners = self.owners
        for h in blocks:
            seen = owners.get(h)
            if seen is None:
                owners[h] = {backend: now}
            else:
                seen[backend] = now
            if h in lru:
                lru.move_to_end(h)
            lru[h] = now
        self.learned += len(blocks)
        horizon = now - self.ttl_s
        while lru and (len(lru) > self.capacity or next(iter(lru.values())) < horizon):
            self._forget(backend, lru.popitem(last=False)[0])

    def _forget(self, backend: int, h: int) -> None:
        seen = self.owners.get(h)
        if seen is not None:
            seen.pop(backend, None)
            if not seen:
                del self.owners[h]

    def matches(self, blocks: Sequence[int], now: float | None = None) -> dict[int, int]:
        """{backend: leading blocks of `blocks` it holds}, for backends holding at least the first."""
        if not blocks:
            return {}
        owners = self.owners
        first = owners.get(blocks[0])
        if not first:
            return {}
        horizon = (self.clock() if now is None else now) - self.ttl_s
        alive = {i for i, t in first.items() if t >= horizon}
        out: dict[int, int] = {}
        depth = 1
        for h in blocks[1:]:
            if not alive:
                break
            seen = owners.get(h)
            if not seen:
                break
            still = {i for i in alive if seen.get(i, -1.0) >= horizon}
            for i in alive - still:
                out[i] = depth
            alive = still
            depth += 1
        for i in alive:
            out[i] = depth
        return out

    def export(self, backend: int, limit: int) -> list[int]:
        """Backend's most recently learned blocks, newest first, at most `limit` (for the controller)."""
        lru = self.lru[backend]
        out = []
        for h in reversed(lru):
            if len(out) >= limit:
                break
            out.append(h)
        return out

    def merge(self, backend: int, blocks: Iterable[int], now: float | None = None) -> None:
        """Folds in blocks another proxy learned for `backend` (given newest first)."""
        blocks = list(blocks)
        blocks.reverse()  # oldest first, so the newest end up most recently used
        self.learn(backend, blocks, now)

    def merge_new(self, backend: int, blocks: Sequence[int], now: float | None = None) -> int:
        """merge() of the blocks newer than the newest one this index already holds for
        `backend`: a repeated shipment costs one lookup. Returns how many were merged."""
        lru = self.lru[backend]
        fresh = []
        for h in blocks:
            if h in lru:
                break
            fresh.append(h)
        if fresh:
            self.merge(backend, fresh, now)
        return len(fresh)
