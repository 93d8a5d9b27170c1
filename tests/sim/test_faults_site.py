"""Each fault mode as a client meets it, set in-process, over HTTP, and from the command line."""
import asyncio
import time

import grpc
import pytest

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.sim.llm_request import make_request, text_output
from fastpath.sim.tokens import completion, completion_tokens

from sim_helpers import backend, http, running_site


def one(prompt: str, n: int):
    async def requests():
        yield make_request("m1", prompt, n)
    return requests()


async def test_refuse_answers_unavailable_before_any_response_then_recovers():
    async with running_site() as (site, stub):
        site.set_fault("refuse")
        for call in (stub.ServerReady(pb.ServerReadyRequest()), stub.ModelInfer(make_request("m1", "x", 2))):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "refuse" in e.value.details()
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for m in stub.ModelStreamInfer(one("x", 2)):
                got.append(m)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and got == []
        site.set_fault("none")
        assert text_output(await stub.ModelInfer(make_request("m1", "x", 2))) == completion("x", 2)


async def test_hang_accepts_and_never_answers():
    async with running_site() as (site, stub):
        site.set_fault("hang")
        for call in (stub.ServerReady(pb.ServerReadyRequest(), timeout=0.3),
                     stub.ModelInfer(make_request("m1", "x", 1), timeout=0.3)):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The metrics endpoint still answers, so the fault can be cleared from outside.
        status, body = await http(site.metrics_port, "GET", "/fault")
        assert (status, body.strip()) == (200, "mode=hang")


async def test_stall_delays_the_first_token_of_a_share_of_calls_and_counts_every_rpc():
    async with running_site(backend(tokens_per_s=200, prefill_ms=5)) as (site, stub):
        site.set_fault("stall", share=0.5, stall_ms=300)
        took = []
        for k in range(20):
            t0 = time.perf_counter()
            async for _ in stub.ModelStreamInfer(one(f"s{k}", 1)):
                took.append(time.perf_counter() - t0)  # the first response: the token
                break
        stalled = sum(1 for t in took if t >= 0.3)
        assert 3 <= stalled <= 17  # a share of the calls, not all nor none
        assert site.rpcs == 20


async def test_slow_multiplies_prefill_and_decode():
    async with running_site(backend(tokens_per_s=100, prefill_ms=10)) as (site, stub):
        site.set_fault("slow", factor=8)
        t0 = time.perf_counter()
        r = await stub.ModelInfer(make_request("m1", "slowly", 4))
        took = time.perf_counter() - t0
        assert text_output(r) == completion("slowly", 4)
        # Normal: 10 ms prefill + 3 × 10 ms decode = 40 ms; ×8 is at least 320 ms.
        assert took >= 8 * 0.040 * 0.9


async def test_reset_aborts_the_stream_after_n_tokens_with_an_error_status():
    async with running_site() as (site, stub):
        site.set_fault("reset", after_tokens=2, code="INTERNAL")
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for m in stub.ModelStreamInfer(one("reset me", 6)):
                got.append(text_output(m.infer_response))
        assert e.value.code() == grpc.StatusCode.INTERNAL and "reset" in e.value.details()
        assert got == completion_tokens("reset me", 2)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ModelInfer(make_request("m1", "reset me", 6))
        assert e.value.code() == grpc.StatusCode.INTERNAL


async def test_die_in_process_cuts_the_connection_and_stops_the_site():
    async with running_site() as (site, stub):
        site.set_fault("die_mid_stream", after_tokens=1)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            async for m in stub.ModelStreamInfer(one("die", 5)):
                got.append(text_output(m.infer_response))
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert got == completion_tokens("die", 1)
        await asyncio.sleep(0.1)
        assert not site.running


async def test_fault_over_http():
    async with running_site() as (site, stub):
        status, body = await http(site.metrics_port, "POST", "/fault", b"mode=refuse")
        assert (status, body.strip()) == (200, "mode=refuse")
        assert site.fault.mode == "refuse"
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ServerReady(pb.ServerReadyRequest())
        status, body = await http(site.metrics_port, "POST", "/fault", b"mode=explode")
        assert status == 400 and "unknown fault mode" in body and "die_mid_stream" in body
        assert site.fault.mode == "refuse"  # a bad request changes nothing
        status, body = await http(site.metrics_port, "POST", "/fault?mode=die_mid_stream&after_tokens=3")
        assert (status, body.strip()) == (200, "mode=die_mid_stream&after_tokens=3")
        status, _ = await http(site.metrics_port, "POST", "/fault", b"mode=none")
        assert status == 200 and (await stub.ServerReady(pb.ServerReadyRequest())).ready
