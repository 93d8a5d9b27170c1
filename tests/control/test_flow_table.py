"""The controller's flow table stays bounded: least recently seen out first, idle sessions expire."""
from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpath.control.flow_table import FlowTable


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8), st.lists(st.sampled_from("abcdefghijkl"), max_size=60))
def test_the_table_keeps_the_most_recently_seen_sessions(capacity: int, sessions: list[str]) -> None:
    t = FlowTable(capacity)
    for s in sessions:
        t.touch(s, "r", "b", "p")
    recent: list[str] = []
    for s in reversed(sessions):
        if s not in recent:
            recent.append(s)
    assert [f.session for f in t.to_message().flows] == recent[:capacity]  # newest first
    assert len(t) <= capacity


def test_idle_sessions_expire_and_calls_are_counted() -> None:
    t = FlowTable(100, idle_expiry_s=0.2)
    t.touch("old", "r", "b1", "p")
    time.sleep(0.3)
    t.touch("new", "r", "b1", "p")
    t.touch("new", "", "b2", "p2")
    [f] = t.to_message().flows
    assert (f.session, f.backend, f.proxy_id, f.client) == ("new", "b2", "p2", "r")
    assert t.get("new").calls == 2 and t.expired == 1
