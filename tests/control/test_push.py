"""Pushed configuration: the controller's deltas rebuild its state exactly on the subscriber's side."""
from __future__ import annotations

import asyncio

import grpc
from hypothesis import given, settings, strategies as st

from control_support import MetricsServer, ReadyServer, eventually, make_config

from fastpath.control.auth import metadata
from fastpath.control.controller import Controller
from fastpath.control.fleet_state import FleetState
from fastpath.control.health import HealthState
from fastpath.control.policies import PolicyStore
from fastpath.control.push import Subscription, config_resources
from fastpath.control.pushed_state import PushedState
from fastpath.control.scraper import BackendMetrics
from fastpath.control.watcher import FleetWatcher
from fastpath.gen import control_pb2 as pb
from fastpath.gen import control_pb2_grpc

CONTROL_MD = metadata(__import__("os").environ["FASTPATH_CONTROL_TOKEN"])
NAMES = ["a", "b", "c"]


def _state(session_capacity: int = 8) -> tuple[FleetState, PolicyStore]:
    cfg = make_config([{"name": n, "address": f"127.0.0.1:{i + 1}"} for i, n in enumerate(NAMES)])
    state = FleetState(cfg, {n: BackendMetrics(has_metrics=False) for n in NAMES},
                       {n: HealthState(healthy=True, detail="", probed=True) for n in NAMES},
                       session_capacity=session_capacity)
    return state, PolicyStore(cfg)


ops = st.lists(st.tuples(st.sampled_from(["obs", "push", "policy"]), st.integers(0, 20), st.sampled_from(NAMES),
                         st.booleans()), max_size=80)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_deltas_rebuild_the_controllers_state_exactly(script) -> None:
    """Whatever the order of observations, evictions and pushes, the subscriber ends up with the controller's map."""
    async def main() -> None:
        state, policies = _state()
        sub, held = Subscription("p"), PushedState()
        held.apply(sub.next_update(state, config_resources(state.config, policies), 1))
        for op, k, backend, ok in script:
            if op == "obs":
                state.observe(pb.Observation(backend=backend, session=f"s{k}", ttft_ms=10, ok=ok), "p")
            elif op == "policy":
                policies.set(pb.Policy(name=f"p{k % 3}", ttft=k + 1, cost=1))
            else:
                held.apply(sub.next_update(state, config_resources(state.config, policies), 1))
                assert held.sessions == dict(state.sessions)
        held.apply(sub.next_update(state, config_resources(state.config, policies), 1))
        assert held.sessions == dict(state.sessions)
        assert sorted(held.named("policy")) == sorted(policies.policies)
        assert held.policy_list() == policies.to_message()
        assert sorted(held.named("telemetry")) == NAMES

    asyncio.run(main())


def test_a_subscriber_behind_the_session_log_gets_the_full_state() -> None:
    async def main() -> None:
        state, policies = _state(session_capacity=4)
        sub, held = Subscription("p"), PushedState()
        first = sub.next_update(state, config_resources(state.config, policies), 1)
        assert first.full_state
        held.apply(first)
        quiet = sub.next_update(state, config_resources(state.config, policies), 1)
        assert not quiet.full_state and not quiet.resources and not quiet.removed  # a heartbeat
        state.observe(pb.Observation(backend="a", session="x", ttft_ms=5, ok=True), "p")
        delta = sub.next_update(state, config_resources(state.config, policies), 1)
        assert not delta.full_state
        assert [(r.type, r.name, r.session_backend) for r in delta.resources if r.type == "session"] == [("session", "x", "a")]
        for i in range(state.session_log.maxlen + 10):  # more changes than the log holds
            state.observe(pb.Observation(backend=NAMES[i % 3], session=f"s{i}", ttft_ms=5, ok=True), "p")
        caught_up = sub.next_update(state, config_resources(state.config, policies), 1)
        assert caught_up.full_state
        held.apply(caught_up)
        assert held.sessions == dict(state.sessions) and len(held.sessions) == 4

    asyncio.run(main())


def test_resource_types_filter_and_unknown_types_are_kept_apart() -> None:
    async def main() -> None:
        state, policies = _state()
        sub = Subscription("p", ["policy"])
        msg = sub.next_update(state, config_resources(state.config, policies), 1)
        assert {r.type for r in msg.resources} == {"policy"}
        held = PushedState()
        ch = held.apply(pb.ConfigUpdate(version=1, full_state=True, resources=[
            pb.Resource(type="x-future-kind", name="abc", payload=b"\x01")]))
        assert ch.other == {"x-future-kind"} and not ch.config and not ch.policies
        assert held.named("x-future-kind")["abc"].payload == b"\x01"

    asyncio.run(main())


def test_reconnect_gets_a_full_resync_with_what_changed_meanwhile() -> None:
    async def main() -> None:
        ready = await ReadyServer().start()
        metrics = await MetricsServer('vllm:num_requests_running{model_name="m"} 1\n').start()
        cfg = make_config([{"name": "a", "address": ready.address, "metrics_url": metrics.url}])
        got: list[pb.ConfigUpdate] = []
        ctl = Controller(cfg)
        await ctl.start()
        w = FleetWatcher(ctl.address, "proxy-r", lambda v: None, on_push=got.append, backoff_max_s=0.2)
        task = asyncio.create_task(w.run())
        try:
            await eventually(lambda: w.connected and w.state.named("telemetry"), what="first update")
            assert got[0].full_state and all(not m.full_state for m in got[1:])
            address = ctl.address
            await ctl.stop()
            await eventually(lambda: not w.connected, what="the watcher sees the controller go")
            before = len(got)
            ctl = Controller(cfg, listen=address)
            ctl.state.observe(pb.Observation(backend="a", session="while-away", ttft_ms=9, ok=True), "other")
            await ctl.start()
            await eventually(lambda: w.connected and len(got) > before, timeout_s=15, what="reconnected")
            assert got[before].full_state
            assert w.state.full_updates == 2
            await eventually(lambda: w.state.sessions.get("while-away") == "a", what="session in the resync")
            assert w.latest.session_backend["while-away"] == "a"
        finally:
            await w.close()
            await asyncio.wait_for(task, 10)
            await ctl.stop()
            await metrics.stop()
            await ready.stop()

    asyncio.run(main())


