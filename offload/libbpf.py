"""libbpf 1.x through ctypes: load BPF objects, attach, operate maps, pin under bpffs.

fastpath talks to the kernel through the system's libbpf.so.1 rather than bcc
(bcc needs kernel headers, recompiles on every load and cannot handle
SOCKHASH). Only the handful of calls fastpath needs are bound; every refusal
becomes a BpfError whose message says which call failed, the errno in words,
what the kernel or libbpf logged, and what to do about it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# enum bpf_map_type / bpf_prog_type / bpf_attach_type values used here (uapi/linux/bpf.h).
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_SOCKHASH = 18
BPF_PROG_TYPE_SK_SKB = 14
BPF_PROG_TYPE_SK_MSG = 16
BPF_SK_SKB_STREAM_VERDICT = 5
BPF_SK_MSG_VERDICT = 7
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_FS_MAGIC = 0xCAFE4A11
BPF_FS_ROOT = Path("/sys/fs/bpf")

HINTS = {
    errno.EPERM: "run as root (CAP_BPF and CAP_NET_ADMIN are needed)",
    errno.EACCES: "the verifier or a permission check refused it; run as root and read the log above",
    errno.ENOENT: "nothing there: run `fastpath bpf load` first, or check the name",
    errno.E2BIG: "the map is full: raise FP_MAX_FLOWS/FP_MAX_SOCKS in bpf/fastpath_maps.h or remove stale flows",
    errno.ENOSPC: "the map is full: raise FP_MAX_FLOWS/FP_MAX_SOCKS in bpf/fastpath_maps.h or remove stale flows",
    errno.EOPNOTSUPP: "this socket cannot join a sockmap (it must be an established TCP socket)",
    errno.EINVAL: "the kernel rejected the arguments (wrong socket state, size or type)",
    errno.EEXIST: "an entry with this key is already there",
    errno.EBUSY: "already attached or in use",
}


class BpfError(OSError):
    """A BPF operation the kernel or libbpf refused; str() says what to do."""

    def __init__(self, op: str, err: int, log: str = "", hint: str = "") -> None:
        self.op = op
        self.log = log.strip()
        words = os.strerror(err) if err else "failed"
        msg = f"{op}: {words} (errno {err})"
        if hint or err in HINTS:
            msg += f"; {hint or HINTS[err]}"
        if self.log:
            tail = "\n".join(self.log.splitlines()[-12:])
            msg += f"\nlibbpf said:\n{tail}"
        super().__init__(err, msg)

    def __str__(self) -> str:
        return self.args[1]


_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_log_lock = threading.Lock()
_log_lines: list[str] = []
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_PRINT_FN
def _libbpf_print(level: int, fmt: bytes, args: int) -> int:
    """Collects libbpf's messages (verifier logs included) for the next error message."""
    buf = ctypes.create_string_buffer(4096)
    _libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
    with _log_lock:
        _log_lines.append(buf.value.decode(errors="replace"))
        del _log_lines[:-200]
    return 0


def _take_log() -> str:
    with _log_lock:
        text = "".join(_log_lines)
        _log_lines.clear()
    return text


def lib() -> ctypes.CDLL:
    """libbpf.so.1, with argument types declared; raises BpfError if it is not installed."""
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        L = ctypes.CDLL(name, use_errno=True)
    except OSError:
        try:
            L = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError:
            raise BpfError("loading libbpf.so.1", errno.ENOENT, hint="install it: apt-get install libbpf1 (Debian/Ubuntu)") from None
    vp, cp, ci, cu32, cu64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
    sigs: dict[str, tuple[type | None, list[type]]] = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (ci, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_program_by_name": (vp, [vp, cp]),
        "bpf_object__find_map_by_name": (vp, [vp, cp]),
        "bpf_map__set_max_entries": (ci, [vp, cu32]),
        "bpf_map__fd": (ci, [vp]),
        "bpf_program__fd": (ci, [vp]),
        "bpf_prog_attach": (ci, [ci, ci, ci, ctypes.c_uint]),
        "bpf_prog_detach2": (ci, [ci, ci, ci]),
        "bpf_map_update_elem": (ci, [ci, vp, vp, cu64]),
        "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
        "bpf_map_delete_elem": (ci, [ci, vp]),
        "bpf_map_get_next_key": (ci, [ci, vp, vp]),
        "bpf_map_lookup_batch": (ci, [ci, vp, vp, vp, vp, ctypes.POINTER(cu32), vp]),
        "bpf_obj_pin": (ci, [ci, cp]),
        "bpf_obj_get": (ci, [cp]),
        "bpf_obj_get_info_by_fd": (ci, [ci, vp, ctypes.POINTER(cu32)]),
        "bpf_prog_get_next_id": (ci, [cu32, ctypes.POINTER(cu32)]),
        "bpf_map_get_next_id": (ci, [cu32, ctypes.POINTER(cu32)]),
        "bpf_prog_get_fd_by_id": (ci, [cu32]),
        "bpf_map_get_fd_by_id": (ci, [cu32]),
        "libbpf_probe_bpf_map_type": (ci, [ci, vp]),
        "libbpf_probe_bpf_prog_type": (ci, [ci, vp]),
        "libbpf_set_print": (vp, [_PRINT_FN]),
    }
    for fname, (res, argtypes) in sigs.items():
        fn = getattr(L, fname)
        fn.restype = res
        fn.argtypes = argtypes
    L.libbpf_set_print(_libbpf_print)
    _lib = L
    return L


