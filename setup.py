"""Packaging beyond pyproject.toml: folder mapping, BPF objects built with the wheel, compiled modules.

- The top-level offload/, bench/ and bpf/ folders become fastpath.offload,
  fastpath.bench and fastpath.bpf.
- fastpath.bpf is package data (globs in pyproject.toml): every header and
  source in bpf/, so new shared headers ship without an edit, and the CO-RE
  objects in bpf/build/. `build_py` compiles those objects first when clang is present
  (a wheel built without clang still installs; `fastpath bpf status` and
  `fastpath up --offload ebpf` then say the objects are missing).
- COMPILED_MODULES is the hook for a compiled (mypyc) build of the fast path:
  list the modules there. Their .py sources still ship in the wheel, so the
  pure-Python fallback is always present (FASTPATH_PURE_PYTHON=1 at build
  time, or no mypyc, builds the pure wheel).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
EXTRA = {"fastpath.offload": "offload", "fastpath.bench": "bench", "fastpath.bpf": "bpf"}

# Modules compiled with mypyc when it is installed, e.g. "src/fastpath/h2/frames.py". Empty: pure Python.
COMPILED_MODULES: list[str] = []


def build_bpf_objects() -> None:
    """Compiles bpf/*.bpf.c into bpf/build/ with the flags of bpf/Makefile, when clang is here."""
    bpf = HERE / "bpf"
    sources = sorted(bpf.glob("*.bpf.c"))
    clang = os.environ.get("CLANG") or shutil.which("clang")
    if not sources:
        return
    if not clang:
        print("fastpath: clang not found: the BPF objects are not built into this package "
              "(the ebpf offload driver will say so at startup)", file=sys.stderr)
        return
    if shutil.which("make"):
        subprocess.run(["make", "-s", "-C", str(bpf), f"CLANG={clang}"], check=True)
        return
    (bpf / "build").mkdir(exist_ok=True)
    for src in sources:
        out = bpf / "build" / (src.name[: -len(".c")] + ".o")
        subprocess.run([clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        f"-I{bpf}", "-c", str(src), "-o", str(out)], check=True)


class BuildPyWithBpf(build_py):
    """build_py that compiles the BPF objects first, so they are package data of fastpath.bpf."""

    def run(self) -> None:
        build_bpf_objects()
        self.__dict__.pop("data_files", None)  # re-glob package data: the objects may be new
        super().run()


def compiled_extensions() -> list:
    """mypyc extensions for COMPILED_MODULES, or [] (pure Python) when none, no mypyc, or opted out."""
    if not COMPILED_MODULES or os.environ.get("FASTPATH_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("fastpath: mypyc not installed: building the pure-Python package", file=sys.stderr)
        return []
    return mypycify(COMPILED_MODULES, opt_level="3")


packages = find_packages("src")
for name, folder in EXTRA.items():
    packages += [name] + [f"{name}.{p}" for p in find_packages(folder)]
package_dir = {"": "src", **EXTRA}
setup(
    packages=packages,
    package_dir=package_dir,
    cmdclass={"build_py": BuildPyWithBpf},
    ext_modules=compiled_extensions(),
)
