"""Per-tenant budgets: tokens estimated in, counted out, priced per backend; exhausted budgets are named."""
from __future__ import annotations

import pytest

from fastpath.config import ConfigError, parse_config
from fastpath.control.budgets import BudgetLedger


def config(budgets):
    return parse_config({"budgets": budgets, "backends": [
        {"name": "a", "address": "127.0.0.1:1", "region": "r", "cost_per_1k_tokens": 2.0,
         "power_budget_watts": 0, "models": ["m"]}]}, "<budgets>")


def test_token_budget_runs_out_and_renews_with_the_window():
    cfg = config({"acme": {"tokens": 1000, "window_s": 60}})
    ledger = BudgetLedger(cfg.budgets)
    assert ledger.admit("acme", 0.0) == "" and ledger.trailer("acme", 0.0) == b"tokens=1000"
    ledger.charge("acme", prompt_bytes=2000, output_tokens=300, cost_per_1k_tokens=2.0, now=1.0)  # 500 in + 300 out
    assert ledger.remaining("acme", 2.0) == (200.0, None)
    ledger.charge("acme", prompt_bytes=400, output_tokens=100, cost_per_1k_tokens=2.0, now=3.0)
    why = ledger.admit("acme", 4.0)
    assert "acme" in why and "token budget of 1000 per 60 s" in why
    assert ledger.admit("acme", 61.0) == ""  # a new window
    assert ledger.admit("nobody", 0.0) == "" and ledger.remaining("nobody", 0.0) == (None, None)


def test_dollar_budget_prices_tokens_at_the_serving_backend():
    ledger = BudgetLedger(config({"acme": {"dollars": 1.0}}).budgets)
    ledger.charge("acme", prompt_bytes=0, output_tokens=400, cost_per_1k_tokens=2.0, now=0.0)  # $0.80
    assert ledger.trailer("acme", 0.0) == b"dollars=0.2000" and ledger.admit("acme", 0.0) == ""
    ledger.charge("acme", prompt_bytes=0, output_tokens=100, cost_per_1k_tokens=2.0, now=0.0)
    assert "dollar budget of 1" in ledger.admit("acme", 0.0)


def test_a_budget_without_limits_is_a_config_error():
    with pytest.raises(ConfigError, match="budgets.acme"):
        config({"acme": {"window_s": 10}})


def test_a_proxy_view_counts_its_own_calls_at_once_and_takes_the_controllers_remainders():
    from fastpath.control.budgets import BudgetView

    view = BudgetView(config({"acme": {"tokens": 1000, "dollars": 5.0}}).budgets)
    assert view.remaining("acme", 0.0) == (1000.0, 5.0)  # before any push: its own ledger
    view.charge("acme", 300.0, 0.6, 1.0)
    assert view.remaining("acme", 1.0) == (700.0, pytest.approx(4.4))
    view.pushed("acme", 100.0, 3.0)  # other proxies used most of it
    view.charge("acme", 60.0, 0.1, 2.0)
    assert view.remaining("acme", 2.0) == (40.0, pytest.approx(2.9)) and view.refusal("acme", 2.0) == ""
    view.charge("acme", 60.0, 0.1, 3.0)
    assert "token budget of 1000" in view.refusal("acme", 3.0)
    view.pushed("acme", 0.0, 2.0)
    assert "acme" in view.refusal("acme", 4.0) and view.refusal("nobody", 4.0) == ""


def test_the_ledger_says_when_usage_runs_a_budget_out_and_pushes_remainders():
    from fastpath.control.budgets import budget_resources

    ledger = BudgetLedger(config({"acme": {"tokens": 100, "window_s": 60}}).budgets)
    assert not ledger.add("acme", 60.0, 0.1, 0.0)
    assert ledger.add("acme", 60.0, 0.1, 1.0)  # crosses the limit: pushed at once
    assert not ledger.add("acme", 1.0, 0.0, 2.0)  # already out
    r = budget_resources(ledger, 2.0, 1000.0)["budget", "acme"]
    assert (r.type, r.budget.tokens_limit, r.budget.tokens_remaining, r.budget.dollars_limit) == ("budget", 100, 0, 0)
    assert r.budget.window_ends_unix_ms == (1000 + 58) * 1000
