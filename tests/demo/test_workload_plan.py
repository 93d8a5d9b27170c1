"""The workload plan: seeded, bounded, and covering what the demo claims to show."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.config import load_config
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.workload import _tensor_text, choose_burst, nearest_sites, plan_workload, sites_for

CONFIG = load_config()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 400), seed=st.integers(0, 2**32))
def test_plan_has_exactly_the_requested_count_and_only_served_models(n, seed):
    plan = plan_workload(CONFIG, n, seed)
    specs = [s for p in plan.phases for s in p.specs]
    assert len(specs) == n == plan.total
    assert len({s.index for s in specs}) == n
    for s in specs:
        assert sites_for(CONFIG, s.model), s
        assert s.region in CONFIG.rtt_ms
        if s.max_cost:
            assert any(b.cost_per_1k_tokens <= s.max_cost for b in sites_for(CONFIG, s.model))
        if s.policy:
            assert s.policy in CONFIG.policies


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_same_seed_same_plan_and_each_policy_sees_the_same_requests(seed):
    a, b = plan_workload(CONFIG, 120, seed), plan_workload(CONFIG, 120, seed)
    assert a == b
    pol = next(p for p in a.phases if p.name == "policy").specs
    shapes = {}
    for s in pol:
        shapes.setdefault(s.policy, []).append((s.region, s.model, s.stream, s.max_tokens))
    assert set(shapes) == set(CONFIG.policies)
    assert len({tuple(v) for v in shapes.values()}) == 1


def test_burst_targets_a_lone_near_site_that_has_somewhere_to_spill():
    region, model, site = choose_burst(CONFIG)
    assert nearest_sites(CONFIG, region, model) == [site]
    assert len(sites_for(CONFIG, model)) > 1
    plan = plan_workload(CONFIG, 120, 1)
    burst = next(p for p in plan.phases if p.name == "burst")
    assert len(burst.specs) > site.sim.slots  # more than the near site can run at once
    assert burst.concurrency == len(burst.specs)


def test_too_few_requests_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="at least 20"):
        plan_workload(CONFIG, 5, 1)


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_raw_bytes_output_round_trips(elements):
    resp = pb.ModelInferResponse()
    resp.outputs.add(name="text_output", datatype="BYTES", shape=[len(elements)])
    resp.raw_output_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in elements))
    assert _tensor_text(resp) == [e.decode(errors="replace") for e in elements]


@given(st.binary(max_size=200))
def test_raw_bytes_output_never_raises_on_garbage(raw):
    resp = pb.ModelInferResponse()
    resp.outputs.add(name="text_output", datatype="BYTES")
    resp.raw_output_contents.append(raw)
    assert isinstance(_tensor_text(resp), list)
