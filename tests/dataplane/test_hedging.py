"""TTFT hedging through the proxy: real gRPC clients, the proxy, simulated KServe sites in one loop.

A site that gives no first byte in time is reset and the call replayed once on the next
candidate; the client sees a normal answer and a trailer saying what happened.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from fastpath.config import Backend, SimSpec, parse_config
from fastpath.dataplane.proxy import Proxy
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.llm_request import make_request, response_parameter, text_output
from fastpath.sim.site import Site

MODEL = "m"
REGION = (("x-fastpath-region", "near"),)


def slo(ms: float) -> tuple[tuple[str, str], ...]:
    return (*REGION, ("x-fastpath-slo-ttft-ms", f"{ms:g}"))


class Fleet:
    """Sites a, b, c ranked in that order for region "near" (by RTT), and a proxy in front of them."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.sites: dict[str, Site] = {}
        self.proxy: Proxy | None = None
        self.address = ""
        self.channels: list[grpc.Channel] = []

    def start(self, hedge: dict | None, names: tuple[str, ...] = ("a", "b", "c")) -> Proxy:
        regions = {"a": "r1", "b": "r2", "c": "r3"}

        async def go() -> Proxy:
            specs = []
            for name in names:
                b = Backend(name=name, address="127.0.0.1:0", region=regions[name], cost_per_1k_tokens=1.0,
                            power_budget_watts=5000.0, models=(MODEL,),
                            sim=SimSpec(slots=8, tokens_per_s=400.0, prefill_ms=2.0))
                site = Site(b, {})  # no RTT delay inside the site: ranking comes from the proxy's config
                await site.start()
                self.sites[name] = site
                specs.append({"name": name, "address": site.address, "region": regions[name],
                              "cost_per_1k_tokens": 1.0, "models": [MODEL]})
            router: dict = {"explore_every": 0}
            if hedge is not None:
                router["hedge"] = hedge
            cfg = parse_config({
                "proxy": {"listen": "127.0.0.1:0", "metrics_listen": ""},
                "router": router,
                "regions": {"rtt_ms": {"near": {"r1": 1.0, "r2": 20.0, "r3": 40.0}}},
                "backends": specs,
            })
            proxy = Proxy(cfg)
            host, port = await proxy.start()
            self.address = f"{host}:{port}"
            return proxy

        self.proxy = self.loop.run(go())
        return self.proxy

    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        ch = grpc.insecure_channel(self.address, options=[("grpc.enable_retries", 0)])
        self.channels.append(ch)
        return pb_grpc.GRPCInferenceServiceStub(ch)

    def rpcs(self) -> dict[str, int]:
        return {n: s.rpcs for n, s in self.sites.items()}

    def index(self, name: str) -> int:
        assert self.proxy is not None
        return self.proxy.names.index(name)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        if self.proxy is not None:
            self.loop.run(self.proxy.drain(0.5))
        for s in self.sites.values():
            self.loop.run(s.stop(grace=None))


@pytest.fixture
def fleet(loop_thread):
    f = Fleet(loop_thread)
    yield f
    f.close()


HEDGE_AT_SLO = {"enabled": True, "after": "slo", "min_ms": 20}


def test_hung_site_unary_is_replayed_once_on_the_next_candidate_and_not_cooled(fleet):
    proxy = fleet.start(HEDGE_AT_SLO)
    fleet.sites["a"].set_fault("hang")
    stub = fleet.stub()
    hedged = 0
    for k in range(4):
        resp, call = stub.ModelInfer.with_call(make_request(MODEL, f"hello {k}", 3), metadata=slo(150), timeout=10)
        assert text_output(resp)
        trailers = dict(call.trailing_metadata())
        assert trailers["x-fastpath-backend"] == "b"
        if "x-fastpath-hedged" in trailers:
            hedged += 1
            value = trailers["x-fastpath-hedged"]
            assert value.startswith("a -> b after ") and value.endswith(" ms")
            assert int(value.split()[-2]) >= 150
    assert hedged >= 3  # a keeps its rank until it has been hedged away from three times in a row
    # Every call reached b exactly once; a saw only the calls that were hedged away from it; c nothing.
    assert fleet.rpcs() == {"a": hedged, "b": 4, "c": 0}
    m = proxy.metrics
    assert m.hedges["sent"] == hedged and m.hedges["won"] == hedged and m.failovers == 0
    a = fleet.index("a")
    live = proxy.live
    # A late first byte is not a fault: no failure count, error rate or cool-down for a...
    assert live.consecutive_failures[a] == 0 and live.error_ewma[a] == 0.0 and not live.is_cooling(a)
    # ...but after three abandonments in a row its TTFT estimate says it was slower than the wait.
    assert live.ttft_ewma_ms[a] >= 150.0
    assert live.inflight[a] == 0.0


