"""The fastpath.v1.Control API over real gRPC: fleet snapshots, observations, policies, flows."""
from __future__ import annotations

import asyncio
import json
import math
import subprocess

import grpc
import pytest
from control_support import PY, MetricsServer, ReadyServer, eventually, free_port, make_config

from fastpath.control.controller import Controller, ControllerError
from fastpath.gen import control_pb2 as pb
from fastpath.gen import control_pb2_grpc
from fastpath.control.auth import metadata as _control_metadata

CONTROL_MD = _control_metadata(__import__("os").environ["FASTPATH_CONTROL_TOKEN"])

PAGE = 'vllm:num_requests_running{model_name="m"} %d\nvllm:num_requests_waiting{model_name="m"} %d\n'


def obs(backend: str, ttft: float = 100.0, ok: bool = True, session: str = "", region: str = "us-east") -> pb.Observation:
    return pb.Observation(backend=backend, region=region, session=session, ttft_ms=ttft, ok=ok, model="m")


async def report(stub, *batches: list[pb.Observation], proxy_id: str = "p1") -> int:
    ack = await stub.ReportObservations(iter([pb.ObservationBatch(proxy_id=proxy_id, observations=b) for b in batches]), timeout=5, metadata=CONTROL_MD)
    return ack.accepted


def test_watchfleet_sends_a_snapshot_at_once_then_one_per_change_rate_limited() -> None:
    async def main() -> None:
        metrics = await MetricsServer(PAGE % (1, 0)).start()
        ready = await ReadyServer().start()
        cfg = make_config([{"name": "a", "address": ready.address, "metrics_url": metrics.url}], scrape_interval_ms=100)
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            stream = stub.WatchFleet(pb.WatchFleetRequest(proxy_id="t"))
            snaps: list[pb.FleetTelemetry] = []

            async def collect() -> None:
                async for s in stream:
                    snaps.append(s)

            task = asyncio.create_task(collect())
            try:
                await eventually(lambda: snaps, what="first snapshot")
                await eventually(lambda: snaps[-1].backends[0].healthy and snaps[-1].backends[0].num_requests_running == 1,
                                 what="healthy, load 1")
                metrics.text = PAGE % (6, 4)
                await eventually(lambda: snaps[-1].backends[0].num_requests_running == 6, what="load 6 in the stream")
                b = snaps[-1].backends[0]
                assert (b.num_requests_waiting, b.has_metrics, b.name) == (4, True, "a")
                assert b.scraped_unix_ms > 0 and b.power_budget_watts == 5000  # from the config when not exported
                versions = [s.version for s in snaps]
                assert versions == sorted(versions), "versions only grow"
                for x, y in zip(snaps, snaps[1:]):
                    assert x.version != y.version or x == y, "a repeated version is a heartbeat: the same snapshot"
                gaps = [b.generated_unix_ms - a.generated_unix_ms for a, b in zip(snaps, snaps[1:])]
                assert min(gaps) >= 90, f"at most one snapshot per 100 ms scrape interval: {gaps}"
                # A dead backend shows up as unhealthy with the reason.
                await ready.stop()
                await eventually(lambda: not snaps[-1].backends[0].healthy, what="unhealthy in the stream")
                assert snaps[-1].backends[0].health_detail
                # ListBackends answers the same state.
                listed = await stub.ListBackends(pb.ListBackendsRequest(), timeout=5)
                assert listed.backends[0].num_requests_running == 6 and not listed.backends[0].healthy
            finally:
                stream.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await metrics.stop()
        await ready.stop()

    asyncio.run(main())


