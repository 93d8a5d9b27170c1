"""The emulated BlueField: namespaces, ports and the card's flow-table datapath.

Layout (every name carries a per-card prefix, so concurrent cards never meet):

    <p>-cli  (clients, 10.77.0.x) --- p0 ---+
                                            |  <p>-card: tc cls_bpf on p0/p1 ingress
    <p>-net  (backends, 10.77.2.x) -- p1 ---+  (dpu_steer.bpf.o), kernel routing
                                            |  for everything the flow table misses
    <p>-host (the proxy, VIP 10.77.1.2) - pf0hpf

p0 and p1 stand for the card's two network ports, pf0hpf for the host
representor. Without a rule the card routes packets normally, so clients reach
the proxy on the VIP and the proxy reaches the backends through the card. A
rule (pipe entry) makes the card switch a client's new connections to the
VIP straight to a backend and back, and the host never sees them.

The card's maps are pinned under /sys/fs/bpf/fastpath-dpu-<p>/ and described
in <state dir>/<p>.json, so the controller's driver and `fastpath dpu status`
in other processes open the same card. `destroy()` removes namespaces, pins
and descriptor; it is idempotent and safe after a half-built create().
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastpath.offload import dpu_netns as netns
from fastpath.offload import libbpf
from fastpath.offload.libbpf import Map
from fastpath.offload.maps import Layout, bpf_dir, load_layout

OBJECT_NAME = "dpu_steer.bpf.o"
PIN_PREFIX = "fastpath-dpu-"
CLIENT_NET, HOST_NET, BACKEND_NET = "10.77.0", "10.77.1", "10.77.2"
VIP = f"{HOST_NET}.2"
PORTS = ("p0", "p1", "pf0hpf")  # DOCA port ids 0, 1, 2


def object_path() -> Path:
    """The card's datapath object, found through the same bpf/ locator as the splice."""
    return bpf_dir() / "build" / OBJECT_NAME


def state_dir() -> Path:
    """Where card descriptors live: $FASTPATH_DPU_DIR, else /run/fastpath/dpu."""
    return Path(os.environ.get("FASTPATH_DPU_DIR", "/run/fastpath/dpu"))


def ip_be(addr: str) -> int:
    """Dotted IPv4 -> the __u32 a BPF program reads from the header (network order in memory)."""
    import socket

    return int.from_bytes(socket.inet_aton(addr), "little")


def ip_str(value: int) -> str:
    import socket

    return socket.inet_ntoa(int(value).to_bytes(4, "little"))


def port_be(port: int) -> int:
    return int.from_bytes(int(port).to_bytes(2, "big"), "little")


def port_host(value: int) -> int:
    return int.from_bytes(int(value).to_bytes(2, "little"), "big")


@dataclass
class CardMaps:
    """The card's flow table, connection table and failure counters, typed from the headers."""

    rules: Map
    conns: Map
    errors: Map
    layout: Layout

    @classmethod
    def from_fds(cls, fds: dict[str, int], owned: bool) -> CardMaps:
        L = load_layout()
        s = L.structs
        return cls(
            Map(fds[L.str("FP_DPU_MAP_RULES")], L.str("FP_DPU_MAP_RULES"), s["fp_dpu_match"], s["fp_dpu_rule"], owns_fd=owned),
            Map(fds[L.str("FP_DPU_MAP_CONNS")], L.str("FP_DPU_MAP_CONNS"), s["fp_dpu_tuple"], s["fp_dpu_conn"], owns_fd=owned),
            Map(fds[L.str("FP_DPU_MAP_ERRORS")], L.str("FP_DPU_MAP_ERRORS"), ctypes.c_uint32, ctypes.c_uint64, owns_fd=owned),
            L,
        )

    def all(self) -> list[Map]:
        return [self.rules, self.conns, self.errors]

    def error_counts(self) -> dict[str, int]:
        """Failure class name (FP_DPU_ERR_ without prefix, lower case) -> count."""
        out = {}
        for name, idx in sorted(self.layout.prefixed("FP_DPU_ERR_").items(), key=lambda kv: kv[1]):
            if name == "FP_DPU_ERR_COUNT":
                continue
            v = self.errors.lookup(ctypes.c_uint32(idx))
            out[name.removeprefix("FP_DPU_ERR_").lower()] = int(v.value) if v is not None else 0
        return out

    def close(self) -> None:
        for m in self.all():
            m.close()


