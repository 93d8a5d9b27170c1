"""Sections measured by other modules: missing, failing and working ones are told apart."""
from __future__ import annotations

from fastpath.bench import extras


def test_missing_module_is_not_available(tmp_path):
    res = extras.run_measure("fastpath.bench.no_such_section", {}, 20, tmp_path)
    assert res["available"] is False and res["rows"] == []
    assert "not in this install" in res["note"]


def test_a_failing_measure_is_a_note_with_its_error(tmp_path):
    res = extras.run_measure("json", {}, 30, tmp_path)  # json has no measure()
    assert res["available"] is True and res["rows"] == []
    assert "failed" in res["note"] and "measure" in res["note"]


def test_rows_come_back_from_the_child(tmp_path):
    # a module of our own, importable by the child through PYTHONPATH
    import os
    import sys

    mod = tmp_path / "bench_extra_probe.py"
    mod.write_text("def measure(quick=False):\n    return [{'quick': quick, 'value': 42}]\n")

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp_path) + (os.pathsep + old if old else "")
    sys.path.insert(0, str(tmp_path))
    try:
        res = extras.run_measure("bench_extra_probe", {"quick": True}, 30, tmp_path / "work")
    finally:
        sys.path.remove(str(tmp_path))
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert res == {"available": True, "rows": [{"quick": True, "value": 42}], "note": "", "seconds": res["seconds"]}
