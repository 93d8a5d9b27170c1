"""Proxies report their pinned sessions; SetFlowPath asks them, through the snapshots, to offload one."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from control_support import eventually, make_config

from fastpath.control.controller import Controller
from fastpath.control.watcher import FleetWatcher
from fastpath.gen import control_pb2 as pb
from fastpath.gen import control_pb2_grpc
from fastpath.control.auth import metadata as _control_metadata

CONTROL_MD = _control_metadata(__import__("os").environ["FASTPATH_CONTROL_TOKEN"])


class PinnedSessions:
    """What a proxy's side of the protocol does: report pinned flows, offload the sessions the snapshot names."""

    def __init__(self) -> None:
        self.flows = {
            "chat-1": pb.Flow(session="chat-1", client="127.0.0.1:40000", backend="a", path="python", bytes_python=5000, age_s=3.0),
            "chat-2": pb.Flow(session="chat-2", client="127.0.0.1:40002", backend="a", path="python", bytes_python=700),
        }
        self.offloaded: list[str] = []

    def report(self) -> list[pb.Flow]:
        return list(self.flows.values())

    def on_update(self, snap: pb.FleetTelemetry) -> None:
        for s in getattr(snap, "offload_sessions", ()):
            f = self.flows.get(s)
            if f is not None and f.path == "python":
                f.path = "kernel"
                f.bytes_offload = 1
                self.offloaded.append(s)


def test_flow_reports_fill_the_table_and_set_flow_path_offloads_through_the_proxy() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}], offload_driver="ebpf")
        proxy = PinnedSessions()
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            w = FleetWatcher(ctl.address, "proxy-1", proxy.on_update, flows_provider=proxy.report, flows_interval_s=0.1)
            task = asyncio.create_task(w.run())
            try:
                await eventually(lambda: _sessions(stub, {"chat-1", "chat-2"}), what="both pinned sessions listed")
                flows = {f.session: f for f in (await stub.ListFlows(pb.ListFlowsRequest())).flows}
                one = flows["chat-1"]
                assert (one.client, one.backend, one.path, one.bytes_python, one.proxy_id) == (
                    "127.0.0.1:40000", "a", "python", 5000, "proxy-1")
                assert one.age_s >= 3.0  # the proxy knows when the connection started

                moved = await stub.SetFlowPath(pb.SetFlowPathRequest(session="chat-1", path="kernel"), timeout=10, metadata=CONTROL_MD)
                assert moved.path == "kernel" and moved.bytes_offload == 1
                assert proxy.offloaded == ["chat-1"]
                # Done: the request leaves the snapshots.
                await eventually(lambda: w.latest is not None and not w.latest.offload_sessions, what="request settled")

                # The DPU path needs the dpu driver; back to python is not possible while spliced.
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.SetFlowPath(pb.SetFlowPathRequest(session="chat-2", path="dpu"), metadata=CONTROL_MD)
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and 'driver = "dpu"' in e.value.details()
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.SetFlowPath(pb.SetFlowPathRequest(session="chat-1", path="python"), metadata=CONTROL_MD)
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "until it closes" in e.value.details()

                # A connection the proxy no longer reports has closed: it leaves the table.
                del proxy.flows["chat-2"]
                await eventually(lambda: _sessions(stub, {"chat-1"}), what="closed session gone")
            finally:
                await w.close()
                await asyncio.wait_for(task, 5)

    asyncio.run(main())


async def _sessions(stub, want: set[str]) -> bool:
    return {f.session for f in (await stub.ListFlows(pb.ListFlowsRequest())).flows} == want


def test_a_session_only_seen_in_observations_cannot_be_offloaded() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}], offload_driver="ebpf")
        async with Controller(cfg) as ctl, grpc.aio.insecure_channel(ctl.address) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            await stub.ReportObservations(iter([pb.ObservationBatch(proxy_id="p", observations=[
                pb.Observation(backend="a", region="eu-west", session="routed-1", ttft_ms=10, ok=True)])]),
                metadata=CONTROL_MD)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.SetFlowPath(pb.SetFlowPathRequest(session="routed-1", path="kernel"), metadata=CONTROL_MD)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "pinned" in e.value.details()

    asyncio.run(main())
