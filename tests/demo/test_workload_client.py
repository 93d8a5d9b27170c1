"""The workload's client against one real simulated site: TTFT, tokens and the answering site as seen by a client."""
from __future__ import annotations

import asyncio
import dataclasses

from fastpath.config import load_config
from fastpath.sim.site import Site
from fastpath.sim.tokens import completion
from fastpath.workload import Phase, Plan, RequestSpec, Runner

CONFIG = load_config()


def test_client_measures_first_token_after_the_round_trip_and_counts_every_token():
    backend = dataclasses.replace(CONFIG.backend("use1-a100"), address="127.0.0.1:0", metrics_url="")
    far_rtt = CONFIG.rtt_ms["ap-south"]["us-east"]

    async def go():
        site = Site(backend, CONFIG.rtt_ms)
        await site.start()
        try:
            specs = [
                RequestSpec(0, "mixed", "us-east", "llama-3-8b", True, 6, "near prompt"),
                RequestSpec(1, "mixed", "ap-south", "llama-3-8b", True, 6, "far prompt"),
                RequestSpec(2, "mixed", "us-east", "mistral-7b", False, 5, "unary prompt"),
                RequestSpec(3, "mixed", "us-east", "no-such-model", True, 4, "x"),
            ]
            runner = Runner(f"127.0.0.1:{site.port}", deadline_s=10)
            return await runner.run(Plan([Phase("mixed", specs, concurrency=1)], seed=0))
        finally:
            await site.stop()

    near, far, unary, missing = asyncio.run(go())
    for r, n, prompt in ((near, 6, "near prompt"), (far, 6, "far prompt"), (unary, 5, "unary prompt")):
        assert r.ok, r.error
        assert r.tokens == n and r.text == completion(prompt, n)
        # Straight to a site there are no proxy trailers: the site named in the response is used.
        assert (r.backend, r.backend_from) == ("use1-a100", "response")
        assert 0 < r.ttft_ms <= r.total_ms
    # The site holds its first answer for the client region's round trip: a client clock must include it.
    assert far.ttft_ms >= 0.95 * far_rtt
    assert not missing.ok and missing.error.startswith("NOT_FOUND") and "no-such-model" in missing.error


def test_no_request_starts_after_the_time_budget_and_unsent_ones_are_counted():
    backend = dataclasses.replace(CONFIG.backend("use1-l4"), address="127.0.0.1:0", metrics_url="")
    budget_s = 0.5

    async def go():
        site = Site(backend, CONFIG.rtt_ms)
        await site.start()
        try:
            specs = [RequestSpec(i, "mixed", "us-east", "mistral-7b", True, 8, f"p{i}") for i in range(200)]
            runner = Runner(f"127.0.0.1:{site.port}", deadline_s=10)
            results = await runner.run(Plan([Phase("mixed", specs, concurrency=2),
                                             Phase("burst", specs[:5], concurrency=5)], seed=0), budget_s)
            return runner, results
        finally:
            await site.stop()

    runner, results = asyncio.run(go())
    assert results and all(r.ok for r in results)
    assert max(r.started_s for r in results) <= budget_s + 0.25  # checked just before each start
    assert runner.unsent >= 5 and len(results) + runner.unsent == 205
