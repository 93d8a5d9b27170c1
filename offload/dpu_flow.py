"""The card's control plane, shaped like DOCA Flow: one pipe, entries added asynchronously.

A real BlueField takes flow-table changes through queues: `doca_flow_pipe_add_entry`
returns at once with the entry IN_PROCESS, the hardware inserts entries at a
bounded rate, and `doca_flow_entries_process` reports each completion (SUCCESS
or ERROR). Entries carry a non-shared counter and an aging time; idle entries
are reported by `doca_flow_aging_handle` and removed. This module models
exactly that over the emulated card's maps:

- `VipSteerPipe` describes the pipe (match template, actions, forward, monitor);
- `CardAgent` owns a bounded insertion queue drained by one thread at most
  `insert_rate` entries per second into the BPF flow table (finite:
  `nb_flows` entries, so the kernel's E2BIG is the card's "table full"),
  calls each entry's completion, ages idle entries and reaps idle connections.
"""
from __future__ import annotations

import collections
import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastpath.offload.dpu_card import CardInfo, CardMaps, ip_be, port_be
from fastpath.offload.libbpf import BpfError

log = logging.getLogger("fastpath.offload.dpu")

BPF_NOEXIST = 1
IN_PROCESS, SUCCESS, ERROR = "DOCA_FLOW_ENTRY_STATUS_IN_PROCESS", "DOCA_FLOW_ENTRY_STATUS_SUCCESS", "DOCA_FLOW_ENTRY_STATUS_ERROR"
AGED, REMOVED = "AGED", "REMOVED"  # ends after SUCCESS: aged out by the card, or removed by the driver


@dataclass
class PipeEntry:
    """One entry of the VIP steering pipe, from the decision to its end."""

    entry_id: int
    session: str
    client: str
    vip: str
    vip_port: int
    backend: str
    backend_port: int
    aging_s: float
    status: str = IN_PROCESS
    reason: str = ""
    decided_ns: int = field(default_factory=time.monotonic_ns)  # CLOCK_MONOTONIC, as bpf_ktime_get_ns
    inserted_ns: int = 0
    ended_ns: int = 0
    final_counters: dict[str, int] | None = None  # the card's counters when the entry left the table
    on_complete: Callable[[PipeEntry], None] | None = field(default=None, repr=False)
    on_end: Callable[[PipeEntry], None] | None = field(default=None, repr=False)

    @property
    def match_key(self) -> tuple[str, str, int]:
        return (self.client, self.vip, self.vip_port)

    @property
    def active(self) -> bool:
        return self.status in (IN_PROCESS, SUCCESS)

    def meta(self) -> dict:
        """What another process needs to describe this entry (the agent's status file)."""
        return {k: getattr(self, k) for k in ("entry_id", "session", "client", "vip", "vip_port", "backend",
                                               "backend_port", "aging_s", "status", "reason", "decided_ns",
                                               "inserted_ns", "ended_ns")}


@dataclass(frozen=True)
class VipSteerPipe:
    """The pipe's configuration (doca_flow_pipe_cfg): what every entry matches on and does."""

    name: str = "fastpath_vip_steer"
    nb_flows: int = 1024
    ingress_port: int = 0      # p0: clients
    fwd_port: int = 1          # p1: backends
    miss_port: int = 2         # pf0hpf: the host (the proxy)
    aging_s: float = 30.0


