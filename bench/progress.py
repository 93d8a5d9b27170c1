"""A progress bar on stderr for long benchmark runs (a line per step when stderr is not a terminal)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str = "bench", stream=None):
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def set_total(self, total: int) -> None:
        self.total = max(1, total, self.done)

    def step(self, what: str) -> None:
        self.done += 1
        self.show(what)

    def show(self, what: str) -> None:
        frac = min(1.0, self.done / self.total)
        elapsed = time.monotonic() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        width = 28
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s eta {eta:4.0f}s  {what}"
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message that stays on screen above the bar."""
        if self.tty:
            self.stream.write("\r" + " " * 160 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
