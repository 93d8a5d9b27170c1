"""Where fastpath's BPF headers and compiled CO-RE objects are: the one locator all offload code uses.

They ship inside the package as `fastpath.bpf` (package data; the objects are
compiled when the wheel is built), so an installed wheel finds them through
importlib.resources. A checkout maps `fastpath.bpf` to its bpf/ folder, and
$FASTPATH_BPF_DIR points somewhere else entirely (a freshly built tree, a test).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV = "FASTPATH_BPF_DIR"
BUILD = "build"  # compiled objects live in <bpf dir>/build/<name>.bpf.o


def bpf_dir() -> Path:
    """The folder holding the BPF headers (and build/ with the objects)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    try:
        root = resources.files("fastpath.bpf")
    except ModuleNotFoundError:  # an install made before the BPF files were package data
        return Path(__file__).resolve().parent.parent / "bpf"
    # Wheels install as plain files, so the traversable is a real folder.
    return Path(str(root))


def bpf_object(name: str) -> Path:
    """The compiled object `name` (e.g. sockmap_splice.bpf.o); it may not exist (see missing_objects)."""
    return bpf_dir() / BUILD / name


def bpf_header(name: str = "fastpath_maps.h") -> Path:
    return bpf_dir() / name


def missing_objects(*names: str) -> list[str]:
    """Which of the named objects are not built, as paths a person can check."""
    return [str(bpf_object(n)) for n in names if not bpf_object(n).is_file()]
