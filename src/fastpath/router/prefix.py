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

from fastpath.config import PrefixConfig
from fastpath.router.features import prompt_from_infer_request

BLOCK_BYTES = 256  # ~64 tokens: the granularity at which a prefix counts as shared
MAX_PROMPT_BYTES = 16 * 1024  # prompt bytes read per request (64 blocks)
MIN_MATCH_BLOCKS = 4  # a shorter match scores 0: one shared system prompt must not pin everything
CAPACITY_BLOCKS = 16384  # blocks remembered per backend (LRU)
TTL_S = 300.0  # a block not routed for this long is forgotten (engines evict too)
MAX_VISIT = 32  # owners looked at per lookup, at most (a prefix many backends hold is no evidence)


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


def prompt_blocks_of(body: Sequence[bytes] | bytes, model: str, config: PrefixConfig) -> tuple[int, ...]:
    """The prompt blocks of a request body's start (bytes, or the list of chunks received so far)."""
    data = body if isinstance(body, (bytes, bytearray)) else (body[0] if len(body) == 1 else b"".join(body))
    prompt = prompt_from_infer_request(data, config.input_name.encode(), config.max_prompt_bytes)
    if not prompt:
        return ()
    return prompt_blocks(prompt, model, config.block_bytes, config.max_prompt_bytes)


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

    def remapped(self, rows: Sequence[int | None], capacity_blocks: int, ttl_s: float) -> "PrefixIndex":
        """A new index whose backend i holds what this one's backend rows[i] held (None: nothing).

        For a backend list that changed (a reload): what each remaining backend
        holds, and when it was learned, is kept.
        """
        out = PrefixIndex(len(rows), capacity_blocks, ttl_s, self.clock)
        for i, j in enumerate(rows):
            if j is None or not 0 <= j < self.n:
                continue
            lru = out.lru[i]
            for h, t in self.lru[j].items():
                lru[h] = t
                out.owners.setdefault(h, {})[i] = t
            while len(lru) > out.capacity:
                out._forget(i, lru.popitem(last=False)[0])
        out.learned = self.learned
        return out

    def learn(self, backend: int, blocks: Sequence[int], held: int = 0, now: float | None = None) -> None:
        """Backend `backend` was sent a prompt with these blocks: it will hold them in its cache.

        `held`: how many leading blocks it was already known to hold (from matches());
        those are refreshed only at the chain's end, the rest inserted.
        """
        if not blocks or not 0 <= backend < self.n:
            return
        now = self.clock() if now is None else now
        lru = self.lru[backend]
        owners = self.owners
        start = held - 1 if 0 < held <= len(blocks) else 0
        for h in blocks[start:]:
            seen = owners.get(h)
            if seen is None:
                owners[h] = {backend: now}
            else:
                seen[backend] = now
            if h in lru:
                lru.move_to_end(h)
            lru[h] = now
        if start:  # the held head stays: refresh its first block so the chain's start does not expire first
            h = blocks[0]
            if h in lru:
                lru.move_to_end(h)
                lru[h] = now
                owners[h][backend] = now
        self.learned += len(blocks) - start
        horizon = now - self.ttl_s
        while lru and (len(lru) > self.capacity or next(iter(lru.values())) < horizon):
            self._forget(backend, lru.popitem(last=False)[0])

    def _forget(self, backend: int, h: int) -> None:
        seen = self.owners.get(h)
        if seen is not None:
            seen.pop(backend, None)
            if not seen:
                del self.owners[h]

    def matches(self, blocks: Sequence[int], min_depth: int = 1, now: float | None = None) -> dict[int, int]:
        """{backend: leading blocks of `blocks` it holds}, for backends holding at least min_depth.

        Learning inserts whole chains and LRU order forgets a chain's blocks
        together, so a backend holding block j holds the blocks before it: the
        deepest block anyone holds is found by binary search, and backends that
        also hold the first block are credited walking down from there to
        min_depth, looking at most at MAX_VISIT owners and stopping at a level
        held so widely it would exceed that (a prefix every backend holds is no
        evidence which to pick). Approximate, like the index itself.
        """
        n = len(blocks)
        if n < min_depth or min_depth < 1:
            return {}
        owners = self.owners
        horizon = (self.clock() if now is None else now) - self.ttl_s
        lo, hi = min_depth - 1, n - 1  # is the deepest held block >= lo? then search (lo, hi]
        head = owners.get(blocks[0])
        if not head or not owners.get(blocks[lo]):
            return {}
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if owners.get(blocks[mid]):
                lo = mid
            else:
                hi = mid - 1
        out: dict[int, int] = {}
        budget = MAX_VISIT
        heads = head.keys()
        floor = min_depth - 1
        level = lo
        while True:
            seen = owners.get(blocks[level]) or {}
            size = len(seen)
            if size > budget and out:
                break  # held widely from here down: what sets backends apart has been credited
            # The chain's head is refreshed on every visit: a tail without it is a stale leftover.
            credited = len(out)
            if size <= 8:  # a plain loop beats building two sets for a few owners
                for i, t in seen.items():
                    if t >= horizon and i in heads and i not in out:
                        out[i] = level + 1
            else:
                for i in (seen.keys() & heads) - out.keys():
                    if seen[i] >= horizon:
                        out[i] = level + 1
            budget -= size
            a, b = floor, level - 1
            if budget <= 0 or a > b:
                break
            if len(out) == credited:  # a stale leftover (or expired): look one level up
                level -= 1
                continue
            # Owners only grow towards the head: jump to the deepest level with more of them.
            if len(owners.get(blocks[a]) or ()) <= size:
                break
            while a < b:
                mid = (a + b + 1) >> 1
                if len(owners.get(blocks[mid]) or ()) > size:
                    a = mid
                else:
                    b = mid - 1
            level = a
        return out

    def export(self, backend: int, limit: int) -> list[int]:
        """Backend's most recently learned blocks, newest first, at most `limit` (for the controller)."""
        lru = self.lru[backend]
        out: list[int] = []
        for h in reversed(lru):
            if len(out) >= limit:
                break
            out.append(h)
        return out

    def merge(self, backend: int, blocks: Iterable[int], now: float | None = None) -> None:
        """Folds in blocks another proxy learned for `backend` (given newest first)."""
        blocks = list(blocks)
        blocks.reverse()  # oldest first, so the newest end up most recently used
        self.learn(backend, blocks, 0, now)

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
