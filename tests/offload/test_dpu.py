"""The emulated card and the dpu driver: real namespaces, veths and tc programs in the real kernel.

Each test builds its own card (unique names), a backend echo server and a
counting relay standing for the proxy, and removes everything; the fixture
asserts nothing was left behind.
"""
from __future__ import annotations

import json
import os

import jsonschema
import pytest
from fastpath.offload.dpu import DpuDriver
from fastpath.offload.dpu_card import EmulatedCard
from fastpath.offload.dpu_doca import schema_path
from fastpath.offload.dpu_flow import AGED, ERROR, REMOVED, SUCCESS

from tests.offload.dpu_support import Echo, Relay, client, leftovers, round_trip
from tests.support.waiting import wait_for

pytestmark = pytest.mark.bpf
VIP_PORT = 8000


@pytest.fixture
def make_card(bpf_ready, tmp_path, monkeypatch):
    """make_card(**kw) -> (card, echo, relay, driver_factory); all torn down, and checked, afterwards."""
    monkeypatch.setenv("FASTPATH_DPU_DIR", str(tmp_path / "dpu"))
    made = []

    def make(clients: int = 2, **card_kw):
        card = EmulatedCard(clients=clients, **card_kw).create()
        echo = Echo(card, card.backend_addr(0))
        relay = Relay(card, echo.addr, VIP_PORT)
        drivers: list[DpuDriver] = []

        def driver(**kw) -> DpuDriver:
            d = DpuDriver(card.info, **kw)
            drivers.append(d)
            return d

        made.append((card, echo, relay, drivers))
        return card, echo, relay, driver

    yield make
    for card, echo, relay, drivers in made:
        ids = (list(card.info.prog_ids), list(card.info.map_ids))
        for d in drivers:
            d.close()
        echo.close()
        relay.close()
        card.destroy()
        assert leftovers(card, *ids) == []


def steer(driver: DpuDriver, card: EmulatedCard, client_index: int = 0, backend=None):
    inst = driver.steer(f"s{client_index}", card.client_addr(client_index), (card.vip, VIP_PORT),
                        backend or (card.backend_addr(0), 7000))
    return inst


def wait_status(driver: DpuDriver, session: str, status: str, timeout: float = 5.0):
    def done():
        return any(e.session == session and e.status == status for e in driver.agent.entries.values())
    wait_for(done, timeout, f"{session} {status}")
    return next(e for e in driver.agent.entries.values() if e.session == session and e.status == status)


def test_card_switches_the_clients_next_connection_byte_exact(make_card):
    card, echo, relay, driver = make_card()
    d = driver()
    # The first session goes through the proxy path, and stays open.
    first = client(card, VIP_PORT)
    assert round_trip(first, b"first" * 100) == b"first" * 100
    relay_before = relay.bytes
    assert relay_before == 1000
    inst = steer(d, card)
    e = wait_status(d, "s0", SUCCESS)
    assert inst.path == "dpu" and not inst.done
    payload = os.urandom(256 * 1024)
    c = client(card, VIP_PORT)
    assert round_trip(c, payload) == payload
    c.close()
    # The proxy saw none of it; the card counted every byte, both ways. Like a real card's flow
    # counters it counts the TCP payload of every packet it switches, so a segment TCP resent (a
    # timer that fired while this busy machine stalled) is counted twice: at least the payload, and
    # not much more.
    assert relay.bytes == relay_before
    v = d.agent.query(e)
    counted = (int(v.bytes[0]), int(v.bytes[1]))
    for n in counted:
        assert len(payload) <= n <= len(payload) * 1.1, counted
    assert int(v.conns) == 1 and int(v.first_ns) >= e.decided_ns
    flows = d.list()
    assert [(f.session, f.path, f.stats.bytes_to_backend, f.stats.bytes_to_client) for f in flows] == [
        ("s0", "dpu", *counted)]
    # The connection opened through the proxy before the rule still works, still through the proxy.
    assert round_trip(first, b"again") == b"again"
    assert relay.bytes == relay_before + 10
    assert d.errors()["midstream"] >= 1
    first.close()