class CardAgent:
    """Bounded insertion queue, completions and aging of one card's flow table."""

    def __init__(self, info: CardInfo, maps: CardMaps, *, insert_rate: float = 5000.0, queue_depth: int = 256,
                 aging_s: float = 30.0, conn_idle_s: float = 120.0, tick_s: float = 0.05) -> None:
        if insert_rate <= 0 or queue_depth < 1:
            raise ValueError("insert_rate must be > 0 and queue_depth >= 1")
        self.info, self.maps = info, maps
        self.pipe = VipSteerPipe(nb_flows=info.max_rules, ingress_port=info.ports["p0"]["port_id"],
                                 fwd_port=info.ports["p1"]["port_id"], miss_port=info.ports["pf0hpf"]["port_id"],
                                 aging_s=aging_s)
        self.insert_rate, self.queue_depth = insert_rate, queue_depth
        self.conn_idle_s, self.tick_s = conn_idle_s, tick_s
        self.entries: dict[int, PipeEntry] = {}
        self.by_match: dict[tuple[str, str, int], PipeEntry] = {}
        self.queue: collections.deque[PipeEntry] = collections.deque()
        self.counts = collections.Counter[str]()
        self.insert_latency_ns: collections.deque[int] = collections.deque(maxlen=4096)
        self.reap_interval_s = min(1.0, conn_idle_s / 4)  # the connection table is walked at most this often
        self._next_reap = 0.0
        self._next_id = 1
        self._cv = threading.Condition()
        self._stop = False
        self._changed: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, name=f"dpu-agent-{info.name}", daemon=True)
        self._thread.start()

    # -- the API the driver uses ------------------------------------------------
    def add_entry(self, session: str, client: str, vip: str, vip_port: int, backend: str, backend_port: int,
                  on_complete: Callable[[PipeEntry], None] | None = None,
                  on_end: Callable[[PipeEntry], None] | None = None) -> PipeEntry:
        """Queues an entry (doca_flow_pipe_add_entry, non-blocking); its completion comes later.

        A full queue completes the entry with ERROR at once, as a card's queue does.
        """
        with self._cv:
            e = PipeEntry(self._next_id, session, client, vip, vip_port, backend, backend_port, self.pipe.aging_s,
                          on_complete=on_complete, on_end=on_end)
            self._next_id += 1
            self.counts["submitted"] += 1
            if len(self.queue) >= self.queue_depth:
                e.status, e.reason = ERROR, f"insertion queue full ({self.queue_depth} pending)"
                e.ended_ns = time.monotonic_ns()
                self.entries[e.entry_id] = e  # listed a while, like every ended entry
                self.counts["refused_queue_full"] += 1
            else:
                self.entries[e.entry_id] = e
                self.by_match[e.match_key] = e
                self.queue.append(e)
                self._cv.notify()
        if e.status == ERROR:
            self._complete(e)
        return e

    def rm_entry(self, entry_id: int, reason: str) -> bool:
        """Removes an entry from the table (its open connections run to their end); False if not active."""
        with self._cv:
            e = self.entries.get(entry_id)
            if e is None or not e.active:
                return False
            was_inserted = e.status == SUCCESS
            if not was_inserted:
                try:
                    self.queue.remove(e)
                except ValueError:
                    pass
            self._end(e, REMOVED, reason, delete=was_inserted)
        self._notify_end(e)
        return True

    def query(self, e: PipeEntry):
        """The entry's counters in the card (doca_flow_resource_query_entry), or None."""
        if e.status != SUCCESS:
            return None
        return self.maps.rules.lookup(self._match(e))

    def find(self, match_key: tuple[str, str, int]) -> PipeEntry | None:
        """The active entry with this match (client, VIP, VIP port), if any."""
        with self._cv:
            e = self.by_match.get(match_key)
            return e if e is not None and e.active else None

    def metas(self) -> list[dict]:
        with self._cv:
            return [e.meta() for e in self.entries.values()]

    def active_entries(self) -> list[PipeEntry]:
        with self._cv:
            return [e for e in self.entries.values() if e.active]

    def queue_len(self) -> int:
        with self._cv:
            return len(self.queue)

    def set_listener(self, fn: Callable[[], None]) -> None:
        self._changed = fn

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(5)

    # -- the card side ------------------------------------------------------------
    def _match(self, e: PipeEntry):
        L = self.maps.layout
        return L.structs["fp_dpu_match"](client_ip4=ip_be(e.client), vip_ip4=ip_be(e.vip), vip_port=port_be(e.vip_port))

    def _insert(self, e: PipeEntry) -> None:
        L = self.maps.layout
        rule = L.structs["fp_dpu_rule"](
            backend_ip4=ip_be(e.backend), backend_port=port_be(e.backend_port),
            egress_ifindex=self.info.ports["p1"]["ifindex"], reply_ifindex=self.info.ports["p0"]["ifindex"],
            entry_id=e.entry_id)
        try:
            self.maps.rules.update(self._match(e), rule, BPF_NOEXIST)
        except BpfError as err:
            e.status = ERROR
            if err.errno == errno.E2BIG:
                e.reason = f"flow table full ({self.pipe.nb_flows} entries)"
                self.counts["refused_table_full"] += 1
            elif err.errno == errno.EEXIST:
                e.reason = "an entry with this match is already in the table"
                self.counts["refused_exists"] += 1
            else:
                e.reason = f"insertion failed: {err}"
                self.counts["refused_other"] += 1
            return
        e.status, e.inserted_ns = SUCCESS, time.monotonic_ns()
        self.insert_latency_ns.append(e.inserted_ns - e.decided_ns)
        self.counts["inserted"] += 1

    def _end(self, e: PipeEntry, status: str, reason: str, delete: bool) -> None:
        if delete:
            key = self._match(e)
            e.final_counters = entry_counters(self.maps.rules.lookup(key))
            self.maps.rules.delete(key)
        e.status, e.reason, e.ended_ns = status, reason, time.monotonic_ns()
        self.counts[status.lower()] += 1
        if self.by_match.get(e.match_key) is e:
            del self.by_match[e.match_key]

    def _complete(self, e: PipeEntry) -> None:
        if e.on_complete is not None:
            try:
                e.on_complete(e)
            except Exception:
                log.exception("completion of entry %d failed", e.entry_id)
        self._changed()

    def _notify_end(self, e: PipeEntry) -> None:
        if e.on_end is not None:
            try:
                e.on_end(e)
            except Exception:
                log.exception("end callback of entry %d failed", e.entry_id)
        self._changed()

    def _run(self) -> None:
        interval = 1.0 / self.insert_rate
        next_slot = time.monotonic()
        next_age = time.monotonic() + self.tick_s
        while True:
            with self._cv:
                while not self._stop and not self.queue and time.monotonic() < next_age:
                    self._cv.wait(max(0.0, next_age - time.monotonic()))
                if self._stop:
                    return
                now = time.monotonic()
                done: PipeEntry | None = None
                if self.queue and now >= next_slot:
                    done = self.queue.popleft()
                    self._insert(done)
                    if done.status == ERROR:
                        done.ended_ns = time.monotonic_ns()
                        if self.by_match.get(done.match_key) is done:
                            del self.by_match[done.match_key]
                    next_slot = max(next_slot + interval, now - interval)  # a bounded burst of one
            if done is not None:
                self._complete(done)
            elif self.queue:
                time.sleep(max(0.0, min(next_slot, next_age) - time.monotonic()))
            if time.monotonic() >= next_age:
                self._age()
                next_age = time.monotonic() + self.tick_s

    def _age(self) -> None:
        """Removes entries idle for longer than their aging time, and connections idle past conn_idle_s."""
        now_ns = time.monotonic_ns()
        aged: list[PipeEntry] = []
        with self._cv:
            for e in list(self.entries.values()):
                if e.status != SUCCESS:
                    if not e.active and now_ns - e.ended_ns > 60e9:
                        del self.entries[e.entry_id]  # keep ended entries a minute for `dpu rules`
                    continue
                v = self.maps.rules.lookup(self._match(e))
                last = max(int(v.last_ns), e.inserted_ns) if v is not None else e.inserted_ns
                if now_ns - last > e.aging_s * 1e9:
                    self._end(e, AGED, f"idle for more than {e.aging_s:g} s", delete=True)
                    aged.append(e)
        for e in aged:
            self._notify_end(e)
        if time.monotonic() < self._next_reap:
            return
        self._next_reap = time.monotonic() + self.reap_interval_s
        idle_ns = self.conn_idle_s * 1e9
        try:
            for k, v in self.maps.conns.items():
                if now_ns - int(v.last_ns) > idle_ns:
                    self.maps.conns.delete(k)
                    self.counts["conns_reaped"] += 1
        except BpfError as err:  # the card went away under us: the driver reports it
            log.debug("connection reaping failed: %s", err)


def percentile(values: list[int] | collections.deque[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))])


def entry_counters(v) -> dict[str, int]:
    """A fp_dpu_rule value's counters as plain numbers."""
    if v is None:
        return {"bytes_to_backend": 0, "bytes_to_client": 0, "packets_to_backend": 0, "packets_to_client": 0,
                "conns": 0, "first_ns": 0, "last_ns": 0}
    return {"bytes_to_backend": int(v.bytes[0]), "bytes_to_client": int(v.bytes[1]),
            "packets_to_backend": int(v.packets[0]), "packets_to_client": int(v.packets[1]),
            "conns": int(v.conns), "first_ns": int(v.first_ns), "last_ns": int(v.last_ns)}

