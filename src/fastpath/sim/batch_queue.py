"""The batching queue of a simulated GPU: a finite number of slots, FIFO wait.

A request holds a slot from prefill to its last token, as a sequence does in
vLLM's continuous batching (`max_num_seqs` = slots).  The wait for a slot is
real time, so TTFT grows with load the way it does in the field: barely at
low load, then steeply as arrivals outpace the slots.  A fuller batch also
makes each step slower (`load_factor` for prefill, `decode_factor` for
tokens), so the wall near saturation is steeper than the slot count alone.
"""
from __future__ import annotations

import asyncio
from collections import deque


class BatchQueue:
    """Slots shared by every model a site serves, with per-model running/waiting counts."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots = {slots}: a site needs at least one slot")
        self.slots = slots
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.running_by_model: dict[str, int] = {}
        self.waiting_by_model: dict[str, int] = {}

    @property
    def waiting(self) -> int:
        return sum(self.waiting_by_model.values())

    @property
    def utilisation(self) -> float:
        """ρ: the fraction of slots running."""
        return self.running / self.slots

    def load_factor(self) -> float:
        """How much longer a prefill takes at the current fill: 1 + ρ² (×2 when full)."""
        rho = self.utilisation
        return 1.0 + rho * rho

    def decode_factor(self) -> float:
        """How much slower each decode step is at the current fill: 1 + ρ²/2 (×1.5 when full).

        Gentler than prefill: a fuller batch still makes more tokens per second in total.
        """
        rho = self.utilisation
        return 1.0 + 0.5 * rho * rho

    async def acquire(self, model: str) -> None:
        """Waits (FIFO) for a free slot; on cancellation leaves the queue cleanly."""
        if self.running < self.slots and not self._waiters:
            self._take(model)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.waiting_by_model[model] = self.waiting_by_model.get(model, 0) + 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: give it back.
                self._give_back_handed_slot()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        finally:
            self.waiting_by_model[model] -= 1
        # The slot was reserved for us in release(); record it against our model.
        self.running_by_model[model] = self.running_by_model.get(model, 0) + 1

    def _take(self, model: str) -> None:
        self.running += 1
        self.running_by_model[model] = self.running_by_model.get(model, 0) + 1

    def _give_back_handed_slot(self) -> None:
        self.running -= 1
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters and self.running < self.slots:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self.running += 1  # reserved for the waiter; it records its model on wake-up
            fut.set_result(None)

    def release(self, model: str) -> None:
        """Frees a slot taken by acquire(model) and hands it to the longest waiter."""
        self.running -= 1
        self.running_by_model[model] -= 1
        self._wake_next()