def test_table_full_falls_back_to_the_proxy(make_card):
    card, echo, relay, driver = make_card(clients=2, max_rules=1)
    d = driver()
    kept = client(card, VIP_PORT, src_index=1)  # established through the proxy before any rule
    assert round_trip(kept, b"x" * 10) == b"x" * 10
    steer(d, card, 0)
    wait_status(d, "s0", SUCCESS)
    refused = steer(d, card, 1)
    assert refused.wait(5)
    assert refused.path == "python" and "flow table full" in refused.reason
    before = relay.bytes
    c = client(card, VIP_PORT, src_index=1)
    assert round_trip(c, b"y" * 100) == b"y" * 100
    assert relay.bytes == before + 200  # client 1's new connection took the proxy path
    assert round_trip(kept, b"z" * 10) == b"z" * 10
    assert d.errors()["refused_table_full"] == 1


def test_insertion_refused_when_the_queue_is_full(make_card):
    card, echo, relay, driver = make_card(clients=4)
    d = driver(insert_rate=2.0, queue_depth=1)
    kept = client(card, VIP_PORT, src_index=3)
    assert round_trip(kept, b"k") == b"k"
    # At 2 insertions/s with room for one pending entry, at most two of the first
    # three are taken (one inserting, one queued); the fourth finds the queue full.
    for i in range(3):
        steer(d, card, i)
    refused = steer(d, card, 3)
    assert refused.done and refused.path == "python" and "insertion queue full" in refused.reason
    before = relay.bytes
    c = client(card, VIP_PORT, src_index=3)
    assert round_trip(c, b"q" * 50) == b"q" * 50
    assert relay.bytes == before + 100
    assert round_trip(kept, b"k") == b"k"


def test_insertion_rate_is_bounded(make_card):
    card, echo, relay, driver = make_card(clients=4)
    rate = 20.0
    d = driver(insert_rate=rate, queue_depth=16)
    for i in range(4):
        steer(d, card, i)
    for i in range(4):
        wait_status(d, f"s{i}", SUCCESS)
    times = sorted(e.inserted_ns for e in d.agent.entries.values())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.9e9 / rate  # completions never come faster than the card's insertion rate


def test_backend_gone_removes_the_rule_and_keeps_proxy_connections(make_card):
    card, echo, relay, driver = make_card()
    d = driver()
    kept = client(card, VIP_PORT)
    assert round_trip(kept, b"a" * 10) == b"a" * 10
    inst = steer(d, card)
    wait_status(d, "s0", SUCCESS)
    c = client(card, VIP_PORT)
    assert round_trip(c, b"b" * 10) == b"b" * 10
    c.close()
    assert d.backend_gone((card.backend_addr(0), 7000)) == 1
    assert inst.wait(2) and inst.path == "python" and "backend failed" in inst.reason
    assert inst.final is not None and inst.final.bytes_to_backend == 10
    assert d.list() == []
    before = relay.bytes
    c = client(card, VIP_PORT)
    assert round_trip(c, b"c" * 10) == b"c" * 10
    assert relay.bytes == before + 20
    assert round_trip(kept, b"d" * 10) == b"d" * 10


def test_idle_rule_ages_out_and_new_connections_go_to_the_proxy(make_card):
    card, echo, relay, driver = make_card()
    d = driver(aging_s=0.4, tick_s=0.05)
    kept = client(card, VIP_PORT)
    assert round_trip(kept, b"a") == b"a"
    inst = steer(d, card)
    wait_status(d, "s0", SUCCESS)
    c = client(card, VIP_PORT)
    assert round_trip(c, b"b" * 10) == b"b" * 10
    c.close()
    e = wait_status(d, "s0", AGED, timeout=5)
    assert "idle" in e.reason and inst.wait(1) and inst.path == "python"
    before = relay.bytes
    c = client(card, VIP_PORT)
    assert round_trip(c, b"c" * 10) == b"c" * 10
    assert relay.bytes == before + 20
    assert round_trip(kept, b"a") == b"a"


