"""FleetWatcher, the proxy's side: follows a real controller process through a kill and a restart."""
from __future__ import annotations

import asyncio
import logging
import os
import signal

import grpc

from control_support import MetricsServer, ReadyServer, eventually, make_config, spawn_controller, stop_process

from fastpath.control.watcher import FleetWatcher
from fastpath.gen import control_pb2 as pb
from fastpath.control.auth import metadata as _control_metadata

CONTROL_MD = _control_metadata(__import__("os").environ["FASTPATH_CONTROL_TOKEN"])


def test_watcher_survives_a_killed_controller_keeps_its_snapshot_and_reconnects(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastpath.control.watcher")

    async def main() -> None:
        ready = await ReadyServer().start()
        metrics = await MetricsServer('vllm:num_requests_running{model_name="m"} 3\n').start()
        cfg = make_config([{"name": "a", "address": ready.address, "metrics_url": metrics.url}])
        path = cfg.write(tmp_path / "config.toml")
        proc = await asyncio.to_thread(spawn_controller, path, tmp_path / "controller.log")
        updates: list[pb.FleetTelemetry] = []
        watcher = FleetWatcher(cfg.control.listen, "proxy-t", updates.append, backoff_max_s=0.5)
        task = asyncio.create_task(watcher.run())
        try:
            await eventually(lambda: updates and updates[-1].backends[0].healthy
                             and updates[-1].backends[0].num_requests_running == 3, what="a live snapshot")
            assert watcher.connected
            watcher.observe("a", "us-east", "sess-1", 120.0, True, "m")
            await eventually(lambda: watcher.reported == 1, what="observation reported")

            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            await eventually(lambda: not watcher.connected, what="watcher notices the controller is gone")
            last = watcher.latest
            attempts = watcher.attempts
            # Meanwhile the proxy keeps its last snapshot and observe() keeps working.
            for i in range(50):
                watcher.observe("a", "us-east", f"sess-{i}", 100.0 + i, True, "m")
            await eventually(lambda: watcher.attempts >= attempts + 3, what="several reconnect attempts")
            assert watcher.latest is last and watcher.latest.backends[0].num_requests_running == 3

            proc2 = await asyncio.to_thread(spawn_controller, path, tmp_path / "controller.log")
            try:
                await eventually(lambda: watcher.connected and watcher.latest is not last, timeout_s=15, what="reconnected")
                assert watcher.latest.version > last.version  # versions keep growing across restarts
                assert watcher.reconnects == 1
                # Observations made after the restart reach the new controller.
                watcher.observe("a", "us-east", "after-restart", 80.0, True, "m")
                await eventually(lambda: updates[-1].session_backend.get("after-restart") == "a", what="session learned")
            finally:
                await watcher.close()
                await asyncio.wait_for(task, 10)
                await asyncio.to_thread(stop_process, proc2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(stop_process, proc)
            await ready.stop()
            await metrics.stop()
        # One log line per state change, not one per retry.
        msgs = [r.getMessage() for r in caplog.records if r.name == "fastpath.control.watcher"]
        assert sum("unreachable" in m for m in msgs) == 1, msgs
        assert sum("following controller" in m for m in msgs) == 2, msgs

    asyncio.run(main())


def test_observe_is_bounded_and_drops_the_oldest() -> None:
    async def main() -> None:
        w = FleetWatcher("127.0.0.1:1", "p", lambda s: None, max_pending=100)
        for i in range(250):
            w.observe("a", "r", f"s{i}", float(i), True, "m")
        assert w.pending == 100 and w.dropped == 150
        assert w._pending[0][2] == "s150"  # the newest 100 are kept

    asyncio.run(main())


def test_watcher_without_a_controller_retries_quietly_and_closes_promptly(caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastpath.control.watcher")

    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        w = FleetWatcher(cfg.control.listen, "p", lambda s: None, backoff_initial_s=0.01, backoff_max_s=0.05)
        task = asyncio.create_task(w.run())
        await eventually(lambda: w.attempts >= 5, what="retries")
        w.observe("a", "r", "s", 1.0, True, "m")
        await w.close()
        await asyncio.wait_for(task, 5)
        assert w.latest is None and not w.connected

    asyncio.run(main())
    msgs = [r.getMessage() for r in caplog.records if r.name == "fastpath.control.watcher"]
    assert len(msgs) == 1 and "unreachable" in msgs[0] and "no fleet snapshot yet" in msgs[0]


def test_a_failing_update_handler_does_not_end_the_subscription() -> None:
    async def main() -> None:
        ready = await ReadyServer().start()
        cfg = make_config([{"name": "a", "address": ready.address}])
        from fastpath.control.controller import Controller

        calls = []

        def handler(snap: pb.FleetTelemetry) -> None:
            calls.append(snap.version)
            raise ValueError("proxy bug")

        async with Controller(cfg) as ctl:
            w = FleetWatcher(ctl.address, "p", handler)
            task = asyncio.create_task(w.run())
            await eventually(lambda: calls, what="a first update")
            w.observe("a", "us-east", "s", 10.0, True, "m")  # a change: the controller sends a new snapshot
            await eventually(lambda: len(calls) >= 2, what="a second update despite the handler failing")
            assert w.connected
            await w.close()
            await asyncio.wait_for(task, 5)
        await ready.stop()

    asyncio.run(main())


def test_watcher_notices_a_hung_controller_and_follows_it_again_when_it_resumes(tmp_path) -> None:
    """A stopped process still completes TCP handshakes: only the missing heartbeat gives it away."""

    async def main() -> None:
        ready = await ReadyServer().start()
        cfg = make_config([{"name": "a", "address": ready.address}])
        path = cfg.write(tmp_path / "config.toml")
        proc = await asyncio.to_thread(spawn_controller, path, tmp_path / "controller.log")
        # Three heartbeats (1 s apart) may go missing before it counts as hung: a stall of this
        # shared machine is not a hung controller.
        w = FleetWatcher(cfg.control.listen, "p", lambda s: None, stale_after_s=3.0)
        task = asyncio.create_task(w.run())
        try:
            await eventually(lambda: w.connected, what="connected")
            await asyncio.sleep(4.0)
            assert w.connected and w.attempts == 1  # a quiet fleet is not a hung controller: heartbeats
            os.kill(proc.pid, signal.SIGSTOP)
            await eventually(lambda: not w.connected, what="hung controller noticed")
            kept = w.latest
            os.kill(proc.pid, signal.SIGCONT)
            await eventually(lambda: w.connected, what="following again")
            assert w.latest is kept or w.latest.version >= kept.version
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            await w.close()
            await asyncio.wait_for(task, 10)
            await asyncio.to_thread(stop_process, proc)
            await ready.stop()

    asyncio.run(main())


def test_policies_set_on_the_controller_reach_the_watcher() -> None:
    async def main() -> None:
        from fastpath.control.controller import Controller
        from fastpath.gen import control_pb2_grpc

        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        seen: list[pb.PolicyList] = []
        async with Controller(cfg) as ctl:
            w = FleetWatcher(ctl.address, "p", lambda s: None, on_policies=seen.append)
            task = asyncio.create_task(w.run())
            try:
                await eventually(lambda: seen, what="the config's policies")
                assert [p.name for p in seen[0].policies] == ["balanced"]
                async with grpc.aio.insecure_channel(ctl.address) as ch:
                    await control_pb2_grpc.ControlStub(ch).SetPolicy(pb.Policy(name="green", capacity=2, proximity=2), metadata=CONTROL_MD)
                await eventually(lambda: len(seen) == 2, what="the new policy")
                green = next(p for p in seen[1].policies if p.name == "green")
                assert (green.capacity, green.proximity, green.ttft) == (0.5, 0.5, 0.0)
                await asyncio.sleep(0.3)
                assert len(seen) == 2  # unchanged policies are not handed over again
            finally:
                await w.close()
                await asyncio.wait_for(task, 5)

    asyncio.run(main())
