"""Compiles fastpath's hot modules with mypyc: in place for a checkout, or into the wheel.

    python tools/build_compiled.py          # what `make compiled` runs when a C compiler is present

The compiled modules are the same Python source; the interpreter loads the
extension (.so) in preference to the .py. `FASTPATH_PURE=1` makes fastpath
load the pure-Python modules instead (see fastpath/_build.py), and
`fastpath --version` says which build runs. The list of modules is
fastpath._build.HOT_MODULES.

The in-place build and the wheel build (setup.py, through `extensions()`) run
mypyc with the same arguments, and both write the manifest fastpath._build
checks at import: the digest of each source an extension was compiled from.
All hot modules form one mypyc group: their code is one shared library,
fastpath/_hot__mypyc.*.so, with one copy of mypyc's runtime, and calls between
them are direct C calls; each module keeps a small extension next to its source
that loads it, for an editable install and a wheel alike. Against one library
per module (8.6 MB of them, the runtime copied into each) this measured 6-8%
less proxy CPU per unary call on this 2-core machine, caches being cold between
calls (`python -m fastpath.bench.paired`, two builds side by side).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# What the wheel build installs to compile (tools/build_backend.py); the `compiled` extra in pyproject.toml matches.
MYPYC_REQUIREMENT = "mypy[mypyc]>=1.10"
MYPYC_ARGS = ["--ignore-missing-imports", "--follow-imports=silent", "--cache-dir=/dev/null"]
GROUP = "fastpath._hot"  # the shared library every hot module's extension loads: fastpath/_hot__mypyc.*.so


def runtime() -> ModuleType:
    """fastpath/_build.py (stdlib only) loaded on its own, without importing the fastpath package."""
    spec = importlib.util.spec_from_file_location("_fastpath_build_rules", ROOT / "src" / "fastpath" / "_build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def c_compiler() -> str | None:
    """The C compiler setuptools would use, if it is on PATH."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0])


def python_headers() -> bool:
    """Python.h is installed (Debian: python3-dev), which a C extension needs."""
    return os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))


def compile_forced() -> bool:
    return os.environ.get("FASTPATH_COMPILE", "").strip() == "1"


def compile_requested() -> bool:
    """FASTPATH_COMPILE=1 compiles, =0 builds pure Python; unset: compile when a C compiler and Python.h are here."""
    flag = os.environ.get("FASTPATH_COMPILE", "").strip()
    if flag not in ("", "0", "1"):
        raise SystemExit(f"FASTPATH_COMPILE={flag!r}: use 1 (compile the hot modules with mypyc) or 0 (pure Python)")
    if flag:
        return flag == "1"
    return c_compiler() is not None and python_headers()


def extensions(src: str) -> list:
    """mypyc extensions of the hot modules; `src` is the source root relative to the current directory."""
    from mypyc.build import mypycify

    sources = [os.path.join(src, *m.split(".")) + ".py" for m in runtime().HOT_MODULES]
    os.environ["FASTPATH_PURE"] = "1"  # mypy reads the sources, never a half-built extension
    # One group: the modules share one copy of mypyc's runtime and call each other directly.
    return mypycify([*MYPYC_ARGS, *sources], opt_level="3", separate=[(sources, GROUP)], verbose=False)


def remove_compiled(package: Path) -> None:
    """Removes the hot modules' extensions and the manifest under `package` (a fastpath/ folder)."""
    rules = runtime()
    for name in rules.HOT_MODULES:
        parts = name.split(".")[1:]
        folder = package.joinpath(*parts[:-1])
        for stem in (parts[-1], parts[-1] + "__mypyc"):
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                (folder / (stem + suffix)).unlink(missing_ok=True)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        (package / (GROUP.split(".")[-1] + "__mypyc" + suffix)).unlink(missing_ok=True)
    (package / rules.MANIFEST).unlink(missing_ok=True)


def write_manifest(package: Path, sources: Path) -> None:
    """Records, in `package`, the digest of each hot module's source in `sources` (both fastpath/ folders)."""
    rules = runtime()
    (package / rules.MANIFEST).write_text(rules.manifest_text(str(sources)))


def main() -> int:
    src = ROOT / "src"
    os.chdir(src)
    from setuptools import setup

    remove_compiled(src / "fastpath")  # a failed build leaves no manifest: fastpath then runs pure
    exts = extensions(".")
    setup(name="fastpath-compiled", ext_modules=exts, script_args=["build_ext", "--inplace", "-q"])
    write_manifest(src / "fastpath", src / "fastpath")
    return 0


if __name__ == "__main__":
    sys.exit(main())
