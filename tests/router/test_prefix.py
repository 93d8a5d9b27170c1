"""Prompt-prefix affinity: the prompt read from real encoded requests, its block hashes, the
per-backend index, and the routing it drives (same prefix -> same backend until that one is busy)."""
from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.config import PrefixConfig
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router import LiveStats, RequestFeatures, Router, build_snapshot
from fastpath.router.features import prompt_from_infer_request
from fastpath.router.prefix import MAX_VISIT, PrefixIndex, prompt_blocks, prompt_blocks_of

from .fleets import fleet, site, telemetry


def frame(body: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(body).to_bytes(4, "big") + body


def infer_request(prompt: bytes, raw: bool, others: list[tuple[str, bytes]] = (), before: int = 0,
                  model: str = "llama-3-8b", name: str = "text_input") -> pb.ModelInferRequest:
    """A KServe request carrying `prompt` in input `name`, in either encoding, among other inputs."""
    r = pb.ModelInferRequest(model_name=model, id="r-1")
    r.parameters["max_tokens"].int64_param = 16
    inputs = list(others)
    inputs.insert(min(before, len(inputs)), (name, prompt))
    for n, data in inputs:
        t = r.inputs.add(name=n, datatype="BYTES", shape=[1])
        if raw:
            r.raw_input_contents.append(len(data).to_bytes(4, "little") + data)
        else:
            t.contents.bytes_contents.append(data)
    r.outputs.add(name="text_output")
    return r


OTHERS = st.lists(st.tuples(st.text(max_size=12).filter(lambda s: s != "text_input"), st.binary(max_size=64)),
                  max_size=3)


@given(prompt=st.binary(max_size=3000), raw=st.booleans(), others=OTHERS, before=st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_prompt_of_a_real_request_in_either_encoding(prompt, raw, others, before):
    body = infer_request(prompt, raw, others, before).SerializeToString()
    assert prompt_from_infer_request(frame(body)) == prompt
    assert prompt_from_infer_request(frame(body), max_bytes=100) == prompt[:100]
    assert prompt_from_infer_request(frame(body, compressed=True)) is None  # compressed: skipped


@given(prompt=st.binary(min_size=1, max_size=2000), raw=st.booleans(), others=OTHERS, cut=st.integers(0, 4000))
@settings(max_examples=150, deadline=None)
def test_a_body_that_has_not_fully_arrived_gives_a_prefix_of_the_prompt(prompt, raw, others, cut):
    message = frame(infer_request(prompt, raw, others).SerializeToString())[:cut]
    got = prompt_from_infer_request(message)
    assert got is None or prompt.startswith(got)


def test_stream_infer_opens_with_the_same_message_and_other_input_names_work():
    first = frame(infer_request(b"hello " * 100, raw=False).SerializeToString())
    second = frame(infer_request(b"other", raw=False).SerializeToString())
    assert prompt_from_infer_request(first + second) == b"hello " * 100  # ModelStreamInfer: the first message
    body = infer_request(b"chat", raw=True, name="prompt").SerializeToString()
    assert prompt_from_infer_request(frame(body)) is None
    assert prompt_from_infer_request(frame(body), input_name=b"prompt") == b"chat"
    assert prompt_from_infer_request(frame(pb.ModelInferRequest(model_name="m").SerializeToString())) is None
    assert prompt_from_infer_request(b"\x00\x00\x00\x00\x03\xff\xff\xff") is None  # malformed: no answer, no raise


@given(shared=st.binary(min_size=0, max_size=2000), a=st.binary(max_size=600), b=st.binary(max_size=600))
@settings(max_examples=100, deadline=None)
def test_blocks_are_a_chain_shared_exactly_as_far_as_the_prompts_are(shared, a, b):
    bs = 64
    pa, pb_ = shared + a, shared + b
    ha, hb = prompt_blocks(pa, "m", bs), prompt_blocks(pb_, "m", bs)
    assert len(ha) == len(pa) // bs and len(hb) == len(pb_) // bs  # full blocks only
    common = 0
    while common < min(len(pa), len(pb_)) and pa[common] == pb_[common]:
        common += 1
    same = min(common // bs, len(ha), len(hb))
    assert ha[:same] == hb[:same]
    if len(ha) > same and len(hb) > same:
        assert ha[same] != hb[same]  # diverged inside this block (a 64-bit collision would be news)
    assert not set(prompt_blocks(pa, "other-model", bs)) & set(ha)  # salted with the model
    assert prompt_blocks(pa, "m", bs, max_bytes=bs * 2) == ha[:2]


def test_index_is_bounded_per_backend_and_expires():
    t = [0.0]
    index = PrefixIndex(2, capacity_blocks=8, ttl_s=10.0, clock=lambda: t[0])
    chain = list(range(100, 120))
    index.learn(0, chain[:6])
    assert index.matches(chain) == {0: 6}
    index.learn(0, chain[6:12])  # over capacity: the oldest blocks go first
    assert len(index.lru[0]) == 8 and index.matches(chain) == {}  # the chain's head was forgotten
    index.learn(1, chain[:4])
    assert index.matches(chain) == {1: 4}
    t[0] = 11.0
    assert index.matches(chain) == {}  # expired
    index.learn(1, [999])
    assert list(index.lru[1]) == [999]  # learning sweeps expired entries out
    other = PrefixIndex(2)
    assert other.merge_new(0, index.export(1, 10)) == 1 and other.merge_new(0, index.export(1, 10)) == 0


def test_blocks_not_routed_again_within_the_ttl_stop_counting():
    """A backend sent a long prompt long ago and its first blocks again lately: only the blocks
    routed again still count for it once the rest are older than the TTL."""
    t = [0.0]
    index = PrefixIndex(3, ttl_s=300.0, clock=lambda: t[0])
    chain = list(range(500, 510))
    index.learn(0, chain)
    t[0] = 250.0
    index.learn(0, chain[:4], held=4)
    assert index.matches(chain) == {0: 10}
    t[0] = 310.0
    assert index.matches(chain) == {0: 4}


def test_fleets_past_a_machine_word_of_backends_and_a_candidate_subset():
    """Owner sets of backends numbered past 64 (bitmasks wider than a machine word), and `among`:
    the answer covers the backends asked about, with the same depths as when all are asked about."""
    index = PrefixIndex(300)
    chain = list(range(900, 920))
    index.learn(299, chain[:20])
    index.learn(130, chain[:12])
    index.learn(3, chain[:7])
    index.learn(64, [7, 8, 9])  # another prompt altogether
    assert index.matches(chain, 4) == {299: 20, 130: 12, 3: 7}
    assert index.matches(chain, 4, among=(1 << 130) | (1 << 3)) == {130: 12, 3: 7}
    assert index.matches(chain, 4, among=1 << 64) == {}
    assert index.matches(chain[:10], 8) == {299: 10, 130: 10}  # 3 holds fewer than min_depth
    index.learn(299, list(range(10**6, 10**6 + index.capacity)))  # past capacity: backend 299's oldest blocks are forgotten first
    assert 299 not in index.matches(chain, 4) and len(index.lru[299]) == index.capacity


def chat_fleet(**kw):
    return fleet(site("a", "near"), site("b", "near"), site("c", "near"), **kw)


def request(prompt: bytes, config) -> RequestFeatures:
    body = frame(infer_request(prompt, raw=False).SerializeToString())
    return RequestFeatures(model="m", region="near", prompt_blocks=prompt_blocks_of(body, "m", config.prefix))


def test_same_long_prefix_goes_to_the_same_backend_while_it_is_under_its_bound():
    cfg = chat_fleet()
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    conversation = b"system: you answer questions about routing. " * 40
    first = router.route(request(conversation, cfg), snap, live)
    router.learn(first)
    home = first.ranked[0]
    assert first.prefix() == (0, len(prompt_blocks(conversation, "m")))
    others_home = router.route(request(b"x" * 4000, cfg), snap, live).ranked[0]
    live.started(others_home)  # some load elsewhere, so the tie no longer decides
    for turn in range(5):
        conversation += b"user: and then? assistant: then it routes. " * 8
        d = router.route(request(conversation, cfg), snap, live)
        router.learn(d)
        assert d.ranked[0] == home, turn
        matched, total = d.prefix()
        assert 0 < matched < total and b";prefix=%d/%d" % (matched, total) in d.header()
        assert d.axes()["affinity"] > 0.5


def test_a_prefix_pile_up_spills_to_other_backends():
    cfg = chat_fleet()
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    hot = b"a long shared document everybody asks about. " * 60
    chosen = []
    for _ in range(24):  # calls that never finish: the home backend fills up
        d = router.route(request(hot, cfg), snap, live)
        router.learn(d)
        i = d.ranked[0]
        live.started(i)
        chosen.append(i)
    home = chosen[0]
    assert chosen[:4] == [home] * 4  # affinity holds while there is room
    assert len(set(chosen)) == 3  # then the load spills over to every site
    assert chosen.count(home) < 16


def test_a_short_shared_system_prompt_alone_does_not_pin():
    cfg = chat_fleet()
    cfg = dataclasses.replace(cfg, prefix=PrefixConfig(min_match_blocks=4))
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    snap = build_snapshot(cfg, telemetry(cfg))
    system = b"You are helpful. " * 40  # 680 bytes: 2 full blocks, under the minimum match
    seen = set()
    for k in range(12):
        d = router.route(request(system + b"question %d " % k * 60, cfg), snap, live)
        router.learn(d)
        assert d.prefix()[0] <= 2 and d.axes()["affinity"] == 0.5  # two shared blocks count for nothing
        live.started(d.ranked[0])
        seen.add(d.ranked[0])
    assert len(seen) == 3


def test_prefix_axis_off_leaves_decisions_alone():
    cfg = chat_fleet()
    off = dataclasses.replace(cfg, prefix=PrefixConfig(enabled=False))
    router, live = Router(off, explore_every=0), LiveStats(3)
    snap = build_snapshot(off, telemetry(off))
    f = request(b"z" * 5000, off)
    d = router.route(f, snap, live)
    router.learn(d)
    assert b"prefix=" not in d.header() and len(router.prefix) == 0


def test_the_controller_merges_what_proxies_saw_and_other_proxies_follow():
    """Proxy 1 reports a call's prompt blocks; the controller's snapshot carries them; proxy 2 routes on them."""
    from fastpath.control.fleet_state import FleetState
    from fastpath.control.health import HealthState
    from fastpath.control.scraper import BackendMetrics
    from fastpath.gen import control_pb2

    cfg = chat_fleet()
    state = FleetState(cfg, {b.name: BackendMetrics(has_metrics=False) for b in cfg.backends},
                       {b.name: HealthState(healthy=True, detail="", probed=True) for b in cfg.backends})
    prompt = b"a long conversation about KV caches. " * 50
    f = request(prompt, cfg)
    obs = control_pb2.Observation(backend="c", region="near", ttft_ms=40.0, ok=True, model="m",
                                  prefix_blocks=f.prompt_blocks)
    assert state.observe(obs, "proxy-1")
    msg = state.snapshot()
    assert [(p.backend, len(p.blocks)) for p in msg.prefix_index] == [("c", len(f.prompt_blocks))]
    msg = control_pb2.FleetTelemetry.FromString(msg.SerializeToString())  # as it travels
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    d = router.route(f, build_snapshot(cfg, msg), live)
    assert d.ranked[0] == 2 and d.prefix() == (len(f.prompt_blocks), len(f.prompt_blocks))


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(1, 12)), min_size=1, max_size=30),
       st.integers(0, 3), st.integers(1, 12), st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_matches_equal_a_linear_walk_on_a_small_fleet(visits, ask, depth, min_depth):
    """Backends visited by conversations (whole chains, as routing learns them): each backend's
    match is the number of leading blocks it holds, as a block-by-block walk finds it."""
    chains = [[(c << 8) | k for k in range(12)] for c in range(4)]
    index = PrefixIndex(6)
    for backend, c, n in visits:
        held = index.matches(chains[c][:n]).get(backend, 0)
        index.learn(backend, chains[c][:n], held)
    query = chains[ask][:depth]
    expected = {}
    for b in range(6):
        k = 0
        while k < len(query) and query[k] in index.lru[b]:
            k += 1
        if k >= min_depth:
            expected[b] = k
    assert index.matches(query, min_depth) == expected


def test_the_merged_index_rides_the_pushed_stream_to_every_subscriber():
    """A proxy reports a call's prompt blocks; a subscriber's next delta carries them as a `prefix`
    resource; the proxy's router, fed the pushed state, routes the same prompt to that backend."""
    from fastpath.control.fleet_state import FleetState
    from fastpath.control.health import HealthState
    from fastpath.control.push import Subscription
    from fastpath.control.pushed_state import PushedState
    from fastpath.control.scraper import BackendMetrics
    from fastpath.gen import control_pb2

    cfg = chat_fleet()
    state = FleetState(cfg, {b.name: BackendMetrics(has_metrics=False) for b in cfg.backends},
                       {b.name: HealthState(healthy=True, detail="", probed=True) for b in cfg.backends})
    sub, held = Subscription("proxy-2"), PushedState()
    held.apply(control_pb2.ConfigUpdate.FromString(sub.next_update(state, {}, 1).SerializeToString()))
    assert held.view().prefix_index == []
    f = request(b"a long conversation about KV caches. " * 50, cfg)
    assert state.observe(control_pb2.Observation(backend="c", region="near", ttft_ms=40.0, ok=True, model="m",
                                                 prefix_blocks=f.prompt_blocks), "proxy-1")
    state.bump()
    delta = control_pb2.ConfigUpdate.FromString(sub.next_update(state, {}, 1).SerializeToString())
    assert not delta.full_state and [r.name for r in delta.resources if r.type == "prefix"] == ["c"]
    held.apply(delta)
    router, live = Router(cfg, explore_every=0), LiveStats(3)
    d = router.route(f, build_snapshot(cfg, held.view()), live)
    assert d.ranked[0] == 2 and d.prefix() == (len(f.prompt_blocks), len(f.prompt_blocks))
    again = sub.next_update(state, {}, 1)  # nothing new: the index is not sent again
    assert not [r for r in again.resources if r.type == "prefix"]


def test_a_reload_that_reorders_backends_keeps_what_each_backend_holds():
    index = PrefixIndex(3)
    index.learn(0, [1, 2, 3, 4])
    index.learn(2, [9, 8, 7, 6])
    moved = index.remapped([2, None, 0], capacity_blocks=100, ttl_s=300.0)
    assert moved.matches([9, 8, 7, 6]) == {0: 4} and moved.matches([1, 2, 3, 4]) == {2: 4}
    assert moved.matches([1, 2]) == {2: 2} and len(moved) == 8


@given(st.lists(st.tuples(st.integers(0, 69), st.integers(0, 2), st.integers(1, 16)), min_size=1, max_size=60),
       st.integers(0, 2), st.integers(1, 16), st.integers(0, (1 << 70) - 1))
@settings(max_examples=150, deadline=None)
def test_a_backends_match_does_not_depend_on_who_else_is_asked_about(visits, ask, depth, among):
    """A router asks only about its candidates: each one's answer is the one it gets when all are asked."""
    chains = [[(c << 8) | k for k in range(16)] for c in range(3)]
    index = PrefixIndex(70)
    for backend, c, n in visits:
        index.learn(backend, chains[c][:n])
    query = chains[ask][:depth]
    everyone = index.matches(query, 2)
    assert index.matches(query, 2, among=among) == {i: d for i, d in everyone.items() if among >> i & 1}


def test_a_prefix_held_by_more_than_max_visit_backends_credits_nobody():
    """Past MAX_VISIT owners a level is no evidence which backend to pick; deeper levels still are."""
    index = PrefixIndex(MAX_VISIT + 8)
    chain = list(range(40, 52))
    for i in range(MAX_VISIT + 1):
        index.learn(i, chain[:4])  # the shared system prompt: everyone holds it
    index.learn(5, chain[:10])
    index.learn(7, chain[:8])
    assert index.matches(chain, 2) == {5: 10, 7: 8}
    assert index.matches(chain[:4], 2) == {}