def test_observations_fold_into_ewmas_sessions_and_flows() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:2"}])
        async with Controller(cfg, session_capacity=3) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            v0 = (await stub.ListBackends(pb.ListBackendsRequest())).version
            accepted = await report(stub, [obs("a", 100.0, session="s1"), obs("a", 200.0, region="eu-west")],
                                    [obs("b", 0.0, ok=False, session="s2"), obs("nope", 5.0), obs("a", math.nan)])
            assert accepted == 3  # unknown backend and NaN TTFT are rejected
            snap = await stub.ListBackends(pb.ListBackendsRequest())
            assert snap.version > v0
            a, b = snap.backends
            assert a.ttft_ms_observed == pytest.approx(100 + 0.2 * (200 - 100))
            assert dict(a.ttft_ms_by_region) == pytest.approx({"us-east": 100.0, "eu-west": 200.0})
            assert a.error_rate == 0.0 and b.error_rate == 1.0
            assert b.ttft_ms_observed == 0.0  # a failed call says nothing about TTFT
            assert dict(snap.session_backend) == {"s1": "a"}  # s2 failed: no affinity learned

            # The failing backend loses the session; a good call elsewhere wins it.
            await report(stub, [obs("b", 50.0, session="s1")])
            await report(stub, [obs("b", 0.0, ok=False, session="s1")])
            assert "s1" not in (await stub.ListBackends(pb.ListBackendsRequest())).session_backend
            # Bounded: the least recently used session is evicted first.
            await report(stub, [obs("a", 10, session=s) for s in ("x1", "x2", "x3")])
            await report(stub, [obs("a", 10, session="x1"), obs("b", 10, session="x4")])
            assert dict((await stub.ListBackends(pb.ListBackendsRequest())).session_backend) == {"x3": "a", "x1": "a", "x4": "b"}

            flows = {f.session: f for f in (await stub.ListFlows(pb.ListFlowsRequest())).flows}
            assert {"s1", "s2", "x1", "x2", "x3", "x4"} <= set(flows)
            assert flows["x4"].backend == "b" and flows["x4"].path == "python" and flows["x4"].proxy_id == "p1"
            assert flows["s1"].client == "us-east" and flows["s1"].age_s >= 0

    asyncio.run(main())


def test_set_policy_validates_and_overrides_in_memory() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            bad = [
                (pb.Policy(name="zero"), "all weights are zero"),
                (pb.Policy(name="neg", ttft=1, cost=-1), "not negative"),
                (pb.Policy(name="nan", ttft=math.nan), "finite"),
                (pb.Policy(name="", ttft=1), "not valid"),
                (pb.Policy(name="has space", ttft=1), "not valid"),
            ]
            for policy, words in bad:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.SetPolicy(policy, metadata=CONTROL_MD)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert words in e.value.details()
            # An axis this controller does not know (a newer client's field 7).
            raw = pb.Policy(name="future", ttft=1).SerializeToString() + bytes([7 << 3 | 1]) + bytes(8)
            set_raw = ch.unary_unary("/fastpath.v1.Control/SetPolicy", response_deserializer=pb.PolicyList.FromString)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await set_raw(raw, metadata=CONTROL_MD)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown axis" in e.value.details()

            listed = await stub.SetPolicy(pb.Policy(name="balanced", ttft=3, proximity=1), metadata=CONTROL_MD)
            by_name = {p.name: p for p in listed.policies}
            assert by_name["balanced"].ttft == pytest.approx(0.75) and by_name["balanced"].proximity == pytest.approx(0.25)
            assert by_name["balanced"].cost == 0
            await stub.SetPolicy(pb.Policy(name="green", capacity=1), metadata=CONTROL_MD)
            listed = await stub.ListPolicies(pb.ListPoliciesRequest())
            assert {p.name for p in listed.policies} == {"balanced", "green"}
            assert listed.default_policy == "balanced"

    asyncio.run(main())


def test_set_flow_path_without_an_offload_driver_says_so() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            await report(stub, [obs("a", session="s1")])
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.SetFlowPath(pb.SetFlowPathRequest(session="s1", path="kernel"), metadata=CONTROL_MD)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "offload driver none" in e.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.SetFlowPath(pb.SetFlowPathRequest(session="nobody", path="kernel"), metadata=CONTROL_MD)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND and "fastpath flows" in e.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.SetFlowPath(pb.SetFlowPathRequest(session="s1", path="warp"), metadata=CONTROL_MD)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            flow = await stub.SetFlowPath(pb.SetFlowPathRequest(session="s1", path="python"), metadata=CONTROL_MD)
            assert flow.path == "python" and flow.backend == "a"

    asyncio.run(main())


