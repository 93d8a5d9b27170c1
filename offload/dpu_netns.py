"""Network namespaces, veth pairs and tc attachment for the emulated card.

Everything is created inside namespaces this process names (never in the
host's root namespace), so a test run only ever removes what it made. Python
3.11 has no os.setns: work that must happen inside a namespace (attaching tc
programs through libbpf's netlink calls, opening a socket there) runs on a
short-lived thread that calls libc setns(2) for itself; a thread's network
namespace does not affect the rest of the process, and a socket stays in the
namespace it was created in.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastpath.offload import libbpf

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2


class NetnsError(RuntimeError):
    """A namespace, link or address could not be set up; the message names the command."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs `ip ARGS`; raises NetnsError with ip's own message on failure."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def create(ns: str) -> None:
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def delete(ns: str) -> None:
    """Removes a namespace (its veth ends, tc filters and routes go with it)."""
    if exists(ns):
        ip("netns", "del", ns, check=False)


def sysctl(ns: str, key: str, value: str) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise NetnsError(f"sysctl {key}={value} in {ns}: {r.stderr.strip()}")


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair with one end in each namespace (created there, never in the root namespace)."""
    ip("-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    ip("-n", ns_a, "link", "set", name_a, "up")
    ip("-n", ns_b, "link", "set", name_b, "up")


def addr(ns: str, dev: str, cidr: str) -> None:
    ip("-n", ns, "addr", "add", cidr, "dev", dev)


def ifindex(ns: str, dev: str) -> int:
    out = ip("-n", ns, "-o", "link", "show", "dev", dev).stdout
    return int(out.split(":", 1)[0])


def run_in(ns: str, fn: Callable[[], T]) -> T:
    """Calls fn() on a thread that has joined namespace `ns`; returns its result or raises its error."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def socket_in(ns: str, family: int = socket.AF_INET, type_: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside namespace `ns` (usable from any thread afterwards)."""
    return run_in(ns, lambda: socket.socket(family, type_))


class _TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32), ("priority", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


def _tc_fns() -> ctypes.CDLL:
    L = libbpf.lib()
    for name in ("bpf_tc_hook_create", "bpf_tc_attach", "bpf_tc_hook_destroy"):
        getattr(L, name).restype = ctypes.c_int
    L.bpf_tc_hook_create.argtypes = [ctypes.POINTER(_TcHook)]
    L.bpf_tc_hook_destroy.argtypes = [ctypes.POINTER(_TcHook)]
    L.bpf_tc_attach.argtypes = [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]
    return L


def tc_attach_ingress(ns: str, dev: str, prog_fd: int) -> int:
    """Attaches a cls_bpf direct-action program on `dev`'s clsact ingress in `ns` (libbpf); returns its prog id."""
    index = ifindex(ns, dev)

    def attach() -> int:
        L = _tc_fns()
        hook = _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=index, attach_point=BPF_TC_INGRESS)
        rc = L.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and -rc != errno.EEXIST:
            raise libbpf.BpfError(f"bpf_tc_hook_create({dev} in {ns})", -rc, hint="tc clsact needs CAP_NET_ADMIN")
        opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=prog_fd, handle=1, priority=1)
        rc = L.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        if rc < 0:
            raise libbpf.BpfError(f"bpf_tc_attach({dev} in {ns})", -rc, hint="the program must be BPF_PROG_TYPE_SCHED_CLS")
        return int(opts.prog_id)

    return run_in(ns, attach)
