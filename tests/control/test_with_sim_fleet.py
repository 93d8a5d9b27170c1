"""End to end with real processes: simulated GPU sites, the controller process, and a FleetWatcher."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from control_support import eventually, free_port_base, spawn_controller, stop_process

from fastpath.config import load_config, with_ports
from fastpath.control.watcher import FleetWatcher
from fastpath.gen import control_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc
from fastpath.sim import llm_request as llm
from fastpath.sim.fleet import FleetProcess

SITES = ["use1-l4", "euw1-l4"]


@pytest.mark.slow
def test_load_and_a_killed_site_show_up_in_fleet_telemetry(tmp_path) -> None:
    cfg = with_ports(load_config(), free_port_base(13))
    path = cfg.write(tmp_path / "config.toml")
    l4 = cfg.backend("use1-l4")

    def tel(snap: pb.FleetTelemetry, name: str) -> pb.BackendTelemetry:
        return next(b for b in snap.backends if b.name == name)

    async def main(fleet) -> None:
        proc = await asyncio.to_thread(spawn_controller, path, tmp_path / "controller.log")
        watcher = FleetWatcher(cfg.control.listen, "e2e", lambda s: None)
        task = asyncio.create_task(watcher.run())
        try:
            await eventually(lambda: watcher.latest and all(tel(watcher.latest, s).healthy for s in SITES)
                             and tel(watcher.latest, "use1-l4").max_num_seqs == 4, timeout_s=15,
                             what="both sites healthy with metrics")
            snap = watcher.latest
            # Sites not running are refused, and say so.
            assert not tel(snap, "usw2-h100").healthy and tel(snap, "usw2-h100").health_detail == "connection refused"
            idle = tel(snap, "use1-l4")
            assert idle.num_requests_running == 0 and idle.power_draw_watts == l4.sim.power_idle_watts
            assert idle.power_budget_watts == l4.power_budget_watts and idle.has_metrics

            # Load: twice as many long requests as the site has slots.
            async with grpc.aio.insecure_channel(l4.address) as ch:
                stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(ch)
                calls = [stub.ModelInfer(llm.make_request("mistral-7b", f"prompt {i}", 120), timeout=30) for i in range(8)]
                try:
                    busy = await eventually(
                        lambda: tel(watcher.latest, "use1-l4").num_requests_running == 4
                        and tel(watcher.latest, "use1-l4").num_requests_waiting >= 1 and tel(watcher.latest, "use1-l4"),
                        timeout_s=10, what="load in the telemetry")
                    assert busy.power_draw_watts == l4.sim.power_idle_watts + 4 * l4.sim.power_per_slot_watts
                    assert busy.gpu_cache_usage_perc > 0
                finally:
                    for c in calls:
                        c.cancel()
            await eventually(lambda: tel(watcher.latest, "use1-l4").num_requests_running == 0, what="load gone")

            # A site killed outright turns unhealthy; restarted, it is healthy again.
            await asyncio.to_thread(fleet.kill, "euw1-l4")
            dead = await eventually(lambda: not tel(watcher.latest, "euw1-l4").healthy and tel(watcher.latest, "euw1-l4"),
                                    what="killed site unhealthy")
            assert dead.health_detail == "connection refused"
            await asyncio.to_thread(fleet.start_site, "euw1-l4")
            await eventually(lambda: tel(watcher.latest, "euw1-l4").healthy, timeout_s=15, what="restarted site healthy")
            assert tel(watcher.latest, "use1-l4").healthy
        finally:
            await watcher.close()
            await asyncio.wait_for(task, 10)
            await asyncio.to_thread(stop_process, proc)

    with FleetProcess(cfg, sites=SITES) as fleet:
        asyncio.run(main(fleet))