@dataclass
class CardInfo:
    """What a card descriptor says: enough for another process to drive the card."""

    name: str
    namespaces: dict[str, str]
    ports: dict[str, dict[str, Any]]
    vip: str
    pin_dir: str
    max_rules: int
    max_conns: int
    prog_ids: list[int] = field(default_factory=list)
    map_ids: list[int] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    created_unix: float = 0.0
    owner_pid: int = 0

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.name}.json"

    def save(self) -> None:
        state_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> CardInfo:
        return cls(**json.loads(path.read_text()))

    def open_maps(self) -> CardMaps:
        """Opens the card's maps (root); the caller closes them.

        Through the pins when this mount namespace sees them, else by map id:
        `ip netns exec` mounts a fresh /sys, so a proxy or controller started
        that way sees no /sys/fs/bpf, but ids are global. A map found by id is
        checked by name, so a reused id is never taken for the card's map.
        """
        L = load_layout()
        names = [L.str(k) for k in ("FP_DPU_MAP_RULES", "FP_DPU_MAP_CONNS", "FP_DPU_MAP_ERRORS")]
        fds: dict[str, int] = {}
        try:
            for n, map_id in zip(names, self.map_ids):
                pin = Path(self.pin_dir) / n
                if pin.exists():
                    fds[n] = libbpf.get_pinned(pin)
                    continue
                fd = libbpf.lib().bpf_map_get_fd_by_id(map_id)
                if fd < 0:
                    raise LookupError(f"card {self.name}: map {n} (id {map_id}) is gone; is the card still up? "
                                      "(`fastpath dpu status`)")
                fds[n] = fd
                if libbpf.map_info(fd).name != n:
                    raise LookupError(f"card {self.name}: map id {map_id} is no longer {n}: the card was removed")
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return CardMaps.from_fds(fds, owned=True)


def all_descriptors() -> list[CardInfo]:
    """Every card descriptor in the state dir, live or left behind by a process that died."""
    out = []
    d = state_dir()
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        if p.name.endswith(".agent.json"):
            continue
        try:
            out.append(CardInfo.load(p))
        except (OSError, ValueError, TypeError):
            continue
    return out


def owner_alive(info: CardInfo) -> bool:
    return info.owner_pid > 0 and Path(f"/proc/{info.owner_pid}").exists()


def remove_described(info: CardInfo) -> list[str]:
    """Removes what a descriptor names (namespaces, pins, the descriptor itself); returns what went.

    Only objects carrying the card's own name are touched, so a damaged
    descriptor cannot make this remove anything else.
    """
    removed = []
    for ns in info.namespaces.values():
        if ns.startswith(info.name + "-") and netns.exists(ns):
            netns.delete(ns)
            removed.append(f"netns {ns}")
    pin_dir = Path(info.pin_dir)
    if pin_dir.parent == libbpf.BPF_FS_ROOT and pin_dir.name == f"{PIN_PREFIX}{info.name}" and pin_dir.is_dir():
        for p in pin_dir.iterdir():
            p.unlink(missing_ok=True)
        shutil.rmtree(pin_dir, ignore_errors=True)
        removed.append(f"pins {pin_dir}")
    for p in (info.path, state_dir() / f"{info.name}.agent.json"):
        if p.exists():
            p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def find_cards() -> list[CardInfo]:
    """Every card described in the state dir whose card namespace still exists."""
    return [c for c in all_descriptors() if netns.exists(c.namespaces.get("card", ""))]


def find_card(name: str | None = None) -> CardInfo:
    """The card called `name`, or the only card there is; raises with what to do otherwise."""
    env = name or os.environ.get("FASTPATH_DPU_CARD")
    cards = find_cards()
    if env:
        for c in cards:
            if c.name == env:
                return c
        raise LookupError(f"no emulated card {env!r} in {state_dir()} (cards there: {', '.join(c.name for c in cards) or 'none'})")
    if len(cards) == 1:
        return cards[0]
    if not cards:
        raise LookupError(f"no emulated card in {state_dir()}: create one (fastpath demo --offload dpu does) "
                          "or set FASTPATH_DPU_DIR to where it was created")
    raise LookupError(f"{len(cards)} emulated cards in {state_dir()}: pick one with FASTPATH_DPU_CARD "
                      f"({', '.join(c.name for c in cards)})")


