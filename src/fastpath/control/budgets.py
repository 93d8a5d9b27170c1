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
from typing import Any

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
        tokens = input_tokens(prompt_bytes) + output_tokens
        self.add(tenant, tokens, tokens * cost_per_1k_tokens / 1000.0, now)

    def add(self, tenant: str, tokens: float, dollars: float, now: float) -> bool:
        """Usage already priced (what proxies report); True when it used up one of the tenant's budgets."""
        s = self._window(tenant, now)
        if s is None:
            return False
        b = self.budgets[tenant]
        before = (b.tokens and s.tokens >= b.tokens) or (b.dollars and s.dollars >= b.dollars)
        s.tokens += tokens
        s.dollars += dollars
        after = (b.tokens and s.tokens >= b.tokens) or (b.dollars and s.dollars >= b.dollars)
        return bool(after and not before)

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
        b = self.budgets.get(tenant)
        return "" if b is None else refusal(b, *self.remaining(tenant, now))

    def trailer(self, tenant: str, now: float) -> bytes:
        """Value of an x-fastpath-budget-remaining trailer: "tokens=N;dollars=X" (limits only)."""
        return trailer_value(*self.remaining(tenant, now))

    def window_end(self, tenant: str, now: float) -> float:
        """When the tenant's current window ends (0 without a budget)."""
        s = self._window(tenant, now)
        return 0.0 if s is None else s.window_start + self.budgets[tenant].window_s


def budget_resources(ledger: BudgetLedger, now: float, wall: float) -> dict[tuple[str, str], Any]:
    """The ledger as "budget" resources of the pushed stream (one per tenant)."""
    from fastpath.gen import control_pb2 as pb

    out = {}
    for tenant, b in ledger.budgets.items():
        tokens, dollars = ledger.remaining(tenant, now)
        end = ledger.window_end(tenant, now)
        out["budget", tenant] = pb.Resource(type="budget", name=tenant, budget=pb.BudgetState(
            tenant=tenant, tokens_limit=b.tokens, tokens_remaining=tokens or 0.0, dollars_limit=b.dollars,
            dollars_remaining=dollars or 0.0, window_s=b.window_s, window_ends_unix_ms=int(round(wall + end - now)) * 1000))
    return out


def refusal(b: Budget, tokens: float | None, dollars: float | None) -> str:
    """"" while both remainders are positive; else the RESOURCE_EXHAUSTED message naming the budget."""
    if tokens is not None and tokens <= 0.0:
        return f"tenant {b.tenant!r} has used its token budget of {b.tokens:g} per {b.window_s:g} s"
    if dollars is not None and dollars <= 0.0:
        return f"tenant {b.tenant!r} has used its dollar budget of {b.dollars:g} per {b.window_s:g} s"
    return ""


def trailer_value(tokens: float | None, dollars: float | None) -> bytes:
    parts = []
    if tokens is not None:
        parts.append(b"tokens=%d" % int(tokens))
    if dollars is not None:
        parts.append(b"dollars=%.4f" % dollars)
    return b";".join(parts)


class BudgetView:
    """A proxy's view of the shared ledger: the controller's latest pushed remainders, minus
    what this proxy charged since that push arrived.

    Without a controller (or before its first push for a tenant) a local ledger stands in, so a
    single proxy still enforces its budgets. Consistency: the controller learns usage from each
    proxy's reports (every ~0.1 s) and pushes remainders back (at once when a budget runs out,
    else with the next update, <= 1 s); a proxy's own calls count at once. So the fleet may
    overshoot a budget by the usage of calls already admitted when it ran out (calls in flight
    are not stopped) plus what other proxies charged within one report-and-push delay.
    """

    def __init__(self, budgets: dict[str, Budget]) -> None:
        self.budgets = budgets
        self.local = BudgetLedger(budgets)
        self._pushed: dict[str, tuple[float | None, float | None]] = {}
        self._since: dict[str, list[float]] = {}  # tenant -> [tokens, dollars] charged since the push

    def pushed(self, tenant: str, tokens: float | None, dollars: float | None) -> None:
        self._pushed[tenant] = (tokens, dollars)
        self._since[tenant] = [0.0, 0.0]

    def charge(self, tenant: str, tokens: float, dollars: float, now: float) -> None:
        if tenant not in self.budgets:
            return
        self.local.add(tenant, tokens, dollars, now)
        since = self._since.get(tenant)
        if since is not None:
            since[0] += tokens
            since[1] += dollars

    def remaining(self, tenant: str, now: float) -> tuple[float | None, float | None]:
        p = self._pushed.get(tenant)
        if p is None:
            return self.local.remaining(tenant, now)
        since = self._since[tenant]
        return (None if p[0] is None else max(0.0, p[0] - since[0]),
                None if p[1] is None else max(0.0, p[1] - since[1]))

    def refusal(self, tenant: str, now: float) -> str:
        b = self.budgets.get(tenant)
        return "" if b is None else refusal(b, *self.remaining(tenant, now))