def test_policy_change_moves_a_session_to_another_backend(make_card):
    card, echo, relay, driver = make_card(backends=2)
    other = Echo(card, card.backend_addr(1))
    try:
        d = driver()
        first = steer(d, card)
        wait_status(d, "s0", SUCCESS)
        steer(d, card, backend=other.addr)
        assert first.wait(2) and "moved" in first.reason
        wait_status(d, "s0", SUCCESS)
        c = client(card, VIP_PORT)
        assert round_trip(c, b"m" * 10) == b"m" * 10
        c.close()
        assert other.bytes_in == 10 and echo.bytes_in == 0
        assert d.clear("policy changed") == 1
        assert [e.status for e in d.agent.entries.values()].count(REMOVED) == 2
    finally:
        other.close()


def test_doca_rules_match_the_schema(make_card):
    card, echo, relay, driver = make_card(clients=2, max_rules=1)
    d = driver()
    steer(d, card, 0)
    wait_status(d, "s0", SUCCESS)
    steer(d, card, 1).wait(5)  # refused: the table holds one entry
    c = client(card, VIP_PORT)
    assert round_trip(c, b"j" * 33) == b"j" * 33
    doc = d.doca()
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)
    steer_pipe, reply_pipe = doc["pipes"]
    assert steer_pipe["cfg"]["attr"]["nb_flows"] == 1
    ok = [e for e in steer_pipe["entries"] if e["status"] == SUCCESS]
    assert len(ok) == 1
    entry = ok[0]
    assert entry["match"]["outer"]["ip4"] == {"src_ip": card.client_addr(0), "dst_ip": card.vip}
    assert entry["match"]["outer"]["tcp"]["l4_port"] == {"dst_port": VIP_PORT}
    assert entry["actions"]["outer"]["ip4"] == {"dst_ip": card.backend_addr(0)}
    assert entry["query"]["to_backend"]["bytes"] == 33 and entry["query"]["to_client"]["bytes"] == 33
    assert any(e["status"] == ERROR for e in steer_pipe["entries"])
    assert len(reply_pipe["entries"]) == 1
    assert reply_pipe["entries"][0]["actions"]["outer"]["ip4"] == {"src_ip": card.vip}
    c.close()
    # The schema is not a formality: a wrong field name or value is rejected.
    bad = json.loads(json.dumps(doc))
    bad["pipes"][0]["entries"][0]["match"]["outer"]["ip4"]["dst_addr"] = "10.0.0.1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(doc))
    bad["pipes"][0]["cfg"]["fwd"] = {"type": "DOCA_FLOW_FWD_PORT"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_passive_driver_leaves_established_connections_on_the_relay(make_card):
    card, echo, relay, driver = make_card()
    d = driver()
    a = client(card, VIP_PORT)
    b = card.socket("host")
    b.connect(echo.addr)
    try:
        inst = d.install("s", a, b)
        assert inst.path == "python" and "next connections" in inst.reason
        assert d.agent is None  # a proxy's driver never runs the card's agent
    finally:
        a.close()
        b.close()


def test_status_and_rules_commands_show_the_card_and_its_agent(make_card):
    from fastpath.offload import dpu_cli

    card, echo, relay, driver = make_card()
    d = driver()
    steer(d, card)
    wait_status(d, "s0", SUCCESS)
    c = client(card, VIP_PORT)
    assert round_trip(c, b"r" * 21) == b"r" * 21
    c.close()
    d._last_write = 0.0
    d._write_state()  # what the agent publishes for other processes
    s = dpu_cli.status(card.name)
    assert s["flow_table"] == {"used": 1, "capacity": card.max_rules}
    assert s["connections"]["entries"] == 2  # one switched connection: both directions
    assert all(v["exists"] for v in s["namespaces"].values())
    assert s["agent"]["agent"] and s["agent"]["counts"]["inserted"] == 1
    text = dpu_cli.format_status(s)
    assert f"flow table  1/{card.max_rules}" in text and "pf0hpf" in text
    rules = dpu_cli.format_rules(dpu_cli.rules_doc(card.name))
    line = next(ln for ln in rules.splitlines() if ln.startswith("1 "))
    assert "s0" in line and card.client_addr(0) in line and f"{card.backend_addr(0)}:7000" in line and "21 B" in line


def test_controller_steering_learns_backs_off_after_refusal_and_follows_health(make_card):
    from fastpath.config import load_config, parse_config
    from fastpath.gen import control_pb2
    from fastpath.offload.dpu_affinity import AffinitySteering

    card, echo, relay, driver = make_card(clients=2, max_rules=1)
    raw = json.loads(json.dumps(load_config().raw))
    site = dict(raw["backends"][0], address=f"{card.backend_addr(0)}:7000")
    raw["backends"] = [site]
    raw["proxy"] = dict(raw["proxy"], listen=f"{card.vip}:{VIP_PORT}")
    st = AffinitySteering(parse_config(raw, "dpu steering test"), driver())
    name = site["name"]
    flows = [control_pb2.Flow(session=f"s{i}", client=f"{card.client_addr(i)}:4000{i}", backend=name, path="python")
             for i in range(2)]
    assert st.learned({}, flows) == 0  # no affinity learned yet: nothing to steer
    assert st.learned({"s0": name, "s1": name}, flows) == 2
    wait_status(st.driver, "s0", SUCCESS)
    wait_for(lambda: "s1" in st.retry_at, 5, "the refusal")  # the table holds one entry
    assert st.learned({"s0": name, "s1": name}, flows) == 0  # s0 is steered, s1 waits before asking again
    c = client(card, VIP_PORT)
    assert round_trip(c, b"h" * 40) == b"h" * 40
    c.close()
    assert relay.bytes == 0
    [msg] = st.flow_messages()
    assert (msg.session, msg.path, msg.backend, msg.bytes_offload) == ("s0", "dpu", name, 80)
    st.health_changed(name, False)
    assert st.flow_messages() == []
    assert st.learned({"s0": name}, flows[:1]) == 1  # a fresh report steers the session again


def test_capacities_are_overridable_at_build_time(bpf_ready, tmp_path):
    import subprocess

    from fastpath.offload import libbpf
    from fastpath.offload.maps import bpf_dir, load_layout

    obj = tmp_path / "dpu_steer.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    f"-I{bpf_dir()}", "-DFP_DPU_MAX_RULES=7", "-DFP_DPU_MAX_CONNS=40", "-c",
                    str(bpf_dir() / "dpu_steer.bpf.c"), "-o", str(obj)], check=True, capture_output=True)
    L = load_layout()
    o = libbpf.BpfObject(obj)
    try:
        sizes = {n: libbpf.map_info(o.map_fd(L.str(c))).max_entries for c, n in
                 (("FP_DPU_MAP_RULES", "rules"), ("FP_DPU_MAP_CONNS", "conns"))}
    finally:
        o.close()
    assert sizes == {"rules": 7, "conns": 40}


def test_idle_connections_leave_the_connection_table(make_card):
    card, echo, relay, driver = make_card()
    d = driver(conn_idle_s=1.0, tick_s=0.05, aging_s=60)
    steer(d, card)
    wait_status(d, "s0", SUCCESS)
    c = client(card, VIP_PORT)
    assert round_trip(c, b"i" * 10) == b"i" * 10
    c.close()
    assert len(card.maps.conns.keys()) == 2
    wait_for(lambda: len(card.maps.conns.keys()) == 0, 5, "idle connections reaped")
    assert d.agent.counts["conns_reaped"] == 2
    assert d.entry("s0").status == SUCCESS  # the rule itself is not idle-aged yet
