"""Picks the offload driver named in the config, falling back to `none` when it cannot run.

A proxy must start even where BPF is not allowed (a container without
CAP_BPF, a machine without the built objects): it then relays every flow in
Python and says so once, with what failed and what to do.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

from fastpath.offload.none import NoneDriver
from fastpath.offload.steering import SteeringTable

log = logging.getLogger("fastpath.offload")

DRIVERS = ("none", "ebpf", "dpu")
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def effective_caps() -> int:
    """This process's effective capability bits (0 if unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_privileges() -> str:
    """Empty when this process may load sockmap programs, else what is missing."""
    caps = effective_caps()

    def has(bit: int) -> bool:
        return bool(caps >> bit & 1)

    missing = []
    if not (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_BPF")
    if not (has(CAP_NET_ADMIN) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_NET_ADMIN")
    return " and ".join(missing)


def ebpf_problem() -> str | None:
    """Why the ebpf driver cannot run here and what fixes it, in one line; None when nothing is in the way.

    Checked before a stack starts, so `fastpath up --offload ebpf` says it at once
    instead of the proxy quietly relaying every flow in Python.
    """
    from fastpath.offload import libbpf
    from fastpath.offload.bpf_files import bpf_header, missing_objects
    from fastpath.offload.loader import OBJECT_NAME

    missing = missing_privileges()
    if missing:
        return (f"this process lacks {missing}; fix: run it as root, or grant the capabilities "
                "(setcap cap_bpf,cap_net_admin+ep on the interpreter, or the container's securityContext)")
    if not bpf_header().is_file():
        return (f"the BPF header {bpf_header()} is missing; fix: reinstall fastpath, "
                "or set FASTPATH_BPF_DIR to a bpf/ folder")
    objects = missing_objects(OBJECT_NAME)
    if objects:
        return (f"the BPF object {objects[0]} is not built; fix: install clang and libbpf-dev, then `make bpf` "
                "in a checkout, or rebuild the wheel with clang present")
    try:
        libbpf.lib()
    except Exception as e:  # noqa: BLE001 - any failure to load libbpf is the reason
        return f"libbpf cannot be loaded ({str(e).splitlines()[0]}); fix: apt-get install libbpf1"
    return None


def open_ebpf(**kwargs: Any) -> SteeringTable:
    """The ebpf driver; raises with a clear message when it cannot work here."""
    missing = missing_privileges()
    if missing:
        raise PermissionError(f"this process lacks {missing}; run the proxy as root or grant them (setcap/capabilities)")
    from fastpath.offload.ebpf import EbpfDriver

    return EbpfDriver(**kwargs)


def open_driver(config_or_name: Any, **kwargs: Any) -> SteeringTable:
    """The driver config.offload_driver (or a name) asks for, or `none` with one log line why not."""
    name = config_or_name if isinstance(config_or_name, str) else getattr(config_or_name, "offload_driver", "none")
    if name not in DRIVERS:
        raise ValueError(f"offload driver {name!r} unknown: use one of {', '.join(DRIVERS)} ([offload] driver in the config)")
    if name == "none":
        return NoneDriver()
    try:
        if name == "ebpf":
            return open_ebpf(**kwargs)
        module = importlib.import_module("fastpath.offload.dpu")
        return module.open_driver(config_or_name, **kwargs)
    except Exception as e:  # noqa: BLE001 - anything that stops the driver leaves the proxy on Python
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = {
            "ebpf": "check `fastpath bpf status`; build the objects with `make bpf`; run as root",
            "dpu": "build a card with `fastpath dpu up` (root), run this process in its host namespace "
                   "(ip netns exec <card>-host ...), set FASTPATH_DPU_CARD when there are several; `fastpath dpu status`",
        }[name]
        log.warning("offload driver %s unavailable (%s): every flow stays on the Python relay (driver none). To fix: %s", name, first, hint)
        return NoneDriver(f"offload driver {name} unavailable ({first}); flows stay on the Python relay")
