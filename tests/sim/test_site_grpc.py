"""A site as a client sees it, over real gRPC: content, streaming, queueing, distance, metrics."""
import asyncio
import time

import grpc
import pytest

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.sim.site import Site
from fastpath.sim.llm_request import make_request, response_parameter, text_output
from fastpath.sim.metrics import parse_prometheus_text
from fastpath.sim.tokens import completion, completion_tokens

from sim_helpers import backend, http, running_site


async def test_liveness_readiness_and_metadata():
    async with running_site() as (site, stub):
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="m1"))).ready
        assert not (await stub.ModelReady(pb.ModelReadyRequest(name="absent"))).ready
        md = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m2"))
        assert [t.name for t in md.inputs] == ["text_input"] and [t.name for t in md.outputs] == ["text_output"]
        assert site.name in (await stub.ServerMetadata(pb.ServerMetadataRequest())).name


async def test_model_infer_returns_the_whole_completion_and_says_where():
    async with running_site() as (site, stub):
        r = await stub.ModelInfer(make_request("m1", "why is the sky blue", 7, request_id="r-1"))
        assert text_output(r) == completion("why is the sky blue", 7)
        assert r.id == "r-1" and r.model_name == "m1"
        assert response_parameter(r, "fastpath_site") == site.name
        assert response_parameter(r, "kv_cache_hit") is False
        again = await stub.ModelInfer(make_request("m1", "why is the sky blue", 3))
        assert response_parameter(again, "kv_cache_hit") is True
        assert text_output(again) == completion("why is the sky blue", 3)


async def test_default_max_tokens_is_16():
    async with running_site() as (_, stub):
        r = await stub.ModelInfer(make_request("m1", "count"))
        assert text_output(r) == completion("count", 16)


async def test_stream_sends_one_response_per_token_as_it_is_made_then_a_final_one():
    async with running_site(backend(tokens_per_s=20)) as (site, stub):  # 50 ms per token
        async def requests():
            yield make_request("m2", "tell me a story", 5, request_id="s-1")

        arrivals, texts, finals = [], [], []
        async for m in stub.ModelStreamInfer(requests(), metadata=[("x-fastpath-session", "abc")]):
            assert not m.error_message
            arrivals.append(time.perf_counter())
            texts.append(text_output(m.infer_response))
            finals.append(response_parameter(m.infer_response, "triton_final_response"))
            assert response_parameter(m.infer_response, "fastpath_site") == site.name
            assert m.infer_response.id == "s-1"
        assert texts[:-1] == completion_tokens("tell me a story", 5)
        assert finals == [False] * 5 + [True] and texts[-1] == ""
        # Tokens arrived spread out at the decode rate, not all at the end.
        assert arrivals[4] - arrivals[0] >= 4 * 0.05 * 0.9


async def test_several_requests_on_one_stream_are_answered_concurrently():
    async with running_site() as (_, stub):
        async def requests():
            yield make_request("m1", "first", 3, request_id="a")
            yield make_request("m2", "second", 2, request_id="b")

        got: dict[str, list[str]] = {"a": [], "b": []}
        async for m in stub.ModelStreamInfer(requests()):
            got[m.infer_response.id].append(text_output(m.infer_response))
        assert got["a"] == completion_tokens("first", 3) + [""]
        assert got["b"] == completion_tokens("second", 2) + [""]


