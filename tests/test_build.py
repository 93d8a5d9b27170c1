"""The process runs the build it was asked for: compiled hot modules, or pure Python with FASTPATH_PURE=1."""
import os

import fastpath
from fastpath import _build


def test_loaded_build_is_the_one_asked_for():
    loaded = fastpath.compiled_modules()
    if _build.pure_requested():
        assert loaded == []
        return
    # All compiled when every extension is fresh, else none (a stale extension never runs).
    assert loaded == (list(_build.HOT_MODULES) if _build.all_fresh() else [])
    if os.environ.get("FASTPATH_EXPECT_COMPILED") == "1":  # `make test` on a machine with a C compiler
        assert loaded == list(_build.HOT_MODULES)


def test_pure_switch_loads_sources(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import fastpath; print(fastpath.compiled_modules())"],
                         env={**os.environ, "FASTPATH_PURE": "1"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_extension_counts_only_if_compiled_from_the_source_beside_it(tmp_path):
    """The rule an installed wheel relies on: the build's digest decides, not file times (an installer
    writes the .so before or after the .py, with any time)."""
    import importlib.machinery

    source = tmp_path / "frames.py"
    source.write_text("X = 1\n")
    digest = _build.source_digest(str(source))
    assert not _build.fresh_extension(str(tmp_path), "frames", str(source), digest)  # no extension at all
    ext = tmp_path / ("frames" + importlib.machinery.EXTENSION_SUFFIXES[0])
    ext.write_bytes(b"")
    os.utime(ext, (1, 1))  # older than its source, as after some installs
    assert _build.fresh_extension(str(tmp_path), "frames", str(source), digest)
    assert not _build.fresh_extension(str(tmp_path), "frames", str(source), None)  # built without a manifest
    source.write_text("X = 2\n")  # edited since the build
    assert not _build.fresh_extension(str(tmp_path), "frames", str(source), digest)


def test_manifest_names_every_hot_module_with_its_source_digest(tmp_path):
    import json

    root = _build.package_root()
    (tmp_path / _build.MANIFEST).write_text(_build.manifest_text(root))
    recorded = _build.read_manifest(str(tmp_path))
    assert set(recorded) == set(_build.HOT_MODULES)
    frames = os.path.join(root, "h2", "frames.py")
    assert recorded["fastpath.h2.frames"] == _build.source_digest(frames)
    (tmp_path / _build.MANIFEST).write_text("{not json")
    assert _build.read_manifest(str(tmp_path)) == {}  # unreadable: nothing counts as compiled
    assert json.loads(_build.manifest_text(root))["sources"] == recorded


def test_version_says_which_fast_path_runs():
    import subprocess
    import sys

    def version(**env):
        out = subprocess.run([sys.executable, "-m", "fastpath.cli", "--version"], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        return out.stdout.splitlines()

    lines = version(FASTPATH_PURE="")  # unset
    assert lines[0] == f"fastpath {fastpath.__version__}"
    if _build.all_fresh():
        assert lines[1] == f"fast path: compiled (mypyc, {len(_build.HOT_MODULES)} modules)"
    else:
        assert lines[1].startswith("fast path: pure Python (")
    assert version(FASTPATH_PURE="1")[1] == "fast path: pure Python (FASTPATH_PURE=1)"


def test_only_a_compiling_wheel_build_asks_for_mypy():
    """An editable install (`make setup`) never needs mypy nor compiles; a wheel build does when asked to."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    probe = ("import sys; sys.path.insert(0, 'tools'); import build_backend as b; "
             "e = any(r.startswith('mypy') for r in b.get_requires_for_build_editable()); "
             "w = any(r.startswith('mypy') for r in b.get_requires_for_build_wheel()); print('asks', e, w)")

    def asks(flag):
        out = subprocess.run([sys.executable, "-c", probe], cwd=root, env={**os.environ, "FASTPATH_COMPILE": flag},
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.splitlines()[-1].split()[1:]  # the last line, after what egg_info prints

    assert asks("1") == ["False", "True"]
    assert asks("0") == ["False", "False"]
