"""Which of fastpath's hot modules run compiled (mypyc), and the switch back to pure Python.

`make` compiles the modules in HOT_MODULES with mypyc when a C compiler is
present (tools/build_compiled.py); the interpreter then loads the extension
next to each .py. `install()` puts a finder first on sys.meta_path that
loads a hot module from its .py source instead when FASTPATH_PURE=1 is set
(so one checkout runs and tests both builds) or when any extension is
missing or older than its source (an edit since the last `make`: never run
stale code). It is all or nothing: compiled modules call each other natively.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

HOT_MODULES = (
    "fastpath.h2.frames",
    "fastpath.h2.stream_state",
    "fastpath.h2.constraints",
    "fastpath.h2.validation",
    "fastpath.h2.huffman",
    "fastpath.h2.hpack_codec",
    "fastpath.h2.connection",
    "fastpath.dataplane.outcome",
    "fastpath.dataplane.call",
    "fastpath.dataplane.services",
    "fastpath.dataplane.conn",
    "fastpath.dataplane.downstream",
    "fastpath.dataplane.upstream",
    "fastpath.router.axes",
    "fastpath.router.live",
    "fastpath.router.load",
    "fastpath.router.prefix",
    "fastpath.router.router",
)


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds fastpath's hot modules as source even when a compiled extension sits next to them."""

    def find_spec(self, name: str, path=None, target: ModuleType | None = None):  # type: ignore[no-untyped-def]
        if name not in HOT_MODULES or not path:
            return None
        leaf = name.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, leaf + ".py")
            if not os.path.exists(source):
                continue
            if not pure_requested() and all_fresh():
                return None  # the normal import finds the compiled module
            return importlib.util.spec_from_file_location(
                name, source, loader=importlib.machinery.SourceFileLoader(name, source))
        return None


def fresh_extension(directory: str, leaf: str, source: str) -> bool:
    """A compiled extension of `leaf` exists in `directory` and is newer than its source."""
    src_mtime = os.stat(source).st_mtime
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        ext = os.path.join(directory, leaf + suffix)
        if os.path.exists(ext):
            return os.stat(ext).st_mtime >= src_mtime
    return False


_all_fresh: bool | None = None


def all_fresh() -> bool:
    """Every hot module has a compiled extension at least as new as its source."""
    global _all_fresh
    if _all_fresh is None:
        root = os.path.dirname(os.path.abspath(__file__))
        fresh = []
        for name in HOT_MODULES:
            parts = name.split(".")[1:]
            directory = os.path.join(root, *parts[:-1])
            fresh.append(fresh_extension(directory, parts[-1], os.path.join(directory, parts[-1] + ".py")))
        _all_fresh = all(fresh)
        if any(fresh) and not _all_fresh:
            sys.stderr.write("fastpath: compiled modules are older than their sources; running pure Python "
                             "(run `make` to rebuild them)\n")
    return _all_fresh


def pure_requested() -> bool:
    return os.environ.get("FASTPATH_PURE", "") not in ("", "0")


def install() -> None:
    if not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def compiled_modules() -> list[str]:
    """The hot modules loaded in this process from a compiled extension."""
    import importlib

    out = []
    for name in HOT_MODULES:
        mod = importlib.import_module(name)
        if not (getattr(mod, "__file__", "") or "").endswith(".py"):
            out.append(name)
    return out