def test_a_policy_change_is_pushed_to_three_subscribers_from_one_host() -> None:
    async def main() -> None:
        cfg = make_config([{"name": "a", "address": "127.0.0.1:1"}])
        async with Controller(cfg) as ctl:
            seen: dict[str, list[pb.PolicyList]] = {f"worker-{i}": [] for i in range(3)}
            watchers = [FleetWatcher(ctl.address, pid, lambda v: None, on_policies=lst.append)
                        for pid, lst in seen.items()]
            tasks = [asyncio.create_task(w.run()) for w in watchers]
            try:
                await eventually(lambda: all(seen.values()) and len(ctl.subscriptions) == 3, what="3 subscribers")
                async with grpc.aio.insecure_channel(ctl.address) as ch:
                    await control_pb2_grpc.ControlStub(ch).SetPolicy(pb.Policy(name="green", cost=1), metadata=CONTROL_MD)
                    await eventually(lambda: all(any(p.name == "green" for p in lst[-1].policies) for lst in seen.values()),
                                     what="green on every subscriber")
                    status = await control_pb2_grpc.ControlStub(ch).GetStatus(pb.StatusRequest())
                assert {p.proxy_id for p in status.proxies if p.subscribed} == set(seen)
            finally:
                for w in watchers:
                    await w.close()
                await asyncio.gather(*tasks)

    asyncio.run(main())


def test_pushed_backends_keep_the_proxys_indices_when_one_leaves_and_one_joins() -> None:
    base = make_config([{"name": n, "address": f"127.0.0.1:{i + 1}"} for i, n in enumerate(NAMES)])
    edited = make_config([{"name": n, "address": f"127.0.0.1:{i + 10}"} for i, n in enumerate(["c", "d", "a"])])
    held = PushedState()
    held.apply(pb.ConfigUpdate(version=1, full_state=True,
                               resources=list(config_resources(edited, PolicyStore(edited)).values())))
    cfg = held.config(base, keep=["a", "b", "c", "d"])
    assert [b.name for b in cfg.backends] == ["a", "b", "c", "d"]  # b left but keeps its place; d is appended
    assert cfg.backend("a").address == "127.0.0.1:12" and cfg.backend("b").address == "127.0.0.1:2"
    broken = PushedState()
    broken.apply(pb.ConfigUpdate(version=2, full_state=True, resources=[
        pb.Resource(type="backend", name="x", backend=pb.BackendSpec(name="x", address="nohost", region="r",
                                                                      models=["m"]))]))
    import pytest

    from fastpath.config import ConfigError

    with pytest.raises(ConfigError, match="host:port"):
        broken.config(base, keep=["x"])


def test_reload_needs_the_token_removes_a_backend_and_its_sessions_and_refuses_fixed_keys(tmp_path) -> None:
    async def main() -> None:
        ready = await ReadyServer().start()
        metrics = await MetricsServer('vllm:num_requests_running{model_name="m"} 2\n').start()
        cfg = make_config([{"name": "a", "address": ready.address, "metrics_url": metrics.url},
                           {"name": "b", "address": ready.address}])
        path = cfg.write(tmp_path / "c.toml")
        async with Controller(cfg, config_path=str(path)) as ctl:
            w = FleetWatcher(ctl.address, "proxy-reload", lambda v: None)
            task = asyncio.create_task(w.run())
            try:
                ctl.state.observe(pb.Observation(backend="b", session="on-b", ttft_ms=5, ok=True), "p")
                ctl.state.bump()
                await eventually(lambda: w.state.sessions.get("on-b") == "b", what="session on b pushed")
                async with grpc.aio.insecure_channel(ctl.address) as ch:
                    stub = control_pb2_grpc.ControlStub(ch)
                    try:
                        await stub.Reload(pb.ReloadRequest())
                        raise AssertionError("Reload without the token was accepted")
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                    data = dict(cfg.raw)
                    data["backends"] = [cfg.raw["backends"][0]]
                    from fastpath.config import parse_config

                    parse_config(data).write(path)
                    reply = await stub.Reload(pb.ReloadRequest(), metadata=CONTROL_MD)
                    assert reply.applied and "backends removed ['b']" in reply.message, reply.message
                    await eventually(lambda: "b" not in w.state.named("backend") and "on-b" not in w.state.sessions,
                                     what="b and its session removed on the subscriber")
                    assert ctl.state.sessions.get("on-b") is None
                    before = ctl.scraper.metrics["a"].scrapes
                    await eventually(lambda: ctl.scraper.metrics["a"].scrapes > before + 2, what="a still scraped")
                    data["control"] = dict(cfg.raw["control"], listen="127.0.0.1:1")
                    parse_config(data).write(path)
                    reply = await stub.Reload(pb.ReloadRequest(), metadata=CONTROL_MD)
                    assert not reply.applied and "control.listen cannot change" in reply.message
                    assert reply.config_generation == 2
            finally:
                await w.close()
                await asyncio.wait_for(task, 10)
        await metrics.stop()
        await ready.stop()

    asyncio.run(main())
