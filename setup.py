"""Packaging beyond pyproject.toml: folder mapping, BPF objects built with the wheel, compiled modules.

- The top-level offload/, bench/ and bpf/ folders become fastpath.offload,
  fastpath.bench and fastpath.bpf.
- fastpath.bpf is package data (globs in pyproject.toml): every header and
  source in bpf/, so new shared headers ship without an edit, and the CO-RE
  objects in bpf/build/. `build_py` compiles those objects first when clang is present
  (a wheel built without clang still installs; `fastpath bpf status` and
  `fastpath up --offload ebpf` then say the objects are missing).
- A wheel build compiles the hot modules (fastpath._build.HOT_MODULES) with
  mypyc when a C compiler is present, or FASTPATH_COMPILE=1 (FASTPATH_COMPILE=0:
  pure Python). Their .py sources still ship in the wheel, so the pure-Python
  fallback is always present (FASTPATH_PURE=1 at run time). mypy is a build
  requirement only then (tools/build_backend.py). An editable install never
  compiles: `make compiled` builds the same extensions in place
  (tools/build_compiled.py holds the mypyc invocation both use).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
EXTRA = {"fastpath.offload": "offload", "fastpath.bench": "bench", "fastpath.bpf": "bpf"}
sys.path.insert(0, str(HERE / "tools"))
import build_compiled  # noqa: E402  (tools/: the mypyc build shared with `make compiled`)

# The commands that build what a wheel installs; metadata and editable builds never compile.
BUILD_COMMANDS = ("bdist_wheel", "build", "build_ext", "install")


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
        if not self.editable_mode and not self.distribution.ext_modules:
            # build/lib outlives a build: a pure wheel must not pick up an earlier build's extensions.
            build_compiled.remove_compiled(Path(self.build_lib) / "fastpath")
        super().run()


class BuildExtWithManifest(build_ext):
    """build_ext on both cores that records which sources the extensions were compiled from."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        package = HERE / "src" / "fastpath" if self.inplace else Path(self.build_lib) / "fastpath"
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as e:
            if build_compiled.compile_forced():
                raise
            # Without the manifest nothing counts as compiled: the package runs pure Python.
            build_compiled.remove_compiled(package)
            print(f"fastpath: compiling the hot modules failed ({e}); the package runs pure Python "
                  "(FASTPATH_COMPILE=1 makes this an error)", file=sys.stderr)
            return
        build_compiled.write_manifest(package, HERE / "src" / "fastpath")


def compiled_extensions() -> list:
    """mypyc extensions of the hot modules for a wheel build, or [] (pure Python)."""
    if not any(cmd in sys.argv for cmd in BUILD_COMMANDS) or not build_compiled.compile_requested():
        return []
    forced = build_compiled.compile_forced()
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        if forced:
            raise SystemExit("fastpath: FASTPATH_COMPILE=1 but mypyc is not installed "
                             f"(pip install '{build_compiled.MYPYC_REQUIREMENT}', or FASTPATH_COMPILE=0 for pure Python)")
        print("fastpath: mypyc not installed: building the pure-Python package", file=sys.stderr)
        return []
    print("fastpath: compiling the hot modules with mypyc (FASTPATH_COMPILE=0 builds pure Python)", file=sys.stderr)
    try:
        return build_compiled.extensions("src")
    except SystemExit as e:  # mypyc reports type errors and exits
        if forced:
            raise
        print(f"fastpath: mypyc could not compile the hot modules ({e}); building the pure-Python package "
              "(FASTPATH_COMPILE=1 makes this an error)", file=sys.stderr)
        return []


packages = find_packages("src")
for name, folder in EXTRA.items():
    packages += [name] + [f"{name}.{p}" for p in find_packages(folder)]
package_dir = {"": "src", **EXTRA}
setup(
    packages=packages,
    package_dir=package_dir,
    cmdclass={"build_py": BuildPyWithBpf, "build_ext": BuildExtWithManifest},
    ext_modules=compiled_extensions(),
)
