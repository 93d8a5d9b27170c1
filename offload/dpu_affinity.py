"""The controller's side of DPU steering: learned session affinity in, card rules out.

A proxy reports each pinned session with its client's address and backend;
once the controller has also seen a successful call of that session on that
backend (the session's affinity is learned), the client's next connections to
the VIP can skip the proxy: `learned()` asks the driver for a card rule. A
backend turning unhealthy removes its rules (`health_changed`), a policy
change removes them all (`policy_changed`: affinity is learned again), and
the card's aging removes idle ones. `flow_messages()` lists the card's flows
for `fastpath flows` (path `dpu`, the card's byte counters).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from fastpath.config import Config, split_hostport

log = logging.getLogger("fastpath.offload.dpu")


class AffinitySteering:
    """Wraps a steering driver that can steer addresses (the dpu driver) for the controller."""

    retry_s = 10.0  # a session whose rule the card refused is not asked for again before this

    def __init__(self, config: Config, driver: Any) -> None:
        self.config, self.driver = config, driver
        _, port = split_hostport(config.proxy.listen, "proxy.listen")
        self.vip = (driver.card.vip, int(port))
        self.backends = {b.name: b for b in config.backends}
        self.steered: dict[str, tuple[str, str]] = {}  # session -> (client ip, backend name)
        self.retry_at: dict[str, float] = {}  # session -> when a refused rule may be asked for again

    @classmethod
    def open(cls, config: Config) -> AffinitySteering | None:
        """The steering for config's driver, or None (driver not dpu, or the card is unavailable: logged)."""
        if config.offload_driver != "dpu":
            return None
        from fastpath.offload.drivers import open_driver

        driver = open_driver(config)
        if getattr(driver, "name", "none") != "dpu":
            return None  # open_driver logged why; sessions stay on the proxy
        return cls(config, driver)

    def learned(self, sessions: dict[str, str], flows: Any) -> int:
        """Installs rules for reported pinned sessions whose affinity is known; returns how many were asked."""
        asked = 0
        for f in flows:
            client, backend = f.client, f.backend
            if not f.session or not client or sessions.get(f.session) != backend or backend not in self.backends:
                continue
            client_ip = client.rsplit(":", 1)[0]
            if self.steered.get(f.session) == (client_ip, backend) or self.retry_at.get(f.session, 0.0) > time.monotonic():
                continue
            host, port = split_hostport(self.backends[backend].address, f"backend {backend}")
            self.steered[f.session] = (client_ip, backend)
            inst = self.driver.steer(f.session, client_ip, self.vip, (host, int(port)))
            inst.add_done_callback(lambda i, s=f.session, k=(client_ip, backend): self._ended(s, k, i))
            log.info("session %s: affinity %s learned; card rule for %s -> %s requested", f.session, backend, client_ip,
                     self.backends[backend].address)
            asked += 1
        return asked

    def _ended(self, session: str, key: tuple[str, str], installed: Any) -> None:
        """A rule ended or was refused: the session may be steered again (a refused one after a pause)."""
        if self.steered.get(session) == key:
            del self.steered[session]
        if installed.end_reason.startswith("card refused"):
            self.retry_at[session] = time.monotonic() + self.retry_s
            if len(self.retry_at) > 10_000:
                now = time.monotonic()
                self.retry_at = {s: t for s, t in self.retry_at.items() if t > now}

    def health_changed(self, name: str, healthy: bool) -> None:
        if healthy or name not in self.backends:
            return
        host, port = split_hostport(self.backends[name].address, f"backend {name}")
        n = self.driver.backend_gone((host, int(port)), f"backend {name} unhealthy")
        if n:
            log.info("backend %s unhealthy: %d card rules removed; their clients go through the proxy", name, n)

    def policy_changed(self, name: str) -> None:
        n = self.driver.clear(f"policy {name} changed")
        if n:
            log.info("policy %s changed: %d card rules removed (affinity is learned again)", name, n)

    def flow_messages(self) -> list[Any]:
        """The card's flows as control-API Flow messages, path `dpu`, with the card's counters."""
        from fastpath.gen import control_pb2

        names = {}
        for b in self.backends.values():
            host, port = split_hostport(b.address, b.name)
            names[(host, int(port))] = b.name
        now = time.monotonic()
        return [control_pb2.Flow(session=f.session, client=f"{f.client[0]}:*", backend=names.get(f.backend, f"{f.backend[0]}:{f.backend[1]}"),
                                 path="dpu", bytes_python=0, bytes_offload=f.stats.offload_bytes,
                                 age_s=max(0.0, now - f.started), proxy_id="dpu:" + self.driver.card.name)
                for f in self.driver.list()]

    def close(self) -> None:
        self.driver.close()
