"""Health probes are real ServerReady calls: refused, hung and not-ready backends are named and recover."""
from __future__ import annotations

import asyncio
import logging

from control_support import ReadyServer, eventually, free_port, make_config

from fastpath.control.health import HealthProber


def test_refused_hung_and_not_ready_backends_are_unhealthy_with_a_reason_and_recover(caplog) -> None:
    caplog.set_level(logging.INFO, logger="fastpath.control.health")

    async def main() -> None:
        good = await ReadyServer().start()
        hung = await ReadyServer().start()
        hung.hang = True
        dead_port = free_port()
        cfg = make_config([
            {"name": "good", "address": good.address},
            {"name": "hung", "address": hung.address},
            {"name": "dead", "address": f"127.0.0.1:{dead_port}"},
        ])
        changed: list[str] = []
        prober = HealthProber(cfg.backends, 0.05, 0.2, on_change=changed.append)
        task = asyncio.create_task(prober.run())
        st = prober.state
        try:
            await eventually(lambda: st["good"].healthy and st["dead"].probed and "timeout" in st["hung"].detail,
                             what="first verdicts")
            assert st["good"].detail == ""
            assert st["dead"].detail == "connection refused" and not st["dead"].healthy
            assert st["hung"].detail == "probe timeout after 200 ms" and not st["hung"].healthy

            # Not ready: unhealthy after `fall` probes, with the server's word for it.
            good.ready = False
            await eventually(lambda: not st["good"].healthy, what="good -> not ready")
            assert st["good"].detail == "server says not ready"
            good.ready = True
            await eventually(lambda: st["good"].healthy, what="good -> ready again")

            # Killed: unhealthy at once (refused); restarted on its port: healthy again.
            await good.stop()
            await eventually(lambda: not st["good"].healthy, what="good killed")
            assert st["good"].detail in ("connection refused", "connection reset") or "unavailable" in st["good"].detail
            await good.start()
            await eventually(lambda: st["good"].healthy, timeout_s=10, what="good restarted")

            # The hung backend answers again.
            hung.hang = False
            await hung.stop()
            await hung.start()
            await eventually(lambda: st["hung"].healthy, timeout_s=10, what="hung recovers")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await good.stop()
            await hung.stop()
        # Each change was logged once, not once per probe.
        probes = sum(s.probes for s in st.values())
        transitions = [r.getMessage() for r in caplog.records if r.name == "fastpath.control.health"]
        assert probes > 3 * len(transitions)
        assert transitions.count("good is unhealthy: server says not ready") == 1
        assert transitions.count("dead is unhealthy: connection refused") == 1
        assert "good is healthy again" in transitions

    asyncio.run(main())


def test_one_lost_probe_does_not_flip_a_healthy_backend() -> None:
    async def main() -> None:
        srv = await ReadyServer().start()
        cfg = make_config([{"name": "a", "address": srv.address}])
        prober = HealthProber(cfg.backends, 0.05, 0.2, fall=2)
        try:
            prober.record("a", await prober.probe("a"))
            assert prober.state["a"].healthy
            srv.ready = False
            prober.record("a", await prober.probe("a"))
            assert prober.state["a"].healthy  # one failure is not enough
            prober.record("a", await prober.probe("a"))
            assert not prober.state["a"].healthy
            srv.ready = True
            prober.record("a", await prober.probe("a"))
            assert not prober.state["a"].healthy  # rise = 2
            prober.record("a", await prober.probe("a"))
            assert prober.state["a"].healthy
        finally:
            await prober.close()
            await srv.stop()

    asyncio.run(main())
