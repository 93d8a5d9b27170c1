"""Reading backends' metrics over real HTTP: kept-alive connections, timeouts, vLLM names."""
from __future__ import annotations

import asyncio
import time

import pytest
from control_support import MetricsServer, eventually, make_config

from fastpath.control.http1client import Http1Client, HttpError, parse_http_url
from fastpath.control.scraper import Scraper

PAGE = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 3
vllm:num_requests_running{model_name="b"} 4
vllm:num_requests_waiting{model_name="a"} 7
vllm:num_requests_waiting{model_name="b"} 1
vllm:gpu_cache_usage_perc{model_name="a"} 0.2
vllm:gpu_cache_usage_perc{model_name="b"} 0.6
fastpath_sim_power_draw_watts 3100
fastpath_sim_power_budget_watts 6000
fastpath_sim_max_num_seqs 8
"""


def test_many_gets_share_one_kept_alive_connection() -> None:
    async def main() -> None:
        srv = await MetricsServer("hello 1\n").start()
        client = Http1Client(srv.url, timeout_s=2.0)
        try:
            for _ in range(20):
                assert await client.get() == b"hello 1\n"
            assert srv.connections == 1 and srv.requests == 20
        finally:
            client.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["chunked", "close", "http10"])
def test_chunked_and_close_delimited_bodies_are_read_whole(mode: str) -> None:
    async def main() -> None:
        srv = await MetricsServer(PAGE * 3).start()
        srv.mode = mode
        client = Http1Client(srv.url, timeout_s=2.0)
        try:
            for _ in range(3):
                assert await client.get() == (PAGE * 3).encode()
            assert srv.connections == (1 if mode == "chunked" else 3)
        finally:
            client.close()
            await srv.stop()

    asyncio.run(main())


def test_a_hanging_server_costs_one_timeout_and_a_restarted_one_is_read_again() -> None:
    async def main() -> None:
        srv = await MetricsServer("x 1\n").start()
        client = Http1Client(srv.url, timeout_s=0.2)
        try:
            srv.mode = "hang"
            t0 = time.monotonic()
            with pytest.raises(HttpError, match="no response within 200 ms"):
                await client.get()
            assert time.monotonic() - t0 < 5  # bounded by the deadline, not by the server
            srv.mode = "500"
            with pytest.raises(HttpError, match="HTTP 500"):
                await client.get()
            srv.mode = "ok"
            assert await client.get() == b"x 1\n"
            port = srv.port
            await srv.stop()
            with pytest.raises(HttpError, match="refused|reset|closed"):
                await client.get()
            await srv.start(port)
            assert await client.get() == b"x 1\n"
        finally:
            client.close()
            await srv.stop()

    asyncio.run(main())


@pytest.mark.parametrize("url, words", [("https://h:1/m", "only http://"), ("http://:5/m", "no host"), ("http://h:x/m", "bad port")])
def test_bad_metrics_urls_are_named(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_http_url(url)


def test_scraper_reads_vllm_names_summed_and_averaged_over_models() -> None:
    async def main() -> None:
        srv = await MetricsServer(PAGE).start()
        cfg = make_config([
            {"name": "a", "address": "127.0.0.1:1", "metrics_url": srv.url},
            {"name": "b", "address": "127.0.0.1:2"},
        ])
        changes: list[tuple[str, bool]] = []
        scraper = Scraper(cfg.backends, 0.02, on_change=lambda n, c: changes.append((n, c)))
        task = asyncio.create_task(scraper.run())
        try:
            m = await eventually(lambda: scraper.metrics["a"].scraped_unix_ms and scraper.metrics["a"], what="a scrape")
            assert (m.num_requests_running, m.num_requests_waiting) == (7, 8)
            assert m.gpu_cache_usage_perc == pytest.approx(0.4)
            assert (m.power_draw_watts, m.power_budget_watts, m.max_num_seqs) == (3100, 6000, 8)
            assert m.has_metrics and not m.error
            assert not scraper.metrics["b"].has_metrics  # no metrics_url: scored from observations only
            assert scraper.metrics["b"].scraped_unix_ms == 0
            # Load changes show up on a later scrape, reported as a change.
            n = len(changes)
            srv.text = PAGE.replace('model_name="a"} 7', 'model_name="a"} 70')
            await eventually(lambda: scraper.metrics["a"].num_requests_waiting == 71, what="new load")
            assert ("a", True) in changes[n:]
            # A page with a broken line still yields the rest.
            srv.text = PAGE + 'vllm:num_requests_running{model_name="c" 99\n'
            await eventually(lambda: scraper.metrics["a"].skipped_lines == 1, what="skipped line")
            assert scraper.metrics["a"].num_requests_running == 7
            # The backend dies: values stay, the error says why.
            await srv.stop()
            await eventually(lambda: scraper.metrics["a"].error, what="scrape error")
            assert "refused" in scraper.metrics["a"].error and srv.url in scraper.metrics["a"].error
            assert scraper.metrics["a"].num_requests_running == 7
            assert srv.connections <= 3  # kept alive, not one connection per scrape
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await srv.stop()

    asyncio.run(main())


def test_one_hanging_backend_does_not_delay_the_others() -> None:
    async def main() -> None:
        slow = await MetricsServer(PAGE).start()
        slow.mode = "hang"
        fast = await MetricsServer(PAGE).start()
        cfg = make_config([
            {"name": "slow", "address": "127.0.0.1:1", "metrics_url": slow.url},
            {"name": "fast", "address": "127.0.0.1:2", "metrics_url": fast.url},
        ])
        scraper = Scraper(cfg.backends, 0.02, timeout_s=2.0)
        task = asyncio.create_task(scraper.run())
        try:
            await eventually(lambda: fast.requests >= 5, timeout_s=5, what="five scrapes of the fast backend")
            assert slow.requests == 1  # still waiting on its first answer
            await eventually(lambda: scraper.metrics["slow"].error, what="slow backend's timeout")
            assert "no response within 2000 ms" in scraper.metrics["slow"].error
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await slow.stop()
            await fast.stop()

    asyncio.run(main())


def test_a_metrics_url_that_is_not_http_or_sends_too_much_is_an_error_not_a_crash() -> None:
    from control_support import ReadyServer

    from fastpath.control import http1client

    async def main() -> None:
        grpc_server = await ReadyServer().start()  # speaks HTTP/2 only
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
        big = await MetricsServer("x 1\n" * 100).start()
        try:
            client = Http1Client(f"http://{grpc_server.address}/metrics", timeout_s=1.0)
            with pytest.raises(HttpError):
                await client.get()
            port = silent.sockets[0].getsockname()[1]
            with pytest.raises(HttpError, match="no response within 200 ms"):
                await Http1Client(f"http://127.0.0.1:{port}/metrics", timeout_s=0.2).get()
            limit = http1client.MAX_BODY_BYTES
            http1client.MAX_BODY_BYTES = 100
            try:
                for mode in ("ok", "chunked"):
                    big.mode = mode
                    with pytest.raises(HttpError, match="limit"):
                        await Http1Client(big.url, timeout_s=1.0).get()
            finally:
                http1client.MAX_BODY_BYTES = limit
        finally:
            await grpc_server.stop()
            silent.close()
            await big.stop()

    asyncio.run(main())
