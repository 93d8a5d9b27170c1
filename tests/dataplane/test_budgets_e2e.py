"""Budgets end to end: one controller keeps the ledger, two proxy processes draw on it.

A tenant's calls through the first proxy carry what remains of its token
budget in `x-fastpath-budget-remaining`, shrinking call by call, until the
proxy refuses it with RESOURCE_EXHAUSTED naming the budget; the second proxy,
which never served that tenant, refuses it too once the controller pushed
the remainder. Other tenants go on being served.
"""
from __future__ import annotations

import copy

import grpc
import pytest

from fastpath.config import load_config, parse_config, with_ports
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port
from fastpath.sim.fleet import FleetProcess
from fastpath.sim.llm_request import make_request

from .test_kserve_fleet import port_block
from tests.support.waiting import wait_for as _wait

from .test_pushed_config import _spawn, _stop

SITES = ["use1-a100", "use1-l4"]
BUDGET_TOKENS = 1500


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    cfg = with_ports(load_config(), port_block(20))
    raw = copy.deepcopy(cfg.raw)
    raw["backends"] = [b for b in raw["backends"] if b["name"] in SITES]
    raw["control"]["scrape_interval_ms"] = 50
    raw["budgets"] = {"acme": {"tokens": BUDGET_TOKENS, "window_s": 3600},
                      "bravo": {"tokens": 10_000_000, "dollars": 100.0, "window_s": 3600}}
    cfg = parse_config(raw, "budgets test")
    path = cfg.write(tmp / "fastpath.toml")
    with FleetProcess(cfg):
        procs = [_spawn(["controller", "--config", str(path)], tmp / "controller.log")]
        try:
            proxies = []
            for i in range(2):
                listen = f"127.0.0.1:{free_port()}"
                procs.append(_spawn(["proxy", "--config", str(path), "--listen", listen, "--workers", "1"],
                                    tmp / f"proxy{i}.log"))
                proxies.append(listen)
            yield proxies
        finally:
            for p in reversed(procs):
                _stop(p)


def _call(listen: str, tenant: str, tokens: int = 16):
    """(status code, details, trailers) of one ModelInfer as `tenant` through the proxy at `listen`."""
    md = [("x-fastpath-region", "us-east")] + ([("x-fastpath-tenant", tenant)] if tenant else [])
    with grpc.insecure_channel(listen, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        try:
            _, call = stub.ModelInfer.with_call(make_request("mistral-7b", "what is left of my budget " * 8, tokens),
                                                metadata=md, timeout=10)
            return grpc.StatusCode.OK, "", dict(call.trailing_metadata())
        except grpc.RpcError as e:
            return e.code(), e.details() or "", dict(e.trailing_metadata() or ())


def _remaining(trailers: dict[str, str]) -> dict[str, float]:
    return {k: float(v) for k, v in (kv.split("=", 1) for kv in trailers["x-fastpath-budget-remaining"].split(";"))}


def test_a_budget_spent_through_one_proxy_is_refused_by_the_other(stack):
    first, second = stack
    # Both proxies follow the controller before any budget is used (the second serves bravo).
    assert _call(second, "bravo")[0] == grpc.StatusCode.OK
    left = []
    refused = None
    for _ in range(40):
        code, details, trailers = _call(first, "acme")
        if code != grpc.StatusCode.OK:
            refused = (code, details)
            break
        left.append(_remaining(trailers)["tokens"])
    assert refused is not None, f"acme was never refused; remaining after each call: {left}"
    assert refused[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "acme" in refused[1] and f"token budget of {BUDGET_TOKENS}" in refused[1]
    assert left[0] < BUDGET_TOKENS and len(left) >= 3
    # Every call is charged at once; a push the controller built before this proxy's last report
    # arrived may hand back one call's worth for a moment (the documented report-and-push lag).
    steps = [a - b for a, b in zip(left, left[1:])]
    assert sum(step > 0 for step in steps) >= len(steps) - 1, left
    assert left[-1] < left[0] * 0.2, left

    # The second proxy never served acme: it learns the remainder from the controller's push.
    def second_refuses():
        code, details, _ = _call(second, "acme")
        return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "token budget" in details and details

    served_before = 0

    def count():
        nonlocal served_before
        got = second_refuses()
        if not got:
            served_before += 1
        return got

    _wait(count, 10, "the second proxy to refuse acme")
    assert served_before <= 2  # at most what it served between the first proxy's report and the push

    # Tenants with budget left, and calls without a tenant, are served by both.
    for listen in stack:
        code, details, trailers = _call(listen, "bravo")
        assert code == grpc.StatusCode.OK, details
        rem = _remaining(trailers)
        assert rem["tokens"] > 9_000_000 and 0 < rem["dollars"] < 100.0
        code, _, trailers = _call(listen, "")
        assert code == grpc.StatusCode.OK and "x-fastpath-budget-remaining" not in trailers
