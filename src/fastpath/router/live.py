"""What one proxy process observes itself, between two fleet snapshots.

The controller's telemetry is tens of milliseconds old by the time a request
arrives; the proxy's own in-flight counts, first-byte times and failures are
current. The router reads these arrays vectorised alongside the snapshot, so a
burst that lands between two scrapes spreads instead of piling onto the site
that looked idle at the last scrape.
"""
from __future__ import annotations

from typing import Final

import math
import time
from collections.abc import Callable

import numpy as np

FAIL_THRESHOLD: Final = 3  # consecutive failures that put a backend into cool-down
COOLDOWN_S: Final = 2.0  # how long a failing backend is left alone before it is retried
TTFT_ALPHA: Final = 0.2  # weight of the newest first-byte time in the EWMA
ERROR_ALPHA: Final = 0.1  # weight of the newest outcome in the error-rate EWMA
MAX_SESSIONS = 100_000  # remembered session -> backend pairs (oldest forgotten first)
CHANGE_LOG_MAX = 4096  # changed-backend log length before it is cut


class LiveStats:
    """Per-backend counters owned by one proxy process (one event loop: no locks).

    Per-backend lists and arrays are indexed like the config's backends and
    never reallocated, so a router may keep references to them.
    """

    def __init__(
        self,
        n_backends: int,
        *,
        fail_threshold: int = FAIL_THRESHOLD,
        cooldown_s: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if n_backends < 1:
            raise ValueError(f"LiveStats needs at least one backend, got n_backends={n_backends}")
        if fail_threshold < 1:
            raise ValueError(f"fail_threshold must be at least 1, got {fail_threshold}")
        self.n = n_backends
        self.fail_threshold = fail_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        # Written on every call: plain lists (a numpy scalar read or write costs ~100 ns, a list
        # item a few); LoadState turns them into arrays when it recomputes every backend at once.
        self.inflight: list[float] = [0.0] * n_backends
        self.ttft_ewma_ms: list[float] = [0.0] * n_backends  # 0 = nothing observed yet
        self.error_ewma: list[float] = [0.0] * n_backends
        self.consecutive_failures: list[int] = [0] * n_backends
        self.abandoned_in_row: list[int] = [0] * n_backends  # hedged away from, no first byte since
        # Written on failures only, read vectorised by cooling(): an array.
        self.cooldown_until = np.zeros(n_backends, dtype=np.float64)  # clock() time; 0 = not cooling
        self.n_cooling = 0  # backends with cooldown_until set; the router skips the check when 0
        self.sessions: dict[str, int] = {}
        # Backends this proxy has no first-byte time from (new, or back from cool-down or
        # from unhealthy): the router sends them a bounded share of calls to observe them.
        self.unobserved = np.ones(n_backends, dtype=bool)
        self._unobserved_l = [True] * n_backends  # the same, read per call by first_byte()
        self.n_unobserved = n_backends
        # Which backends changed, in order, so a router can update the scores it
        # derives from these arrays row by row instead of recomputing them all.
        self.changes: list[int] = []
        self.changes_base = 0  # position of changes[0] in the whole history

    def _changed(self, i: int) -> None:
        changes = self.changes
        changes.append(i)
        if len(changes) >= CHANGE_LOG_MAX:
            self.changes_base += len(changes)
            changes.clear()

    @property
    def changes_end(self) -> int:
        """Position after the latest change; a reader passes it back to changed_since()."""
        return self.changes_base + len(self.changes)

    def changed_since(self, position: int) -> set[int] | None:
        """Backends changed since `position`; None when the log no longer reaches back
        that far (the reader must recompute every backend)."""
        start = position - self.changes_base
        if start < 0:
            return None
        return set(self.changes[start:])

    def started(self, i: int) -> None:
        """A stream was sent to backend i."""
        self.inflight[i] += 1.0
        self._changed(i)

    def first_byte(self, i: int, ttft_ms: float) -> None:
        """Backend i answered its first byte after ttft_ms (measured by the proxy)."""
        if not (0.0 <= ttft_ms < math.inf):  # rejects NaN, inf and negatives
            return
        ewma = self.ttft_ewma_ms
        old = ewma[i]
        ewma[i] = ttft_ms if old == 0.0 else old + TTFT_ALPHA * (ttft_ms - old)
        self.abandoned_in_row[i] = 0
        if self._unobserved_l[i]:
            self._unobserved_l[i] = False
            self.unobserved[i] = False
            self.n_unobserved -= 1
        self._changed(i)

    def mark_unobserved(self, i: int) -> None:
        """Backend i came back (from cool-down or from unhealthy): what was observed is stale."""
        if not self._unobserved_l[i]:
            self._unobserved_l[i] = True
            self.unobserved[i] = True
            self.n_unobserved += 1

    def finished(self, i: int, ok: bool) -> None:
        """A stream to backend i ended; ok=False when it failed or was refused.

        FAIL_THRESHOLD failures in a row put the backend into cool-down for
        cooldown_s; after that it is tried again, and one more failure sends
        it straight back (the failure count only resets on success).
        """
        inflight = self.inflight
        if inflight[i] >= 1.0:
            inflight[i] -= 1.0
        errors = self.error_ewma
        errors[i] += ERROR_ALPHA * ((0.0 if ok else 1.0) - errors[i])
        self._changed(i)
        if ok:
            self.consecutive_failures[i] = 0
            # n_cooling counts the non-zero entries of cooldown_until: none, nothing to clear.
            if self.n_cooling and self.cooldown_until[i] != 0.0:
                self.cooldown_until[i] = 0.0
                self.n_cooling -= 1
            return
        self.consecutive_failures[i] += 1
        if self.consecutive_failures[i] >= self.fail_threshold:
            if self.cooldown_until[i] == 0.0:
                self.n_cooling += 1
            self.cooldown_until[i] = self.clock() + self.cooldown_s

    def abandoned(self, i: int, waited_ms: float) -> None:
        """A stream to backend i was given up on (hedged) after waited_ms without a first byte.

        Not a failure: health, error rate and cool-down are untouched. A backend only now and
        then late keeps its TTFT estimate (folding each wait in would raise the estimate, and
        with it the next hedge deadline, after every hedge). Once `fail_threshold` attempts in
        a row were given up on with no first byte between them, it looks stalled rather than
        unlucky: each further wait, a lower bound of its TTFT, is folded in, so it is predicted
        late and chosen less until it answers again.
        """
        if self.inflight[i] >= 1.0:
            self.inflight[i] -= 1.0
        n = self.abandoned_in_row[i] + 1
        if n >= self.fail_threshold and waited_ms > self.ttft_ewma_ms[i]:
            self.first_byte(i, waited_ms)
        else:
            self._changed(i)
        self.abandoned_in_row[i] = n

    def remember_session(self, session: str, i: int) -> None:
        """The session's KV cache now lives on backend i (affinity for its next request)."""
        sessions = self.sessions
        if session in sessions:
            del sessions[session]  # re-insert: most recently used last
        elif len(sessions) >= MAX_SESSIONS:
            del sessions[next(iter(sessions))]
        sessions[session] = i

    def cooling(self) -> np.ndarray | None:
        """Boolean mask of backends in cool-down now, or None when there are none."""
        if self.n_cooling == 0:
            return None
        now = self.clock()
        until = self.cooldown_until
        mask = until > now
        expired = (until > 0.0) & ~mask
        if expired.any():
            # These cool-downs have expired: the backends are retried (half-open) and
            # explored again. Their failure counts stay, so one more failure cools them again.
            until[expired] = 0.0
            self.n_cooling = int(np.count_nonzero(mask))
            for i in np.flatnonzero(expired):
                self.mark_unobserved(int(i))
        if self.n_cooling == 0:
            return None
        return mask

    def is_cooling(self, i: int) -> bool:
        return bool(self.cooldown_until[i] > self.clock())