async def test_unknown_model_is_not_found_and_lists_what_the_site_serves():
    async with running_site() as (site, stub):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelInfer(make_request("gpt-9", "hi"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert "gpt-9" in e.value.details() and "m1" in e.value.details() and site.name in e.value.details()

        async def requests():
            yield make_request("gpt-9", "hi")

        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for _ in stub.ModelStreamInfer(requests()):
                pass
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="gpt-9"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_request_is_invalid_argument_with_a_reason():
    async with running_site() as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelInfer(pb.ModelInferRequest(model_name="m1"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "text_input" in e.value.details()


async def _ttft(stub, prompt: str, n: int, metadata=()) -> float:
    async def requests():
        yield make_request("m1", prompt, n)

    t0 = time.perf_counter()
    async for _ in stub.ModelStreamInfer(requests(), metadata=metadata):
        return time.perf_counter() - t0
    raise AssertionError("no response")


async def test_ttft_grows_when_more_requests_than_slots_arrive():
    # 2 slots, 6 tokens at 50 tokens/s: each request holds its slot >= 100 ms.
    async with running_site(backend(slots=2, tokens_per_s=50, prefill_ms=5)) as (_, stub):
        within = await asyncio.gather(*(_ttft(stub, f"p{i}", 6) for i in range(2)))
        burst = sorted(await asyncio.gather(*(_ttft(stub, f"q{i}", 6) for i in range(6))))
        # Three waves: the last two requests queued behind two full decodes each.
        assert burst[-2] >= 2 * 0.1 and burst[2] >= 0.1
        assert burst[-1] > max(within)


async def test_far_region_pays_the_round_trip_near_region_does_not():
    async with running_site(backend(region="home")) as (_, stub):
        await _ttft(stub, "warm-up", 1)
        far = await _ttft(stub, "a", 1, metadata=[("x-fastpath-region", "far")])
        near = await _ttft(stub, "b", 1, metadata=[("x-fastpath-region", "near")])
        unary_t0 = time.perf_counter()
        await stub.ModelInfer(make_request("m1", "c", 1), metadata=[("x-fastpath-region", "far")])
        unary = time.perf_counter() - unary_t0
        assert far >= 0.300 and unary >= 0.300
        assert near < far - 0.2


async def test_warm_session_pays_a_fraction_of_the_prefill():
    async with running_site(backend(prefill_ms=400)) as (_, stub):
        md = [("x-fastpath-session", "sess-1")]
        cold = await _ttft(stub, "one prompt", 1, metadata=md)
        warm_t0 = time.perf_counter()
        r = await stub.ModelInfer(make_request("m1", "a different prompt", 1), metadata=md)
        warm = time.perf_counter() - warm_t0
        assert response_parameter(r, "kv_cache_hit") is True
        assert cold >= 0.4
        assert warm < cold - 0.2  # 10% of the prefill instead of all of it


async def test_metrics_reflect_running_and_waiting_under_load():
    async with running_site(backend(slots=2, tokens_per_s=20, models=("m1",))) as (site, stub):
        # 20 tokens at 20/s: each wave holds its slots for a second, long enough to scrape it.
        load = [asyncio.ensure_future(stub.ModelInfer(make_request("m1", f"x{i}", 20))) for i in range(5)]
        for _ in range(100):  # until all five arrived (a stalled machine may take a while)
            if (site.queue.running, site.queue.waiting) == (2, 3):
                break
            await asyncio.sleep(0.01)
        status, text = await http(site.metrics_port, "GET", "/metrics")
        assert status == 200
        m = parse_prometheus_text(text)
        lab = (("model_name", "m1"),)
        assert m[("vllm:num_requests_running", lab)] == 2
        assert m[("vllm:num_requests_waiting", lab)] == 3
        assert m[("fastpath_sim_power_draw_watts", ())] == site.spec.power_idle_watts + 2 * site.spec.power_per_slot_watts
        assert m[("fastpath_sim_max_num_seqs", ())] == 2
        assert m[("fastpath_sim_power_budget_watts", ())] == 5000
        assert 0 < m[("vllm:gpu_cache_usage_perc", lab)] <= 1
        await asyncio.gather(*load)
        m = parse_prometheus_text((await http(site.metrics_port, "GET", "/metrics"))[1])
        assert m[("vllm:num_requests_running", lab)] == 0 and m[("vllm:num_requests_waiting", lab)] == 0
        assert m[("vllm:time_to_first_token_seconds_count", lab)] == 5
        assert m[("vllm:request_success_total", lab)] == 5
        assert m[("vllm:generation_tokens_total", lab)] == 100


async def test_metrics_keep_alive_serves_many_scrapes_on_one_connection():
    async with running_site() as (site, _):
        r, w = await asyncio.open_connection("127.0.0.1", site.metrics_port)
        for _ in range(3):
            w.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            body = await r.readexactly(length)
            assert b"vllm:num_requests_running" in body
        w.close()
        assert (await http(site.metrics_port, "GET", "/nope"))[0] == 404


async def test_port_in_use_is_a_clear_error():
    from fastpath.sim.site import Site, SiteError
    from dataclasses import replace

    async with running_site() as (site, _):
        clash = Site(replace(backend(), address=site.address), {})
        with pytest.raises(SiteError, match="in use"):
            await clash.start()


async def test_a_client_that_gives_up_frees_its_slot_and_its_place_in_the_queue():
    async with running_site(backend(slots=1, tokens_per_s=20, models=("m1",))) as (site, stub):
        async def requests():
            yield make_request("m1", "long", 50)

        stream = stub.ModelStreamInfer(requests())
        await stream.read()  # holding the only slot, streaming
        waiting = stub.ModelInfer(make_request("m1", "queued", 2), timeout=1.0)  # the stream holds the slot 2.5 s
        for _ in range(50):
            if (site.queue.running, site.queue.waiting) == (1, 1):
                break
            await asyncio.sleep(0.01)
        assert (site.queue.running, site.queue.waiting) == (1, 1)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await waiting
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stream.cancel()
        for _ in range(50):
            if (site.queue.running, site.queue.waiting) == (0, 0):
                break
            await asyncio.sleep(0.02)
        assert (site.queue.running, site.queue.waiting) == (0, 0)
        assert site.context_tokens == 0
        assert text_output(await stub.ModelInfer(make_request("m1", "after", 2))) == completion("after", 2)


async def test_a_stopped_site_restarts_on_the_same_ports():
    site = Site(backend(), {})
    await site.start()
    port, mport = site.port, site.metrics_port
    await site.stop(grace=None)
    with pytest.raises(grpc.aio.AioRpcError):
        async with grpc.aio.insecure_channel(site.address) as ch:
            await pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=0.5)
    await site.start()
    try:
        assert (site.port, site.metrics_port) == (port, mport)
        # A fresh connection: channels share subchannels by default, and the one refused above may
        # still be backing off and would fail this call fast with its old "connection refused".
        async with grpc.aio.insecure_channel(site.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            assert (await pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=5)).ready
        assert (await http(mport, "GET", "/metrics"))[0] == 200
    finally:
        await site.stop(grace=None)
