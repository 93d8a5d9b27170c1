"""The admission queue: priorities first, tenants in turn, bounded in bytes, deadlines shed early with pushback."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpath.router.admission import AdmissionQueue, Waiting

OPS = st.lists(st.one_of(
    st.tuples(st.just("offer"), st.integers(0, 2), st.sampled_from("abc"), st.integers(1, 400), st.floats(0.0, 2.0)),
    st.tuples(st.just("next"), st.just(0), st.just(""), st.just(0), st.just(0.0)),
    st.tuples(st.just("expire"), st.just(0), st.just(""), st.just(0), st.just(0.0)),
), max_size=60)


@given(OPS)
@example([("offer", 1, "a", 10, 0.0156), ("offer", 0, "a", 10, 1.0), ("next", 0, "", 0, 0.0)])  # shed on the way
@settings(max_examples=200, deadline=None)
def test_every_call_is_started_shed_or_held_and_the_bound_holds(ops):
    q = AdmissionQueue(max_bytes=1000, expected_wait_s=0.01)
    now = 0.0
    offered, started, shed = set(), set(), set()
    for k, (op, prio, tenant, size, life) in enumerate(ops):
        now += 0.01
        if op == "offer":
            offered.add(k)
            out = q.offer(Waiting(k, prio, tenant, size, now + life), now)
        elif op == "next":
            # Calls past their deadline are shed on the way, not started: they do not count as waiting.
            live_prios = [c.priority for t in q._queues.values() for d in t.values() for c in d if c.deadline > now]
            call, out = q.next_call(now)
            if call is not None:
                assert call.priority == max(live_prios)  # never a lower priority while a higher one waits
                assert call.deadline > now
                started.add(call.key)
        else:
            out = q.expire(now)
        for s in out:
            assert s.pushback_ms > 0 and s.reason.startswith("RESOURCE_EXHAUSTED")
            shed.add(s.call.key)
        assert q.bytes_held <= q.max_bytes
        held = [c for t in q._queues.values() for d in t.values() for c in d]
        assert q.bytes_held == sum(c.size for c in held) and q.held == len(held)
        assert not (started & shed)
        assert offered == started | shed | {c.key for c in held}


def test_tenants_take_turns_within_a_priority():
    q = AdmissionQueue(max_bytes=10_000)
    for k in range(10):
        q.offer(Waiting(("big", k), 1, "big-tenant", 10, 100.0), 0.0)
    q.offer(Waiting(("small", 0), 1, "small-tenant", 10, 100.0), 0.0)
    first_two = [q.next_call(1.0)[0].key for _ in range(2)]
    assert ("small", 0) in first_two  # not behind the other tenant's ten


def test_high_priority_displaces_low_when_full_and_late_calls_are_shed_early():
    q = AdmissionQueue(max_bytes=100, expected_wait_s=0.05)
    assert q.offer(Waiting("low", 0, "t", 80, 10.0), 0.0) == []
    shed = q.offer(Waiting("high", 5, "t", 50, 10.0), 0.0)
    assert [s.call.key for s in shed] == ["low"] and "displaced" in shed[0].reason
    refused = q.offer(Waiting("low2", 0, "t", 80, 10.0), 0.0)
    assert [s.call.key for s in refused] == ["low2"] and "full" in refused[0].reason
    late = q.offer(Waiting("late", 9, "t", 1, 0.03), 0.0)  # its deadline is before a slot is expected
    assert [s.call.key for s in late] == ["late"]
    assert q.next_call(1.0)[0].key == "high"


def test_a_call_put_back_is_first_in_line_again_and_its_tenant_keeps_its_turn():
    q = AdmissionQueue(max_bytes=10_000)
    for k, tenant in enumerate("aab"):
        q.offer(Waiting(k, 1, tenant, 10, 100.0), 0.0)
    first, _ = q.next_call(1.0)
    assert first.key == 0 and q.held == 2
    q.putback(first)  # no backend had room after all
    assert q.held == 3 and q.bytes_held == 30
    assert [q.next_call(1.0)[0].key for _ in range(3)] == [0, 2, 1]  # a, then b's turn, then a again


def test_removed_calls_are_forgotten_and_depth_and_top_priority_follow():
    q = AdmissionQueue(max_bytes=10_000)
    low, high = Waiting("low", 1, "t", 10, 100.0), Waiting("high", 5, "t", 10, 100.0)
    q.offer(low, 0.0)
    q.offer(high, 0.0)
    assert q.top_priority == 5 and q.depth() == {1: 1, 5: 1}
    assert q.remove(high) and not q.remove(high)
    assert q.top_priority == 1 and q.depth() == {1: 1} and q.bytes_held == 10


def test_observed_waits_per_priority_decide_who_is_shed_at_once_and_the_pushback():
    q = AdmissionQueue(max_bytes=10_000, expected_wait_s=0.01)
    q.observe_wait(1, 0.5)  # low priority waits half a second
    q.observe_wait(5, 0.02)
    shed = q.offer(Waiting("low", 1, "t", 10, 0.3), 0.0)  # cannot make its 0.3 s start-by
    assert [s.call.key for s in shed] == ["low"] and shed[0].pushback_ms == 500
    assert q.offer(Waiting("high", 5, "t", 10, 0.3), 0.0) == []


def test_pushback_follows_the_rate_at_which_held_calls_start():
    q = AdmissionQueue(max_bytes=10_000, expected_wait_s=0.5)
    for k in range(9):
        q.offer(Waiting(k, 1, "t", 10, 100.0), 0.0)
    for t in (0.0, 0.01, 0.02, 0.03):  # one start every 10 ms
        q.observe_start(t)
    assert q.pushback_s(1) == pytest.approx(0.1)  # 9 ahead, then its own turn: 10 x 10 ms
    assert q.pushback_s(5) == pytest.approx(0.01)  # nothing ahead of a higher priority
