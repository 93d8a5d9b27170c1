"""Runs every fuzz target for a bounded time and prints a line per target: `python -m tests.fuzz.run --seconds N`.

Each target runs in its own atheris process (libFuzzer owns the process),
one after the other, seeded from tests/fuzz/corpus/<target>/ and growing a
working corpus under --work-dir (kept between runs, so coverage carries
over). An input that breaks a parser's contract is saved under
<work-dir>/crashes/<target>/ and named in the summary; `--reproduce TARGET
FILE` replays one with a plain traceback. Exit status 1 when anything
crashed, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .registry import MAX_LEN, TARGETS
from .seeds import CORPUS, load

ROOT = Path(__file__).resolve().parents[2]
DICTS = Path(__file__).with_name("dicts")
_PULSE = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


@dataclass
class TargetResult:
    target: str
    seconds: float
    executions: int = 0
    execs_per_s: float = 0.0
    coverage: int = 0   # libFuzzer "cov": instrumented edges reached
    features: int = 0   # libFuzzer "ft": coverage features (edges x hit counts, comparisons)
    corpus: int = 0
    crashes: list[str] = field(default_factory=list)
    error: str = ""     # the contract violation (last lines of the traceback)

    def line(self) -> str:
        status = f"CRASH {self.crashes[0]}" if self.crashes else ("ERROR " + self.error if self.error else "ok")
        return (f"{self.target:11s} {self.executions:>9d} execs ({self.execs_per_s:>6.0f}/s) cov {self.coverage:>5d} "
                f"ft {self.features:>6d} corpus {self.corpus:>5d} crashes {len(self.crashes)}  {status}")


def _parse_output(text: str, result: TargetResult) -> None:
    for line in text.splitlines():
        m = _PULSE.match(line)
        if m:
            result.executions = max(result.executions, int(m.group(1)))
            result.coverage, result.features, result.corpus = int(m.group(2)), int(m.group(3)), int(m.group(4))
        m = _STAT.match(line)
        if m and m.group(1) == "number_of_executed_units":
            result.executions = int(m.group(2))


def _violation(text: str) -> str:
    """The assertion that failed, from atheris's "Uncaught Python exception" report."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            return next((l.strip() for l in lines[i + 1 : i + 5] if l.strip()), "")[:600]
    return ""


def fuzz_target(name: str, seconds: float, work_dir: Path, max_len: int | None, log) -> TargetResult:
    """Runs one target for `seconds` under libFuzzer; returns what it did."""
    corpus = work_dir / "corpus" / name
    crashes = work_dir / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    args = [sys.executable, "-m", "tests.fuzz.atheris_child", name, f"-max_total_time={max(1, int(seconds))}",
            f"-artifact_prefix={crashes}/", "-print_final_stats=1", f"-max_len={max_len or MAX_LEN.get(name, 4096)}", "-timeout=20",
            "-rss_limit_mb=2048", "-use_value_profile=1"]
    dict_path = DICTS / f"{name}.dict"
    if dict_path.exists():
        args.append(f"-dict={dict_path}")
    args += [str(corpus), str(CORPUS / name)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    result = TargetResult(name, seconds)
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    out: list[str] = []
    next_note = t0 + 10
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if time.monotonic() >= next_note and _PULSE.match(line):
                log(f"  {name}: {line.strip()}")
                next_note = time.monotonic() + 10
        proc.wait(timeout=seconds + 60)
    except BaseException:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise
    text = "".join(out)
    elapsed = time.monotonic() - t0
    _parse_output(text, result)
    result.execs_per_s = result.executions / max(elapsed, 1e-9)
    result.crashes = sorted(str(p) for p in set(crashes.iterdir()) - before)
    if proc.returncode != 0:
        result.error = _violation(text) or f"libFuzzer exited with {proc.returncode}: " + " | ".join(
            l.strip() for l in out[-5:])
    (work_dir / f"{name}.log").write_text(text)
    return result


def reproduce(name: str, path: Path) -> int:
    """Replays one input through a target, printing the contract violation if there is one."""
    try:
        TARGETS[name](path.read_bytes())
    except Exception:  # noqa: BLE001 - print whatever the target raised
        traceback.print_exc()
        return 1
    print(f"{name}: {path} passes")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="fuzzing time per target (default 30)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {', '.join(TARGETS)}")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "fastpath-fuzz",
                   help="where the growing corpus, crashes and logs are kept (default: %(default)s)")
    p.add_argument("--max-len", type=int, help="longest input libFuzzer tries (default: per target, 1-4 KiB)")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--reproduce", nargs=2, metavar=("TARGET", "FILE"), help="replay one input and exit")
    args = p.parse_args(argv)
    if args.reproduce:
        name, path = args.reproduce
        if name not in TARGETS:
            p.error(f"no target {name!r}; targets are {', '.join(TARGETS)}")
        return reproduce(name, Path(path))
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {unknown}; targets are {', '.join(TARGETS)}")
    if args.seconds < 1:
        p.error("--seconds must be at least 1")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("python -m tests.fuzz.run: atheris is not installed; run `.venv/bin/pip install atheris` "
              "(it is in the `fuzz` extra: pip install -e '.[fuzz]')", file=sys.stderr)
        return 2
    missing = [n for n in names if not load(n)]
    if missing:
        print(f"no seed corpus for {missing}; build it with `python -m tests.fuzz.seeds`", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] fuzzing {name} for {args.seconds:g} s (work dir {args.work_dir})")
        r = fuzz_target(name, args.seconds, args.work_dir, args.max_len, log)
        results.append(r)
        print(r.line(), flush=True)
        if r.error:
            print(f"{'':11s} violation: {r.error}", flush=True)
            if r.crashes:
                print(f"{'':11s} reproduce: python -m tests.fuzz.run --reproduce {name} {r.crashes[0]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    failed = [r.target for r in results if r.crashes or r.error]
    print(f"fuzz: {len(results)} targets, {sum(r.executions for r in results)} executions, "
          f"{'failures in ' + ', '.join(failed) if failed else 'no contract violations'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
