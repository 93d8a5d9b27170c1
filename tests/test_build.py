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
