"""The `dpu` offload driver: the controller's session affinity becomes a card flow rule.

A card cannot move an established TCP connection between sockets, so the
driver works one step earlier than the kernel splice: once the controller
knows which backend a client's session lives on, `steer()` adds a pipe entry
(client IPv4, VIP, VIP port -> backend) and the card switches that client's
*next* connections to the VIP straight to the backend; the proxy never sees
them. Connections already on the proxy stay there (the datapath only opens
card connections on a SYN), so a refused, full, aged or removed entry just
means new connections take the proxy path again.

In a proxy process the driver is passive: `install()` leaves the connection on
the relay and says why. The controller process owns the card's agent
(insertion queue, completions, aging) and writes its state next to the card
descriptor, so `fastpath dpu status|rules` read it from any process.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from fastpath.offload.dpu_card import CardInfo, CardMaps, find_card, state_dir
from fastpath.offload.dpu_doca import document
from fastpath.offload.dpu_flow import ERROR, SUCCESS, CardAgent, PipeEntry, VipSteerPipe, entry_counters, percentile
from fastpath.offload.none import NoneDriver
from fastpath.offload.steering import Addr, Flow, FlowStats, Installed, SteeringTable

log = logging.getLogger("fastpath.offload.dpu")

PASSIVE_REASON = ("the card steers this client's next connections once the controller installs its rule; "
                  "an established connection stays on the relay")


def agent_state_path(card: str):
    return state_dir() / f"{card}.agent.json"


class DpuDriver(SteeringTable):
    """Steering rules in an (emulated) BlueField's flow table."""

    name = "dpu"
    path = "dpu"

    def __init__(self, card: CardInfo | str | None = None, *, insert_rate: float = 5000.0, queue_depth: int = 256,
                 aging_s: float = 30.0, conn_idle_s: float = 120.0, tick_s: float = 0.05) -> None:
        self.card = card if isinstance(card, CardInfo) else find_card(card)
        self.maps: CardMaps = self.card.open_maps()
        self._agent_args = dict(insert_rate=insert_rate, queue_depth=queue_depth, aging_s=aging_s,
                                conn_idle_s=conn_idle_s, tick_s=tick_s)
        self.agent: CardAgent | None = None
        self._lock = threading.Lock()
        self._installed: dict[int, Installed] = {}
        self._passive = NoneDriver(PASSIVE_REASON)  # proxy-side connections: listed, never moved
        self._last_write = 0.0
        self._closed = False

    # -- the agent (started by the first steer: proxies never start one) -------
    def _ensure_agent(self) -> CardAgent:
        with self._lock:
            if self.agent is None:
                self.agent = CardAgent(self.card, self.maps, **self._agent_args)
                self.agent.set_listener(self._write_state)
            return self.agent

    # -- the controller's side -----------------------------------------------------
    def steer(self, session: str, client_ip: str, vip: Addr, backend: Addr) -> Installed:
        """Installs (asynchronously) a rule steering `client_ip`'s next connections to `vip` to `backend`.

        Returns at once with path "dpu" while the entry is in process; the
        handle ends (path back to "python", with the reason) when the card
        refuses the entry, or later when it ages out or is removed.
        """
        agent = self._ensure_agent()
        old = agent.find((client_ip, vip[0], int(vip[1])))
        if old is not None:
            if (old.backend, old.backend_port) == (backend[0], int(backend[1])):
                return self._installed.get(old.entry_id) or Installed(session, "dpu")
            agent.rm_entry(old.entry_id, f"session {session} moved to {backend[0]}:{backend[1]}")
        installed = Installed(session, "dpu", "entry in process")

        def completed(e: PipeEntry) -> None:
            if e.status == ERROR:
                installed.path, installed.reason = "python", f"card refused the rule: {e.reason}"
                log.warning("session %s: %s; new connections of %s stay on the proxy", session, installed.reason, client_ip)
                installed.finish(FlowStats(), installed.reason)
                self._installed.pop(e.entry_id, None)
            else:
                installed.reason = ""

        def ended(e: PipeEntry) -> None:
            stats = self._stats(e.final_counters or entry_counters(None))
            installed.path, installed.reason = "python", e.reason
            log.info("session %s: card rule %d ended (%s): new connections go to the proxy", session, e.entry_id, e.reason)
            installed.finish(stats, e.reason)
            self._installed.pop(e.entry_id, None)

        e = agent.add_entry(session, client_ip, vip[0], int(vip[1]), backend[0], int(backend[1]), completed, ended)
        if e.status != ERROR:
            self._installed[e.entry_id] = installed
        return installed

    def backend_gone(self, backend: Addr, why: str = "backend failed") -> int:
        """Removes every entry steering to `backend`; returns how many."""
        if self.agent is None:
            return 0
        n = 0
        for e in self.agent.active_entries():
            if (e.backend, e.backend_port) == (backend[0], int(backend[1])):
                n += self.agent.rm_entry(e.entry_id, f"{why}: {backend[0]}:{backend[1]}")
        return n

    def clear(self, why: str) -> int:
        """Removes every entry (a policy change: affinity is learned again)."""
        if self.agent is None:
            return 0
        return sum(self.agent.rm_entry(e.entry_id, why) for e in self.agent.active_entries())

    def entry(self, session: str) -> PipeEntry | None:
        if self.agent is None:
            return None
        return next((e for e in self.agent.active_entries() if e.session == session), None)

    # -- SteeringTable ---------------------------------------------------------------
    def install(self, session: str, client_sock: socket.socket, backend_sock: socket.socket) -> Installed:
        """An established connection stays on the relay; it is recorded so it is listed."""
        return self._passive.install(session, client_sock, backend_sock)

    def remove(self, session: str) -> bool:
        passive = self._passive.remove(session)
        e = self.entry(session)
        if e is not None and self.agent is not None:
            return self.agent.rm_entry(e.entry_id, "removed by the controller (policy)")
        return passive

    def _stats(self, c: dict[str, int]) -> FlowStats:
        return FlowStats(bytes_to_backend=c["bytes_to_backend"], bytes_to_client=c["bytes_to_client"],
                         packets_to_backend=c["packets_to_backend"], packets_to_client=c["packets_to_client"])

    def list(self) -> list[Flow]:
        """Card-switched flows: one per inserted entry, with the card's counters."""
        out: list[Flow] = []
        if self.agent is None:
            return out
        mono_now, ns_now = time.monotonic(), time.monotonic_ns()
        for e in self.agent.active_entries():
            if e.status != SUCCESS:
                continue
            v = self.agent.query(e)
            started = mono_now - (ns_now - e.inserted_ns) / 1e9
            out.append(Flow(e.session, (e.client, 0), (e.backend, e.backend_port), "dpu",
                            self._stats(entry_counters(v)), started))
        return out

    def errors(self) -> dict[str, int]:
        out = dict(self.maps.error_counts())
        if self.agent is not None:
            for k, v in self.agent.counts.items():
                if k.startswith("refused_"):
                    out[k] = v
        return out

    def doca(self) -> dict[str, Any]:
        """The installed rules as DOCA Flow pipes and entries."""
        if self.agent is None:  # nothing steered from here: the card's table alone
            pipe = VipSteerPipe(nb_flows=self.card.max_rules, ingress_port=self.card.ports["p0"]["port_id"],
                                fwd_port=self.card.ports["p1"]["port_id"], miss_port=self.card.ports["pf0hpf"]["port_id"],
                                aging_s=float(self._agent_args["aging_s"]))
            return document(self.card, self.maps, [], pipe)
        return document(self.card, self.maps, self.agent.metas(), self.agent.pipe)

    def status(self) -> dict[str, Any]:
        """The agent's side of `fastpath dpu status`."""
        a = self.agent
        if a is None:
            return {"agent": False}
        with a._cv:
            entries = [e.meta() for e in a.entries.values()]
            lat = list(a.insert_latency_ns)
            return {
                "agent": True, "pid": os.getpid(), "updated_unix": time.time(),
                "pipe": {"name": a.pipe.name, "nb_flows": a.pipe.nb_flows, "aging_s": a.pipe.aging_s},
                "insert_rate": a.insert_rate, "queue_depth": a.queue_depth, "queue_len": len(a.queue),
                "counts": dict(a.counts),
                "insert_latency_us": {"p50": percentile(lat, 0.5) / 1e3, "p99": percentile(lat, 0.99) / 1e3, "n": len(lat)},
                "entries": entries,
            }

    def _write_state(self) -> None:
        """Publishes the agent's state for other processes (at most 20 times a second)."""
        now = time.monotonic()
        if self._closed or now - self._last_write < 0.05:
            return
        self._last_write = now
        try:
            p = agent_state_path(self.card.name)
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status()))
            tmp.replace(p)
        except OSError as e:
            log.debug("cannot write the agent state: %s", e)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.agent is not None:
            self.clear("driver closed")
            self.agent.stop()
        agent_state_path(self.card.name).unlink(missing_ok=True)
        self.maps.close()


def open_driver(config: Any = None, **kwargs: Any) -> DpuDriver:
    """The driver on the card named by kwargs['card'] / $FASTPATH_DPU_CARD, or the only card there is."""
    from fastpath.offload.drivers import missing_privileges

    missing = missing_privileges()
    if missing:
        raise PermissionError(f"this process lacks {missing}; the card's maps need root or CAP_BPF")
    return DpuDriver(kwargs.pop("card", None), **kwargs)
