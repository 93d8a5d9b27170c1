"""Loading, pinning and unloading fastpath's splice programs and maps.

Two ways to get the maps: load bpf/build/sockmap_splice.bpf.o privately (the
objects live as long as the process holds them; tests and single proxies do
this), or open what `fastpath bpf load` pinned under /sys/fs/bpf/fastpath, so
several proxy workers and the controller share one set of maps.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from fastpath.offload import libbpf
from fastpath.offload.libbpf import BpfError, Map, ObjInfo
from fastpath.offload.bpf_files import bpf_object
from fastpath.offload.maps import Layout, load_layout

OBJECT_NAME = "sockmap_splice.bpf.o"


def object_path() -> Path:
    return bpf_object(OBJECT_NAME)


def default_pin_dir() -> Path:
    return Path(load_layout().str("FP_PIN_DIR"))


MAP_CONSTS = ("FP_MAP_SOCKS", "FP_MAP_TARGETS", "FP_MAP_PEERS", "FP_MAP_FLOWS", "FP_MAP_ERRORS")


def map_names(layout: Layout) -> list[str]:
    return [layout.str(k) for k in MAP_CONSTS]


def pin_names(layout: Layout) -> list[str]:
    """Every file `fastpath bpf load` pins, maps first."""
    return map_names(layout) + [layout.str("FP_PROG_SPLICE")]


@dataclass
class SpliceMaps:
    """The splice program's maps, typed from fastpath_maps.h."""

    socks: Map
    targets: Map
    peers: Map
    flows: Map
    errors: Map
    prog_fd: int
    layout: Layout
    pin_dir: Path | None = None
    obj: libbpf.BpfObject | None = None
    _prog_fd_owned: bool = False

    def close(self) -> None:
        for m in self.all_maps():
            m.close()
        if self._prog_fd_owned and self.prog_fd >= 0:
            os.close(self.prog_fd)
        self.prog_fd = -1
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def all_maps(self) -> list[Map]:
        return [self.socks, self.targets, self.peers, self.flows, self.errors]

    def infos(self) -> list[ObjInfo]:
        return [m.info() for m in self.all_maps()] + [libbpf.prog_info(self.prog_fd)]


def _typed_maps(layout: Layout, fds: dict[str, int], owned: bool) -> dict[str, Map]:
    u64, u32 = ctypes.c_uint64, ctypes.c_uint32
    types = {
        "FP_MAP_SOCKS": (u64, u64),
        "FP_MAP_TARGETS": (u64, u64),
        "FP_MAP_PEERS": (u64, layout.structs["fp_peer"]),
        "FP_MAP_FLOWS": (u64, layout.structs["fp_flow_stats"]),
        "FP_MAP_ERRORS": (u32, u64),
    }
    out = {}
    for const, (kt, vt) in types.items():
        name = layout.str(const)
        out[const] = Map(fds[name], name, kt, vt, owns_fd=owned)
    return out


def _check_layout(maps: dict[str, Map], where: str) -> None:
    """Refuses maps whose key/value sizes differ from fastpath_maps.h (a stale build or pin)."""
    for m in maps.values():
        info = m.info()
        want = (ctypes.sizeof(m.key_type), ctypes.sizeof(m.value_type))
        if (info.key_size, info.value_size) != want:
            raise BpfError(
                f"map {m.name} in {where} has key/value sizes {info.key_size}/{info.value_size}, "
                f"fastpath_maps.h says {want[0]}/{want[1]}",
                errno.EINVAL,
                hint="it was built from another version: run `fastpath bpf unload`, `make bpf`, `fastpath bpf load`",
            )