def test_a_taken_listen_port_gives_a_clear_error() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        async with Controller(cfg) as first:
            with pytest.raises(ControllerError, match="another controller"):
                await Controller(cfg, listen=first.address).start()

    asyncio.run(main())


def test_flows_cli_prints_a_table_json_and_a_hint_when_no_controller(capsys) -> None:
    from fastpath.cli import main as cli

    async def main() -> tuple[str, str]:
        cfg = make_config([{"name": "use1-a100", "address": "127.0.0.1:1"}])
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            await report(stub, [obs("use1-a100", session="chat-42", region="eu-west")], proxy_id="proxy-1")
            # The command is synchronous: run it beside the controller's event loop.
            assert await asyncio.to_thread(cli, ["flows", "--control", ctl.address]) == 0
            table = capsys.readouterr().out
            assert await asyncio.to_thread(cli, ["flows", "--control", ctl.address, "--json"]) == 0
            return table, capsys.readouterr().out

    table, as_json = asyncio.run(main())
    header, row = table.splitlines()
    assert header.split() == ["SESSION", "CLIENT", "BACKEND", "PATH", "PYTHON", "OFFLOAD", "AGE"]
    assert row.split()[:4] == ["chat-42", "eu-west", "use1-a100", "python"]
    [flow] = json.loads(as_json)
    assert flow["session"] == "chat-42" and flow["proxy_id"] == "proxy-1" and flow["bytes_python"] == 0

    # A real process too: what a user types, with nothing listening.
    dead = f"127.0.0.1:{free_port()}"
    gone = subprocess.run([PY, "-m", "fastpath.cli", "flows", "--control", dead], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1
    assert f"no controller at {dead}: start it with `fastpath up` or `fastpath controller`" in gone.stderr


def test_observations_of_a_backend_nobody_calls_any_more_are_forgotten() -> None:
    """A backend once slow gets no traffic; it must not keep its bad average forever."""

    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:2"}])
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            ctl.state.observation_ttl_s = 0.5
            stub = control_pb2_grpc.ControlStub(ch)
            await report(stub, [obs("a", 900.0, ok=False), obs("a", 900.0)])
            a = (await stub.ListBackends(pb.ListBackendsRequest())).backends[0]
            assert a.ttft_ms_observed == 900.0 and a.error_rate > 0.5
            for _ in range(12):  # b keeps being called: its averages stay
                await asyncio.sleep(0.2)
                await report(stub, [obs("b", 40.0)])  # just before the listing: fresh even after a stall
            a, b = (await stub.ListBackends(pb.ListBackendsRequest())).backends
            assert (a.ttft_ms_observed, a.error_rate, dict(a.ttft_ms_by_region)) == (0.0, 0.0, {})
            assert b.ttft_ms_observed == 40.0

    asyncio.run(main())


def test_calls_that_steer_need_the_token():
    from fastpath.config import load_config, with_ports

    from control_support import free_port_base

    cfg = with_ports(load_config(), free_port_base(20))

    async def go():
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            for call in (lambda: stub.SetPolicy(pb.Policy(name="x", ttft=1)),
                         lambda: stub.SetFlowPath(pb.SetFlowPathRequest(session="s", path="kernel")),
                         lambda: stub.SetPolicy(pb.Policy(name="x", ttft=1), metadata=(("authorization", "Bearer no"),))):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call()
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "authorization: Bearer" in e.value.details()
            # Reading needs no token.
            assert (await stub.ListBackends(pb.ListBackendsRequest(), timeout=5)).backends

    asyncio.run(go())
