"""Compiles fastpath's hot modules with mypyc, in place, next to their sources.

    python tools/build_compiled.py          # what `make` runs when a C compiler is present

The compiled modules are the same Python source; the interpreter loads the
extension (.so) in preference to the .py. `FASTPATH_PURE=1` makes fastpath
load the pure-Python modules instead (see fastpath/__init__.py), and
`fastpath.compiled_modules()` says which ones are compiled in this process.
The list of modules is fastpath._build.HOT_MODULES.
Each module is its own group (separate=True), so every artefact lives inside
the package and an editable install finds it.
"""
from __future__ import annotations

import importlib.machinery
import os
import sys



def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(os.path.join(root, "src"))
    sys.path.insert(0, os.getcwd())
    from fastpath._build import HOT_MODULES

    sources = [m.replace(".", "/") + ".py" for m in HOT_MODULES]
    os.environ["FASTPATH_PURE"] = "1"  # mypy reads the sources, never a half-built extension
    from mypyc.build import mypycify
    from setuptools import setup

    args = ["--ignore-missing-imports", "--follow-imports=silent", "--cache-dir=/dev/null", *sources]
    exts = mypycify(args, opt_level="3", separate=True, verbose=False)
    setup(name="fastpath-compiled", ext_modules=exts, script_args=["build_ext", "--inplace", "-q"])
    # build_ext copies only what changed; every extension of this build is as new as the sources.
    for ext in exts:
        path = ext.name.replace(".", "/") + importlib.machinery.EXTENSION_SUFFIXES[0]
        if os.path.exists(path):
            os.utime(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