class EmulatedCard:
    """Builds (create) and removes (destroy) one emulated card and its neighbourhood."""

    def __init__(self, max_rules: int | None = None, max_conns: int | None = None, prefix: str | None = None,
                 clients: int = 1, backends: int = 1) -> None:
        L = load_layout()
        self.max_rules = max_rules or L.int("FP_DPU_MAX_RULES")
        self.max_conns = max_conns or L.int("FP_DPU_MAX_CONNS")
        if self.max_rules < 1 or self.max_conns < 2:
            raise ValueError("a card needs room for at least one rule and one connection (two entries)")
        self.name = prefix or f"fpd{uuid.uuid4().hex[:8]}"
        self.ns = {k: f"{self.name}-{k}" for k in ("cli", "card", "host", "net")}
        self.n_clients, self.n_backends = clients, backends
        self.info: CardInfo | None = None
        self.maps: CardMaps | None = None
        self._obj: libbpf.BpfObject | None = None
        self._created: list[str] = []

    # -- addresses ---------------------------------------------------------
    @property
    def vip(self) -> str:
        return VIP

    def client_addr(self, i: int = 0) -> str:
        return f"{CLIENT_NET}.{2 + i}"

    def backend_addr(self, i: int = 0) -> str:
        return f"{BACKEND_NET}.{2 + i}"

    # -- lifecycle ---------------------------------------------------------
    def create(self) -> EmulatedCard:
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        ns = self.ns
        for k in ("cli", "card", "host", "net"):
            netns.create(ns[k])
            self._created.append(ns[k])
        netns.veth(ns["cli"], "eth0", ns["card"], "p0")
        netns.veth(ns["net"], "eth0", ns["card"], "p1")
        netns.veth(ns["host"], "eth0", ns["card"], "pf0hpf")
        netns.addr(ns["card"], "p0", f"{CLIENT_NET}.1/24")
        netns.addr(ns["card"], "p1", f"{BACKEND_NET}.1/24")
        netns.addr(ns["card"], "pf0hpf", f"{HOST_NET}.1/24")
        netns.addr(ns["host"], "eth0", f"{VIP}/24")
        for i in range(self.n_clients):
            netns.addr(ns["cli"], "eth0", f"{self.client_addr(i)}/24")
        for i in range(self.n_backends):
            netns.addr(ns["net"], "eth0", f"{self.backend_addr(i)}/24")
        netns.ip("-n", ns["cli"], "route", "add", "default", "via", f"{CLIENT_NET}.1")
        netns.ip("-n", ns["net"], "route", "add", "default", "via", f"{BACKEND_NET}.1")
        netns.ip("-n", ns["host"], "route", "add", "default", "via", f"{HOST_NET}.1")
        netns.sysctl(ns["card"], "net.ipv4.ip_forward", "1")

        L = load_layout()
        rules, conns, errors = (L.str(k) for k in ("FP_DPU_MAP_RULES", "FP_DPU_MAP_CONNS", "FP_DPU_MAP_ERRORS"))
        self._obj = libbpf.BpfObject(object_path(), {rules: self.max_rules, conns: self.max_conns})
        fds = {n: self._obj.map_fd(n) for n in (rules, conns, errors)}
        self.maps = CardMaps.from_fds(fds, owned=False)
        prog_ids = [
            netns.tc_attach_ingress(ns["card"], "p0", self._obj.prog_fd(L.str("FP_DPU_PROG_UPLINK"))),
            netns.tc_attach_ingress(ns["card"], "p1", self._obj.prog_fd(L.str("FP_DPU_PROG_NETWORK"))),
        ]
        pin_dir = libbpf.BPF_FS_ROOT / f"{PIN_PREFIX}{self.name}"
        libbpf.ensure_bpffs(libbpf.BPF_FS_ROOT)
        pin_dir.mkdir(mode=0o700)
        for n, fd in fds.items():
            libbpf.pin(fd, pin_dir / n)
        ports = {p: {"port_id": i, "ifindex": netns.ifindex(ns["card"], p)} for i, p in enumerate(PORTS)}
        ports["p0"]["faces"], ports["p1"]["faces"], ports["pf0hpf"]["faces"] = "clients", "backends", "host"
        self.info = CardInfo(
            name=self.name, namespaces=dict(ns), ports=ports, vip=VIP, pin_dir=str(pin_dir),
            max_rules=self.max_rules, max_conns=self.max_conns, prog_ids=prog_ids,
            map_ids=[m.info().id for m in self.maps.all()],
            clients=[self.client_addr(i) for i in range(self.n_clients)],
            backends=[self.backend_addr(i) for i in range(self.n_backends)],
            created_unix=time.time(), owner_pid=os.getpid(),
        )
        self.info.save()

    def destroy(self) -> None:
        """Removes everything create() made (namespaces, pins, descriptor); idempotent."""
        if self.maps is not None:
            self.maps.close()
            self.maps = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        for n in reversed(self._created):
            netns.delete(n)
        self._created.clear()
        pin_dir = libbpf.BPF_FS_ROOT / f"{PIN_PREFIX}{self.name}"
        if pin_dir.is_dir():
            for p in pin_dir.iterdir():
                p.unlink(missing_ok=True)
            shutil.rmtree(pin_dir, ignore_errors=True)
        (state_dir() / f"{self.name}.json").unlink(missing_ok=True)

    def __enter__(self) -> EmulatedCard:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- helpers for callers -------------------------------------------------
    def exec_argv(self, side: str, argv: list[str]) -> list[str]:
        """argv run inside one of the card's namespaces (cli, host, net)."""
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def socket(self, side: str):
        return netns.socket_in(self.ns[side])
