"""The batching queue: never more running than slots, FIFO, and cancellation leaves no leak."""
import asyncio
import random

from fastpath.sim.batch_queue import BatchQueue
from fastpath.sim.kv_cache import KVCache, cache_key


async def test_waits_fifo_and_never_exceeds_slots():
    q = BatchQueue(2)
    order: list[int] = []
    peak = 0

    async def job(i: int) -> None:
        nonlocal peak
        await q.acquire("m")
        peak = max(peak, q.running)
        order.append(i)
        await asyncio.sleep(0.005)
        q.release("m")

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(job(i)))
        await asyncio.sleep(0)  # arrive in order
    await asyncio.gather(*tasks)
    assert peak == 2
    assert order == list(range(8))
    assert (q.running, q.waiting) == (0, 0)


async def test_cancelled_waiters_and_holders_release_everything():
    rng = random.Random(7)
    q = BatchQueue(3)

    async def job(model: str) -> None:
        await q.acquire(model)
        try:
            await asyncio.sleep(rng.random() * 0.01)
        finally:
            q.release(model)

    tasks = [asyncio.create_task(job(rng.choice("ab"))) for _ in range(60)]
    await asyncio.sleep(0.003)
    assert q.running == 3 and q.waiting > 0
    for t in rng.sample(tasks, 30):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (q.running, q.waiting) == (0, 0)
    assert all(v == 0 for v in q.running_by_model.values())
    assert all(v == 0 for v in q.waiting_by_model.values())


def test_kv_cache_hits_recent_keys_and_forgets_old_ones():
    now = [0.0]
    kv = KVCache(max_entries=2, max_age_s=10, clock=lambda: now[0])
    a, b, c = cache_key("s1", "x"), cache_key("", "same prompt"), cache_key("", "other")
    assert not kv.lookup_and_touch(a, 5)
    assert kv.lookup_and_touch(a, 5)
    assert cache_key("", "same prompt") == b and b != c
    kv.lookup_and_touch(b, 5)
    kv.lookup_and_touch(c, 5)  # evicts a (least recent)
    assert not kv.lookup_and_touch(a, 5)
    now[0] = 100.0
    assert not kv.lookup_and_touch(a, 5)  # too old to be warm
    assert len(kv) == 2
