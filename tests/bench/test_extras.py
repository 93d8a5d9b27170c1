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


def test_rows_come_back_from_the_child(tmp_path, monkeypatch):
    # a module of our own, importable by the child through PYTHONPATH
    import os

    (tmp_path / "bench_extra_probe.py").write_text("def measure(quick=False):\n    return [{'quick': quick, 'value': 42}]\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(str(tmp_path))
    res = extras.run_measure("bench_extra_probe", {"quick": True}, 30, tmp_path / "work")
    assert res == {"available": True, "rows": [{"quick": True, "value": 42}], "note": "", "seconds": res["seconds"]}