def _check(op: str, rc: int, with_log: bool = False) -> int:
    """libbpf 1.x returns -errno on failure (and sets errno); with_log adds what libbpf printed."""
    if rc < 0:
        raise BpfError(op, -rc, _take_log() if with_log else "")
    return rc


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (the prefix fastpath reads)."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (the prefix fastpath reads)."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
    ]


@dataclass(frozen=True)
class ObjInfo:
    """What the kernel reports about a program or map."""

    kind: str  # "prog" or "map"
    id: int
    name: str
    type: int
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0


def map_info(fd: int) -> ObjInfo:
    info = MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check("bpf_obj_get_info_by_fd(map)", lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)))
    return ObjInfo("map", info.id, info.name.decode(), info.type, info.key_size, info.value_size, info.max_entries)


def prog_info(fd: int) -> ObjInfo:
    info = ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check("bpf_obj_get_info_by_fd(prog)", lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)))
    return ObjInfo("prog", info.id, info.name.decode(), info.type)


def _ids(next_id_fn: str) -> Iterator[int]:
    cur = ctypes.c_uint32(0)
    fn = getattr(lib(), next_id_fn)
    while fn(cur.value, ctypes.byref(cur)) == 0:
        yield cur.value


def all_objects() -> list[ObjInfo]:
    """Every program and map the kernel holds (what `bpftool prog/map show` lists)."""
    out: list[ObjInfo] = []
    for kind, next_fn, get_fn, info_fn in (
        ("prog", "bpf_prog_get_next_id", "bpf_prog_get_fd_by_id", prog_info),
        ("map", "bpf_map_get_next_id", "bpf_map_get_fd_by_id", map_info),
    ):
        for i in _ids(next_fn):
            fd = getattr(lib(), get_fn)(i)
            if fd < 0:
                continue  # freed meanwhile
            try:
                out.append(info_fn(fd))
            finally:
                os.close(fd)
    return out


