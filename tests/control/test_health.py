"""Health probes are real ServerReady calls: refused, hung and not-ready backends are named and recover."""
from __future__ import annotations

import asyncio
import logging

from control_support import ReadyServer, eventually, free_port, make_config

import pytest

from fastpath.control.health import HealthProber, ProbeResult


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
            assert st["hung"].detail.startswith("probe timeout after ") and not st["hung"].healthy

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
        prober = HealthProber(cfg.backends, 0.05, 1.0, fall=2)  # every probe answers: no deadline is meant to pass
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


def test_a_busy_backend_that_misses_probes_while_answering_calls_keeps_its_traffic() -> None:
    """Probes time out, but proxies report calls it answers: it stays healthy. Without
    those calls it is ejected, and only after `fall` failed probes in a row."""
    async def main() -> None:
        busy = await ReadyServer().start()
        busy.hang = True  # every probe times out
        cfg = make_config([{"name": "busy", "address": busy.address}])
        prober = HealthProber(cfg.backends, 0.05, 0.05, fall=3, rise=2)
        st = prober.state["busy"]
        prober.record("busy", ProbeResult(True, ""))  # was healthy
        try:
            for _ in range(8):  # eight lost probes, each followed by calls it answered
                prober.record("busy", await prober.probe("busy"))
                prober.in_band("busy", ok=True)
                assert st.healthy, st.detail
            assert st.in_band_ok == 8
            for k in range(3):  # no calls now: ejected at the third lost probe in a row, not before
                assert st.healthy, k
                prober.record("busy", await prober.probe("busy"))
            assert not st.healthy and st.detail.startswith("probe timeout")
            prober.in_band("busy", ok=True)
            assert not st.healthy  # one answered call is not yet `rise` of them
            prober.in_band("busy", ok=True)
            assert st.healthy  # answered calls bring it back like good probes
        finally:
            await prober.close()
            await busy.stop()

    asyncio.run(main())


def test_probe_deadlines_follow_what_the_backend_needs() -> None:
    async def main() -> None:
        slow = await ReadyServer().start()
        # Deadlines of a few hundred ms, so a stall of this shared machine is not read as a slow backend.
        slow.delay_s = 0.48  # answers, but slower than the configured 200 ms
        cfg = make_config([{"name": "slow", "address": slow.address}])
        prober = HealthProber(cfg.backends, 0.05, 0.2, fall=3)
        try:
            first = await prober.probe("slow")
            assert not first.ok and first.detail == "probe timeout after 200 ms"
            assert prober.timeout_for("slow") == pytest.approx(0.4)  # doubled after a timeout
            second = await prober.probe("slow")  # 400 ms: still too short
            assert not second.ok and prober.timeout_for("slow") == pytest.approx(0.8)
            third = await prober.probe("slow")
            assert third.ok  # waited long enough
            # Now the deadline follows its round trips: 4 x ~480 ms, within 8 x the configured 200 ms.
            assert 1.2 < prober.timeout_for("slow") <= 1.6
            slow.delay_s = 0.0
            for _ in range(30):
                assert (await prober.probe("slow")).ok
            assert prober.timeout_for("slow") < 0.4  # fast again: back towards the configured deadline
        finally:
            await prober.close()
            await slow.stop()

    asyncio.run(main())
