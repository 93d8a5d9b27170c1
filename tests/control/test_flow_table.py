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
    t = FlowTable(100, idle_expiry_s=1.0)  # "new" must not expire if the machine stalls between steps
    t.touch("old", "r", "b1", "p")
    time.sleep(1.2)
    t.touch("new", "r", "b1", "p")
    t.touch("new", "", "b2", "p2")
    [f] = t.to_message().flows
    assert (f.session, f.backend, f.proxy_id, f.client) == ("new", "b2", "p2", "r")
    assert t.get("new").calls == 2 and t.expired == 1


reports = st.lists(
    st.tuples(st.sampled_from(["p1", "p2"]), st.lists(st.sampled_from("abcdef"), max_size=4, unique=True)),
    max_size=12,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports)
def test_the_table_holds_exactly_each_proxys_latest_report(seq) -> None:
    from fastpath.gen import control_pb2 as pb

    t = FlowTable(100)
    latest: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for proxy, sessions in seq:
        t.replace_reported(proxy, [pb.Flow(session=s, client="c", backend="b", path="python") for s in sessions])
        latest[proxy] = sessions
        for s in sessions:  # a session moves to the proxy that reported it last
            owner[s] = proxy
    expected = {s for p, ss in latest.items() for s in ss if owner[s] == p}
    assert {f.session for f in t.to_message().flows} == expected
    assert all(t.get(s).proxy_id == owner[s] for s in expected)
