"""Per-tenant token and dollar budgets, kept by the controller so every proxy draws on one ledger.

Input tokens are estimated from the prompt's bytes (BYTES_PER_TOKEN, as the
proxy never tokenizes), output tokens are counted from the streamed
responses, and both are priced with the serving backend's cost per 1k
tokens. A budget is a window (e.g. a day) with a token limit, a dollar limit,
or both; a tenant over either is refused with RESOURCE_EXHAUSTED naming the
budget, and calls carry what remains in a trailer. Pure: time comes in.
"""
from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_TOKEN = 4.0  # a rough figure for English text; only used to estimate input tokens


@dataclass(frozen=True)
class Budget:
    tenant: str
    tokens: float = 0.0  # per window; 0 = no token limit
    dollars: float = 0.0  # per window; 0 = no dollar limit
    window_s: float = 86400.0


@dataclass
class _Spent:
    window_start: float
    tokens: float = 0.0
    dollars: float = 0.0


def input_tokens(prompt_bytes: int) -> float:
    return prompt_bytes / BYTES_PER_TOKEN


class BudgetLedger:
    def __init__(self, budgets: dict[str, Budget]) -> None:
        self.budgets = dict(budgets)
        self._spent: dict[str, _Spent] = {}

    def _window(self, tenant: str, now: float) -> _Spent | None:
        b = self.budgets.get(tenant)
        if b is None:
            return None
        s = self._spent.get(tenant)
        if s is None or now - s.window_start >= b.window_s:
            s = self._spent[tenant] = _Spent(now if s is None else s.window_start
                                             + b.window_s * ((now - s.window_start) // b.window_s))
        return s

    def charge(self, tenant: str, prompt_bytes: int, output_tokens: int, cost_per_1k_tokens: float,
               now: float) -> None:
        """One finished call: its estimated input and counted output tokens, priced at its backend."""
        s = self._window(tenant, now)
        if s is None:
            return
        tokens = input_tokens(prompt_bytes) + output_tokens
        s.tokens += tokens
        s.dollars += tokens * cost_per_1k_tokens / 1000.0

    def remaining(self, tenant: str, now: float) -> tuple[float | None, float | None]:
        """(tokens left, dollars left) in the current window; None where there is no such limit."""
        s = self._window(tenant, now)
        if s is None:
            return None, None
        b = self.budgets[tenant]
        return (max(0.0, b.tokens - s.tokens) if b.tokens else None,
                max(0.0, b.dollars - s.dollars) if b.dollars else None)

    def admit(self, tenant: str, now: float) -> str:
        """"" when the tenant may send another call; else why not (for RESOURCE_EXHAUSTED)."""
        tokens, dollars = self.remaining(tenant, now)
        b = self.budgets.get(tenant)
        if b is None:
            return ""
        if tokens is not None and tokens <= 0.0:
            return f"tenant {tenant!r} has used its token budget of {b.tokens:g} per {b.window_s:g} s"
        if dollars is not None and dollars <= 0.0:
            return f"tenant {tenant!r} has used its dollar budget of {b.dollars:g} per {b.window_s:g} s"
        return ""

    def trailer(self, tenant: str, now: float) -> bytes:
        """Value of an x-fastpath-budget-remaining trailer: "tokens=N;dollars=X" (limits only)."""
        tokens, dollars = self.remaining(tenant, now)
        parts = []
        if tokens is not None:
            parts.append(b"tokens=%d" % int(tokens))
        if dollars is not None:
            parts.append(b"dollars=%.4f" % dollars)
        return b";".join(parts)