class Map:
    """A BPF map by fd, with fixed-size keys and values (ctypes types)."""

    def __init__(self, fd: int, name: str, key_type: type, value_type: type, owns_fd: bool = True) -> None:
        self.fd = fd
        self.name = name
        self.key_type = key_type
        self.value_type = value_type
        self.owns_fd = owns_fd
        self._max_entries: int | None = None
        self._local = threading.local()  # batch buffers, one pair per thread

    def update(self, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
        rc = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags)
        _check(f"update of map {self.name}", rc)

    def lookup(self, key: ctypes._CData) -> ctypes._CData | None:
        value = self.value_type()
        rc = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        if rc < 0:
            if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
                return None
            _check(f"lookup in map {self.name}", rc)
        return value

    def delete(self, key: ctypes._CData) -> bool:
        """Deletes a key; False if it was not there."""
        rc = lib().bpf_map_delete_elem(self.fd, ctypes.byref(key))
        if rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
            return False
        _check(f"delete from map {self.name}", rc)
        return True

    def keys(self) -> list:
        """All keys (a snapshot; hash maps may change while iterating)."""
        out = []
        prev, nxt = None, self.key_type()
        while True:
            rc = lib().bpf_map_get_next_key(self.fd, ctypes.byref(prev) if prev is not None else None, ctypes.byref(nxt))
            if rc < 0:
                if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
                    return out
                _check(f"iteration of map {self.name}", rc)
            out.append(nxt.value if hasattr(nxt, "value") else nxt)
            prev, nxt = nxt, self.key_type()
            if len(out) > 10_000_000:
                raise BpfError(f"iteration of map {self.name}", errno.ELOOP)

    def lookup_batches(self, chunk: int | None = None) -> Iterator[tuple[ctypes.Array, ctypes.Array, int]]:
        """(keys, values, count) chunks of the whole map, a few syscalls in all (BPF_MAP_LOOKUP_BATCH).

        The arrays are reused per thread: read each chunk before asking for the
        next. Raises BpfError with EOPNOTSUPP where the kernel has no batch
        operations for this map type.
        """
        if chunk is None:
            if self._max_entries is None:
                self._max_entries = self.info().max_entries
            chunk = max(1, min(4096, self._max_entries))
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or len(bufs[0]) != chunk:
            bufs = self._local.bufs = ((self.key_type * chunk)(), (self.value_type * chunk)())
        keys, values = bufs
        token_in, token_out = ctypes.c_uint64(0), ctypes.c_uint64(0)
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib().bpf_map_lookup_batch(self.fd, None if first else ctypes.byref(token_in), ctypes.byref(token_out),
                                            keys, values, ctypes.byref(count), None)
            err = -rc if rc < 0 else 0
            if err and err != errno.ENOENT:
                if err == 524:  # the kernel's ENOTSUPP
                    err = errno.EOPNOTSUPP
                raise BpfError(f"batch lookup in map {self.name}", err)
            if count.value:
                yield keys, values, count.value
            if err == errno.ENOENT:
                return
            token_in.value = token_out.value
            first = False

    def lookup_all(self) -> dict:
        """Every key and value: batched where the kernel can, one lookup per key otherwise."""
        out: dict = {}
        try:
            for keys, values, n in self.lookup_batches():
                for i in range(n):
                    k, v = keys[i], values[i]  # simple ctypes come back as Python ints
                    out[k if isinstance(k, int) else bytes(k)] = self.value_type.from_buffer_copy(v) if isinstance(v, ctypes.Structure) else v
        except BpfError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            return dict(self.items())
        return out

    def items(self) -> list[tuple]:
        out = []
        for k in self.keys():
            key = self.key_type(k) if not isinstance(k, ctypes.Structure) else k
            v = self.lookup(key)
            if v is not None:
                out.append((k, v))
        return out

    def info(self) -> ObjInfo:
        return map_info(self.fd)

    def close(self) -> None:
        if self.owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class BpfObject:
    """An ELF object from bpf/build opened and loaded through libbpf."""

    def __init__(self, path: str | Path, max_entries: dict[str, int] | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise BpfError(f"opening {path}", errno.ENOENT, hint="build it with `make bpf` (needs clang)")
        L = lib()
        _take_log()
        ctypes.set_errno(0)
        self._obj = L.bpf_object__open_file(str(path).encode(), None)
        if not self._obj:
            raise BpfError(f"bpf_object__open_file({path})", ctypes.get_errno() or errno.EINVAL, _take_log())
        self.path = path
        try:
            for name, n in (max_entries or {}).items():
                _check(f"bpf_map__set_max_entries({name})", L.bpf_map__set_max_entries(self._map_ptr(name), n), True)
            _check(f"bpf_object__load({path.name})", L.bpf_object__load(self._obj), True)
            _take_log()
        except BaseException:
            self.close()
            raise

    def _map_ptr(self, name: str) -> int:
        m = lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise BpfError(f"map {name} in {self.path.name}", errno.ENOENT, hint="rebuild bpf/ (make bpf): the object does not match fastpath_maps.h")
        return m

    def map_fd(self, name: str) -> int:
        return _check(f"bpf_map__fd({name})", lib().bpf_map__fd(self._map_ptr(name)))

    def prog_fd(self, name: str) -> int:
        p = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise BpfError(f"program {name} in {self.path.name}", errno.ENOENT, hint="rebuild bpf/ (make bpf)")
        return _check(f"bpf_program__fd({name})", lib().bpf_program__fd(p))

    def close(self) -> None:
        """Closes libbpf's fds; objects live on while pinned, attached or dup'ed elsewhere."""
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = None


def prog_attach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _check(f"bpf_prog_attach(type {attach_type})", lib().bpf_prog_attach(prog_fd, target_fd, attach_type, 0))


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _check(f"bpf_prog_detach2(type {attach_type})", lib().bpf_prog_detach2(prog_fd, target_fd, attach_type))


def is_bpffs(path: Path = BPF_FS_ROOT) -> bool:
    """True when `path` is a mounted bpf filesystem."""
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1:3] == [str(path), "bpf"] for line in f)
    except OSError:
        return False


def ensure_bpffs(path: Path = BPF_FS_ROOT) -> None:
    """Mounts bpffs at /sys/fs/bpf when it is not mounted yet (pinning needs it)."""
    if is_bpffs(path):
        return
    path.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"bpf", str(path).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise BpfError(f"mount -t bpf bpf {path}", err, hint="mount it yourself as root: mount -t bpf bpf /sys/fs/bpf")


def pin(fd: int, path: Path) -> None:
    """Pins an object at `path`, readable and writable by root only."""
    _check(f"bpf_obj_pin({path})", lib().bpf_obj_pin(fd, str(path).encode()))
    os.chmod(path, 0o600)


def get_pinned(path: Path) -> int:
    """An fd for the object pinned at `path`."""
    ctypes.set_errno(0)
    return _check(f"bpf_obj_get({path})", lib().bpf_obj_get(str(path).encode()))


def probe_map_type(map_type: int) -> bool:
    return lib().libbpf_probe_bpf_map_type(map_type, None) == 1


def probe_prog_type(prog_type: int) -> bool:
    return lib().libbpf_probe_bpf_prog_type(prog_type, None) == 1
