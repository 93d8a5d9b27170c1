"""`fastpath top --once` against a real controller: backends, decision rates and flows, in 80 columns."""
from __future__ import annotations

import asyncio
import sys

from control_support import MetricsServer, ReadyServer, eventually, make_config

from fastpath.control.controller import Controller
from fastpath.control.watcher import FleetWatcher
from fastpath.gen import control_pb2 as pb

PAGE = ('vllm:num_requests_running{model_name="m"} 3\nvllm:num_requests_waiting{model_name="m"} 1\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\nfastpath_sim_power_draw_watts 1000\n'
        'fastpath_sim_power_budget_watts 4000\nfastpath_sim_max_num_seqs 8\n')


def test_top_once_shows_backends_decision_rates_and_flows_in_80_columns() -> None:
    async def main() -> None:
        ready = await ReadyServer().start()
        metrics = await MetricsServer(PAGE).start()
        cfg = make_config([{"name": "use1-a100-with-a-long-name", "address": ready.address, "metrics_url": metrics.url},
                           {"name": "down-site", "address": "127.0.0.1:1"}])
        decisions = {"ttft": 0, "cost": 0}
        flows = [pb.Flow(session="s1", backend="use1-a100-with-a-long-name", path="kernel",
                         bytes_python=1000, bytes_offload=5 << 20)]
        async with Controller(cfg) as ctl:
            w = FleetWatcher(ctl.address, "proxy-top", lambda v: None, decisions_provider=lambda: dict(decisions),
                             flows_provider=lambda: flows, flows_interval_s=0.05, flush_interval_s=0.05)
            task = asyncio.create_task(w.run())

            async def count() -> None:  # a proxy deciding 200/s on ttft and 50/s on cost
                while True:
                    await asyncio.sleep(0.01)
                    decisions["ttft"] += 2
                    decisions["cost"] += 0 if decisions["ttft"] % 8 else 2

            counter = asyncio.create_task(count())
            try:
                await eventually(lambda: ctl.proxies.get("proxy-top") and ctl.state.flows.get("s1"), what="reports")
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fastpath.cli", "top", "--once", "--control", ctl.address,
                    "--interval", "1.0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                counter.cancel()
                await w.close()
                await asyncio.wait_for(task, 10)
        await metrics.stop()
        await ready.stop()
        text = out.decode()
        assert proc.returncode == 0, err.decode()
        lines = text.splitlines()
        assert all(len(line) <= 80 for line in lines), [len(x) for x in lines]
        row = next(line for line in lines if line.startswith("use1-a100"))
        assert "ok" in row and "3/8+1" in row and "25%" in row and "75%" in row  # load, KV, power headroom
        assert "down-site" in text and "refused" in text
        rates = next(line for line in lines if line.startswith("decisions/s"))
        ttft = float(rates.split("ttft ")[1].split()[0])
        cost = float(rates.split("cost ")[1].split()[0])
        assert ttft > 50 and 0 < cost < ttft  # rates between two reads, not totals
        assert "kernel 1 (5.0 MiB)" in text

    asyncio.run(main())


def test_top_names_the_controller_it_cannot_reach() -> None:
    import subprocess

    from fastpath.ports import free_port

    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "top", "--once", "--control", f"127.0.0.1:{free_port()}",
                        "--timeout", "0.5"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "fastpath controller" in r.stderr