def load_private(max_flows: int | None = None, obj_path: Path | None = None) -> SpliceMaps:
    """Loads the object into this process and attaches the verdict to the SOCKHASH.

    max_flows overrides FP_MAX_FLOWS (and sizes the socket maps at twice that).
    """
    layout = load_layout()
    sizes = None
    if max_flows is not None:
        if max_flows < 1:
            raise ValueError(f"max_flows={max_flows}: must be at least 1")
        sizes = {
            layout.str("FP_MAP_FLOWS"): max_flows,
            layout.str("FP_MAP_PEERS"): 2 * max_flows,
            layout.str("FP_MAP_SOCKS"): 2 * max_flows,
            layout.str("FP_MAP_TARGETS"): 2 * max_flows,
        }
    obj = libbpf.BpfObject(obj_path or object_path(), sizes)
    try:
        fds = {name: obj.map_fd(name) for name in map_names(layout)}
        maps = _typed_maps(layout, fds, owned=False)
        _check_layout(maps, str(obj.path))
        prog_fd = obj.prog_fd(layout.str("FP_PROG_SPLICE"))
        libbpf.prog_attach(prog_fd, maps["FP_MAP_SOCKS"].fd, libbpf.BPF_SK_SKB_STREAM_VERDICT)
    except BaseException:
        obj.close()
        raise
    return SpliceMaps(*(maps[c] for c in MAP_CONSTS), prog_fd, layout, obj=obj)


def is_pinned(pin_dir: Path) -> bool:
    layout = load_layout()
    return (pin_dir / layout.str("FP_MAP_SOCKS")).exists()


def open_pinned(pin_dir: Path) -> SpliceMaps:
    """Opens the maps and program `fastpath bpf load` pinned in pin_dir."""
    layout = load_layout()
    fds: dict[str, int] = {}
    try:
        for name in pin_names(layout):
            fds[name] = libbpf.get_pinned(pin_dir / name)
        maps = _typed_maps(layout, fds, owned=True)
        _check_layout(maps, str(pin_dir))
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return SpliceMaps(*(maps[c] for c in MAP_CONSTS), fds[layout.str("FP_PROG_SPLICE")], layout, pin_dir=pin_dir,
                      _prog_fd_owned=True)


def load_and_pin(pin_dir: Path, max_flows: int | None = None) -> list[ObjInfo]:
    """Loads the object, attaches it and pins every map and the program (root-only, 0600)."""
    if is_pinned(pin_dir):
        raise BpfError(f"pinning in {pin_dir}", errno.EEXIST, hint="already loaded: `fastpath bpf unload` first to reload")
    libbpf.ensure_bpffs(libbpf.BPF_FS_ROOT)
    pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(pin_dir, 0o700)
    loaded = load_private(max_flows)
    done: list[Path] = []
    try:
        layout = loaded.layout
        fds = {m.name: m.fd for m in loaded.all_maps()}
        fds[layout.str("FP_PROG_SPLICE")] = loaded.prog_fd
        for name in pin_names(layout):
            libbpf.pin(fds[name], pin_dir / name)
            done.append(pin_dir / name)
        return loaded.infos()
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        raise
    finally:
        loaded.close()


def unload(pin_dir: Path) -> list[str]:
    """Detaches the verdict, removes fastpath's pins and the pin folder if empty.

    Returns what was removed. Objects disappear from the kernel once no
    process holds them any more (a running proxy keeps its own copies alive).
    """
    layout = load_layout()
    removed: list[str] = []
    socks_pin, prog_pin = pin_dir / layout.str("FP_MAP_SOCKS"), pin_dir / layout.str("FP_PROG_SPLICE")
    if socks_pin.exists() and prog_pin.exists():
        map_fd, prog_fd = libbpf.get_pinned(socks_pin), libbpf.get_pinned(prog_pin)
        try:
            libbpf.prog_detach(prog_fd, map_fd, libbpf.BPF_SK_SKB_STREAM_VERDICT)
        except BpfError as e:
            if e.errno not in (errno.ENOENT, errno.EINVAL):
                raise
        finally:
            os.close(map_fd)
            os.close(prog_fd)
    for name in pin_names(layout):
        p = pin_dir / name
        if p.exists():
            p.unlink()
            removed.append(str(p))
    try:
        pin_dir.rmdir()
    except OSError:
        pass  # not there, or holds another driver's pins
    return removed


def entry_count(m: Map) -> int:
    return len(m.keys())
