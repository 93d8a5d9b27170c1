"""One fuzz target under atheris/libFuzzer, as its own process: `python -m tests.fuzz.atheris_child TARGET [libFuzzer flags] [corpus dirs]`.

The parsers are imported inside `instrument_imports`, so libFuzzer sees
their branches (coverage and comparison feedback). libFuzzer ends the
process itself (at -max_total_time, or at the first contract violation,
writing the input to -artifact_prefix), which is why run.py starts one
process per target.
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["fastpath"]):
    from tests.fuzz.registry import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_child TARGET [libFuzzer args]; targets: {', '.join(TARGETS)}")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
