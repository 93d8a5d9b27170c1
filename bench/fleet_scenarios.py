"""Fleet scenarios: routing policies compared on the simulated fleet (filled in below)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def run_safely(quick: bool, workdir: Path, budget_s: float) -> dict[str, Any]:
    return {"available": False, "rows": [], "note": "not available yet"}