def test_open_request_stream_keeps_working_after_the_hedge(fleet):
    """ModelStreamInfer: the hedge comes while the client's request stream is still open; the
    replay carries what was sent so far, and later requests follow to the new backend."""
    fleet.start(HEDGE_AT_SLO)
    fleet.sites["a"].set_fault("hang")
    first_answered = threading.Event()

    def requests():
        yield make_request(MODEL, "first question", 2, request_id="q1")
        assert first_answered.wait(10)
        yield make_request(MODEL, "second question", 2, request_id="q2")

    call = fleet.stub().ModelStreamInfer(requests(), metadata=slo(150), timeout=10)
    finals: list[str] = []
    for msg in call:
        assert not msg.error_message
        r = msg.infer_response
        if response_parameter(r, "triton_final_response"):
            finals.append(r.id)
            first_answered.set()
            if len(finals) == 2:
                break
    assert finals == ["q1", "q2"]
    for _ in call:  # the site ends the stream once the request stream is closed
        pass
    trailers = dict(call.trailing_metadata())
    assert trailers["x-fastpath-backend"] == "b"
    assert trailers["x-fastpath-hedged"].startswith("a -> b after ")
    assert fleet.rpcs() == {"a": 1, "b": 1, "c": 0}


def test_a_first_byte_in_time_is_never_hedged(fleet):
    # The floor is well above these answers' first byte (a few ms), so only a stall of the
    # machine longer than a second could look like a slow backend.
    proxy = fleet.start({"enabled": True, "after": "auto", "factor": 3.0, "min_ms": 1000})
    stub = fleet.stub()
    for k in range(6):
        _, call = stub.ModelInfer.with_call(make_request(MODEL, f"q{k}", 2), metadata=slo(2000), timeout=10)
        assert "x-fastpath-hedged" not in dict(call.trailing_metadata())
    # A stream whose first token comes at once and whose answer outlasts the hedge floor: the first
    # byte disarms the timer, so nothing is hedged mid-answer.
    call = stub.ModelStreamInfer(iter([make_request(MODEL, "long answer", 600)]), metadata=slo(2000), timeout=10)
    for _ in call:
        pass
    assert "x-fastpath-hedged" not in dict(call.trailing_metadata())
    assert sum(fleet.rpcs().values()) == 7  # each call went out exactly once
    assert not proxy.metrics.hedges


def test_hedging_off_arms_no_timer_and_the_call_waits_as_before(fleet):
    proxy = fleet.start(None)
    assert proxy.call_services.hedger is None
    fleet.sites["a"].set_fault("hang")
    with pytest.raises(grpc.RpcError) as e:
        fleet.stub().ModelInfer(make_request(MODEL, "x", 2), metadata=slo(100), timeout=0.8)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fleet.rpcs() == {"a": 1, "b": 0, "c": 0}
    assert not proxy.metrics.hedges


def test_a_second_slow_candidate_is_not_hedged_again(fleet):
    proxy = fleet.start(HEDGE_AT_SLO)
    fleet.sites["a"].set_fault("hang")
    fleet.sites["b"].set_fault("hang")
    with pytest.raises(grpc.RpcError) as e:
        fleet.stub().ModelInfer(make_request(MODEL, "x", 2), metadata=slo(100), timeout=1.0)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # waits for its deadline, as without hedging
    assert fleet.rpcs() == {"a": 1, "b": 1, "c": 0}
    m = proxy.metrics
    assert m.hedges["sent"] == 1 and m.hedges["won"] == 0
    # The client's RST_STREAM is sent by its own thread after the deadline fires, so it may reach
    # the proxy a little after the client has returned: wait for it, bounded.
    deadline = time.monotonic() + 5.0
    while fleet.loop.call(lambda: m.hedges["lost"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert m.hedges["lost"] == 1


def test_the_budget_caps_hedges_and_counts_the_refusals(fleet):
    proxy = fleet.start({**HEDGE_AT_SLO, "budget_percent": 0, "budget_burst": 1})
    fleet.sites["a"].set_fault("hang")
    stub = fleet.stub()
    _, call = stub.ModelInfer.with_call(make_request(MODEL, "x", 2), metadata=slo(100), timeout=5)
    assert dict(call.trailing_metadata())["x-fastpath-hedged"].startswith("a -> b")
    # The bucket is empty now: the next call routed to a is left to its deadline.
    proxy.live.ttft_ewma_ms[fleet.index("a")] = 0.0  # forget a's lateness so the router picks it again
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(make_request(MODEL, "y", 2), metadata=slo(100), timeout=0.8)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert proxy.metrics.hedges["sent"] == 1
    assert proxy.metrics.budget_refusals["hedge"] == 1
