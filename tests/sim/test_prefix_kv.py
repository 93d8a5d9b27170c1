"""The simulated prefix KV cache: blocks, capacity, LRU eviction, and prefill that follows the uncached part."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.config import load_config
from fastpath.sim.kv_cache import PrefixKVCache
from fastpath.sim.llm_request import make_request, response_parameter
from fastpath.sim.site import REF_PROMPT_TOKENS, Site, prefill_s


def test_leading_blocks_are_reused_and_the_least_recently_used_evicted():
    kv = PrefixKVCache(capacity_blocks=10, block_chars=10)
    system = "s" * 40  # 4 blocks
    assert kv.lookup_and_insert(system + "a" * 30, "m") == (0, 7)
    assert kv.lookup_and_insert(system + "a" * 30 + "b" * 20, "m") == (7, 9)  # a conversation grows
    assert kv.lookup_and_insert(system + "c" * 25, "m") == (4, 6)  # shares the system prompt only
    assert len(kv) == 10  # 11 distinct blocks seen, capacity 10: the oldest went
    assert kv.lookup_and_insert(system + "a" * 30, "m")[0] == 4  # its first "a" block was the one evicted
    assert kv.lookup_and_insert(system, "other-model") == (0, 4)  # KV is per model


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12)), max_size=40), st.integers(1, 30))
@settings(max_examples=100, deadline=None)
def test_the_cache_never_exceeds_its_capacity_and_a_repeat_is_fully_cached(ops, capacity):
    kv = PrefixKVCache(capacity_blocks=capacity, block_chars=8)
    for conv, turns in ops:
        prompt = f"conversation {conv}: " + "turn. " * turns * 3
        kv.lookup_and_insert(prompt, "m")
        assert len(kv) <= capacity
        cached, total = kv.lookup_and_insert(prompt, "m")
        assert cached == total or total > capacity  # what fits stays resident for an immediate repeat


def test_prefill_grows_with_the_uncached_part_and_the_prompt():
    assert prefill_s(25.0, 1.0, 100, 1.0, 0.1) == 0.025  # a short uncached prompt: the spec's prefill
    assert prefill_s(25.0, 1.0, 100, 0.0, 0.1) == 0.025 * 0.1
    long = 4 * REF_PROMPT_TOKENS
    assert prefill_s(25.0, 1.0, long, 1.0, 0.1) == 0.1
    assert prefill_s(25.0, 1.0, long, 0.25, 0.1) < prefill_s(25.0, 1.0, long, 0.5, 0.1) < prefill_s(25.0, 1.0, long, 1.0, 0.1)


def test_a_site_reports_the_cached_blocks_of_each_call():
    cfg = load_config()
    backend = next(b for b in cfg.backends if b.sim is not None)
    model = backend.models[0]

    async def main():
        site = Site(backend.__class__(**{**backend.__dict__, "address": "127.0.0.1:0", "metrics_url": ""}), {})
        prompt = "You are a careful assistant. " * 40
        first = [m async for m in site.generate(_llm(model, prompt, "r1"), "")]
        second = [m async for m in site.generate(_llm(model, prompt + "and more " * 20, "r2"), "")]
        r1 = site.response(_llm(model, prompt, "r1"), "x", first[-1][1], None)
        r2 = site.response(_llm(model, prompt, "r2"), "x", second[-1][1], None)
        return r1, r2

    r1, r2 = asyncio.run(main())
    total = len(("You are a careful assistant. " * 40).encode()) // 64
    assert response_parameter(r1, "kv_cached_blocks") == 0 and response_parameter(r1, "kv_prompt_blocks") == total
    assert response_parameter(r2, "kv_cached_blocks") == total


def _llm(model, prompt, rid):
    from fastpath.sim.llm_request import parse_llm_request

    return parse_llm_request(make_request(model, prompt, 2, request_id=rid))
