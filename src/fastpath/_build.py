"""Which of fastpath's hot modules run compiled (mypyc), and the switch back to pure Python.

`make compiled` (in place) and the wheel build compile the modules in
HOT_MODULES with mypyc when a C compiler is present (tools/build_compiled.py);
the interpreter then loads the extension next to each .py. `install()` puts a
finder first on sys.meta_path that loads a hot module from its .py source
instead when FASTPATH_PURE=1 is set (so one install runs and tests both
builds) or when any extension is missing or was not compiled from the source
beside it (an edit since the last `make compiled`: never run stale code).

Which source an extension was compiled from is recorded by the build in
MANIFEST (a digest per module), not read from file times: an installer
writes a wheel's files in any order and with any times. It is all or
nothing: compiled modules call each other natively.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import hashlib
import json
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
    "fastpath.dataplane.call_metrics",
    "fastpath.dataplane.call",
    "fastpath.dataplane.services",
    "fastpath.dataplane.conn",
    "fastpath.dataplane.downstream",
    "fastpath.dataplane.upstream",
    "fastpath.router.features",
    "fastpath.router.axes",
    "fastpath.router.live",
    "fastpath.router.load",
    "fastpath.router.prefix",
    "fastpath.router.fixed3",
    "fastpath.router.router",
)
MANIFEST = "_compiled.json"  # in the fastpath package folder, written by tools/build_compiled.py


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


def source_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _module_paths(root: str, name: str) -> tuple[str, str]:
    """(folder, leaf) of hot module `name` under the fastpath folder `root`."""
    parts = name.split(".")[1:]
    return os.path.join(root, *parts[:-1]), parts[-1]


def manifest_text(root: str) -> str:
    """The manifest for the hot modules' sources under the fastpath folder `root` (the build writes it)."""
    sources = {}
    for name in HOT_MODULES:
        directory, leaf = _module_paths(root, name)
        sources[name] = source_digest(os.path.join(directory, leaf + ".py"))
    return json.dumps({"sources": sources}, indent=1, sort_keys=True) + "\n"


def read_manifest(root: str) -> dict[str, str]:
    """Module -> digest of the source its extension was compiled from; {} without a (readable) manifest."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            sources = json.load(f).get("sources", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return sources if isinstance(sources, dict) else {}


def has_extension(directory: str, leaf: str) -> bool:
    return any(os.path.exists(os.path.join(directory, leaf + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def fresh_extension(directory: str, leaf: str, source: str, digest: str | None) -> bool:
    """A compiled extension of `leaf` exists in `directory`, compiled from `source` as it is now."""
    return has_extension(directory, leaf) and digest is not None and digest == source_digest(source)


_all_fresh: bool | None = None


def package_root() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def all_fresh() -> bool:
    """Every hot module has a compiled extension built from its source as it is now."""
    global _all_fresh
    if _all_fresh is None:
        root = package_root()
        manifest = read_manifest(root)
        fresh = []
        for name in HOT_MODULES:
            directory, leaf = _module_paths(root, name)
            fresh.append(fresh_extension(directory, leaf, os.path.join(directory, leaf + ".py"), manifest.get(name)))
        _all_fresh = all(fresh)
        if not _all_fresh and any_extension():
            sys.stderr.write("fastpath: the compiled modules were not built from the sources beside them; "
                             "running pure Python (run `make compiled` to rebuild them)\n")
    return _all_fresh


def any_extension() -> bool:
    """Some hot module has a compiled extension on disk (fresh or not)."""
    root = package_root()
    return any(has_extension(*_module_paths(root, name)) for name in HOT_MODULES)


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


def describe() -> str:
    """Which fast path this process runs, and why, for `fastpath --version`."""
    loaded = compiled_modules()
    if loaded:
        return f"compiled (mypyc, {len(loaded)} modules)"
    if pure_requested():
        return "pure Python (FASTPATH_PURE=1)"
    if any_extension():
        return "pure Python (the compiled modules do not match their sources: run `make compiled` or reinstall)"
    return "pure Python (this install has no compiled modules)"
