"""Admission control end to end: real gRPC clients, a `fastpath proxy` process, a simulated site with one slot.

The site has one batch slot, so while one long call runs there the proxy has
no headroom and holds every other call: held calls start as the slot frees,
highest x-fastpath-priority first and tenants in turn; a call that can no
longer meet its SLO or grpc-timeout is answered RESOURCE_EXHAUSTED with
grpc-retry-pushback-ms; a held call whose client goes away is forgotten and
never reaches the site. What the client sees (order of first tokens, status,
trailers) and the proxy's /metrics are checked, nothing inside the process.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastpath.config import load_config, parse_config, with_ports
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.ports import free_port
from fastpath.sim.fleet import FleetProcess
from fastpath.sim.llm_request import make_request, text_output

from .test_kserve_fleet import port_block
from tests.support.waiting import wait_for as _wait

from .test_pushed_config import _spawn, _stop

SITE = "use1-l4"
TOKENS_PER_S = 40.0  # a call of n tokens holds the slot ~n/40 s
MODEL = "mistral-7b"


@contextlib.contextmanager
def _proxy(tmp, admission: dict):
    """A simulated site with one slot and a `fastpath proxy` process (no controller) with `admission`."""
    cfg = with_ports(load_config(), port_block(20))
    raw = copy.deepcopy(cfg.raw)
    raw["backends"] = [b for b in raw["backends"] if b["name"] == SITE]
    raw["backends"][0]["sim"].update(slots=1, tokens_per_s=TOKENS_PER_S, prefill_ms=10)
    raw["proxy"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
    raw["admission"] = admission
    cfg = parse_config(raw, "admission test")
    path = cfg.write(tmp / "fastpath.toml")
    listen = f"127.0.0.1:{free_port()}"
    with FleetProcess(cfg):
        p = _spawn(["proxy", "--config", str(path), "--no-controller", "--listen", listen, "--workers", "1"],
                   tmp / "proxy.log")
        try:
            yield {"listen": listen, "metrics": raw["proxy"]["metrics_listen"]}
        finally:
            _stop(p)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    with _proxy(tmp_path_factory.mktemp("admission"), {"max_queue_bytes": 1 << 20, "max_wait_ms": 20000}) as p:
        yield p


class Client:
    """One ModelStreamInfer call on its own thread: when its first token came, how it ended."""

    def __init__(self, listen: str, tokens: int, priority: int | None = None, tenant: str = "",
                 slo_ms: float = 0.0, timeout: float = 30.0, label: str = "", prompt: str = "hello") -> None:
        self.label = label
        self.first_token = 0.0
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailers: dict[str, str] = {}
        self.call = None
        md = [("x-fastpath-region", "us-east")]
        if priority is not None:
            md.append(("x-fastpath-priority", str(priority)))
        if tenant:
            md.append(("x-fastpath-tenant", tenant))
        if slo_ms:
            md.append(("x-fastpath-slo-ttft-ms", f"{slo_ms:g}"))
        self._args = (listen, tokens, md, timeout)
        self._prompt = prompt
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._started.wait(5)

    def _run(self) -> None:
        listen, tokens, md, timeout = self._args
        with grpc.insecure_channel(listen, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            self.call = stub.ModelStreamInfer(iter([make_request(MODEL, f"{self.label} {self._prompt}", tokens)]),
                                              metadata=md, timeout=timeout)
            self._started.set()
            try:
                for msg in self.call:
                    if not self.first_token and text_output(msg.infer_response):
                        self.first_token = time.monotonic()
                self.code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                self.code = e.code()
                self.details = e.details() or ""
            self.trailers = dict(self.call.trailing_metadata() or ())

    def join(self, timeout: float = 30.0) -> "Client":
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"call {self.label} did not end"
        return self


def _metrics(address: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker")))] = s.value
    return out


def _depth(proxy, priority: int) -> float:
    return _metrics(proxy["metrics"]).get(("fastpath_queue_depth", (("priority", str(priority)),)), 0.0)


def _served(proxy) -> float:
    return sum(v for (name, _), v in _metrics(proxy["metrics"]).items() if name == "fastpath_requests_total")


def _occupy(proxy, seconds: float, label: str = "long") -> Client:
    """A call that holds the site's only slot for about `seconds`, once it has its first token."""
    c = Client(proxy["listen"], int(seconds * TOKENS_PER_S), priority=9, label=label)
    _wait(lambda: c.first_token, 10, "the long call's first token")
    return c


def _quiet(proxy) -> None:
    _wait(lambda: all(_depth(proxy, p) == 0 for p in range(10)), 20, "an empty queue")


def test_held_calls_start_by_priority_when_the_slot_frees(proxy):
    _quiet(proxy)
    long = _occupy(proxy, 1.5)
    low1 = Client(proxy["listen"], 4, priority=0, label="low1")
    time.sleep(0.05)
    low2 = Client(proxy["listen"], 4, priority=0, label="low2")
    time.sleep(0.05)
    high = Client(proxy["listen"], 4, priority=7, label="high")
    _wait(lambda: _depth(proxy, 0) == 2 and _depth(proxy, 7) == 1, 5, "two low and one high call held")
    assert not (low1.first_token or low2.first_token or high.first_token)  # nothing overtook the long call
    for c in (long, low1, low2, high):
        c.join()
        assert c.code == grpc.StatusCode.OK, (c.label, c.code, c.details)
    assert long.first_token < high.first_token < low1.first_token < low2.first_token
    assert _depth(proxy, 0) == 0 and _depth(proxy, 7) == 0


def test_tenants_take_turns_within_a_priority(proxy):
    _quiet(proxy)
    long = _occupy(proxy, 1.5)
    calls = []
    for label, tenant in (("a1", "acme"), ("a2", "acme"), ("a3", "acme"), ("b1", "bravo")):
        calls.append(Client(proxy["listen"], 3, priority=1, tenant=tenant, label=label))
        time.sleep(0.05)
    _wait(lambda: _depth(proxy, 1) == 4, 5, "four calls held")
    for c in [long, *calls]:
        c.join()
        assert c.code == grpc.StatusCode.OK, (c.label, c.code, c.details)
    order = [c.label for c in sorted(calls, key=lambda c: c.first_token)]
    assert order == ["a1", "b1", "a2", "a3"]  # bravo's one call does not wait behind acme's burst


def test_calls_that_cannot_meet_their_slo_are_shed_with_pushback(proxy):
    _quiet(proxy)
    shed_before = sum(v for (n, labels), v in _metrics(proxy["metrics"]).items()
                      if n == "fastpath_sheds_total" and ("priority", "2") in labels)
    long = _occupy(proxy, 2.0)
    slo = [Client(proxy["listen"], 4, priority=2, slo_ms=300, label=f"slo{k}") for k in range(4)]
    for c in slo:
        c.join()
    assert long.code is None  # every one answered while the slot was still taken
    for c in slo:
        assert c.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (c.label, c.code, c.details)
        assert "not admitted" in c.details and "retry after" in c.details
        assert int(c.trailers["grpc-retry-pushback-ms"]) > 0
        assert not c.first_token
    long.join()
    assert long.code == grpc.StatusCode.OK
    shed_after = sum(v for (n, labels), v in _metrics(proxy["metrics"]).items()
                     if n == "fastpath_sheds_total" and ("priority", "2") in labels)
    assert shed_after - shed_before == 4
    assert _depth(proxy, 2) == 0


def test_a_held_call_whose_client_cancels_is_forgotten(proxy):
    _quiet(proxy)
    served = _served(proxy)
    long = _occupy(proxy, 1.5)
    gone = Client(proxy["listen"], 4, priority=3, label="gone")
    _wait(lambda: _depth(proxy, 3) == 1, 5, "the call held")
    gone.call.cancel()
    gone.join()
    assert gone.code == grpc.StatusCode.CANCELLED
    _wait(lambda: _depth(proxy, 3) == 0, 5, "the cancelled call out of the queue")
    long.join()
    after = Client(proxy["listen"], 2, priority=3, label="after").join()
    assert long.code == after.code == grpc.StatusCode.OK
    _wait(lambda: _served(proxy) == served + 2, 5, "the long call and the next one counted")
    assert _served(proxy) == served + 2  # the cancelled call never reached the site


def test_a_held_call_past_its_grpc_timeout_is_shed_before_the_client_gives_up(proxy):
    _quiet(proxy)
    served = _served(proxy)
    long = _occupy(proxy, 2.5)
    late = Client(proxy["listen"], 4, priority=4, timeout=1.2, label="late")
    late.join()
    assert late.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (late.code, late.details)
    assert int(late.trailers["grpc-retry-pushback-ms"]) > 0
    assert long.code is None  # still running: the proxy answered, not the client's deadline after the slot freed
    assert _depth(proxy, 4) == 0
    long.join()
    _wait(lambda: _served(proxy) == served + 1, 5, "the long call counted")
    assert _served(proxy) == served + 1  # the shed call never reached the site


def test_a_held_call_gets_no_window_back_until_it_starts(proxy):
    """HTTP/2 flow control holds the client: a held call may send one stream window, and the proxy grants
    no more (no WINDOW_UPDATE on its stream) until the call starts and its bytes go to the site."""
    import struct

    from fastpath.h2 import frames as fr

    from .rawh2 import RawH2, grpc_message

    _quiet(proxy)
    h2 = RawH2(proxy["listen"])
    try:
        # The proxy's own SETTINGS (with its stream window) come once the connection's first call is seen.
        h2.call("/inference.GRPCInferenceService/ServerLive", b"")
        settings = {}
        for ftype, flags, _, payload in h2.read_until(lambda fs: any(
                f[0] == fr.SETTINGS and not f[1] & fr.ACK and fr.SETTINGS_INITIAL_WINDOW_SIZE in
                dict(struct.iter_unpack(">HI", bytes(f[3]))) for f in fs)):
            if ftype == fr.SETTINGS and not flags & fr.ACK:
                settings.update(dict(struct.iter_unpack(">HI", bytes(payload))))
        h2.send(fr.settings_frame(ack=True))
        window = settings[fr.SETTINGS_INITIAL_WINDOW_SIZE]
        max_frame = settings.get(fr.SETTINGS_MAX_FRAME_SIZE, 16384)
        long = _occupy(proxy, 2.0)
        first = grpc_message(make_request(MODEL, "held hello", 2).SerializeToString())
        n = window - len(first) - 200
        second = grpc_message(make_request(MODEL, "x" * n, 1).SerializeToString())
        while len(first) + len(second) > window:  # the most the window allows, never more
            n -= 16
            second = grpc_message(make_request(MODEL, "x" * n, 1).SerializeToString())
        body = first + second
        sid = h2.headers("/inference.GRPCInferenceService/ModelStreamInfer",
                         (("x-fastpath-region", "us-east"), ("x-fastpath-priority", "1")))
        for i in range(0, len(body), max_frame):
            h2.send(fr.data_frame(sid, body[i:i + max_frame]))
        _wait(lambda: _depth(proxy, 1) == 1, 5, "the raw call held")
        assert long.code is None
        held = h2.read(0.5)
        assert not [f for f in held if f[0] == fr.WINDOW_UPDATE and f[2] == sid], "window granted while held"
        assert not [f for f in held if f[2] == sid], "the held call got an answer"
        long.join()
        # Started: its bytes go to the site, and the window comes back as they do.
        h2.read_until(lambda fs: any(f[0] == fr.WINDOW_UPDATE and f[2] == sid for f in fs), 10)
        assert _depth(proxy, 1) == 0
        h2.send(fr.rst_stream_frame(sid, fr.CANCEL))
    finally:
        h2.close()


def test_the_queue_is_bounded_in_bytes_and_a_higher_priority_displaces_the_newest_lower(tmp_path):
    """max_queue_bytes = 2500, calls of ~1 KB: two fit; a third of the same priority is shed (queue full),
    one of a higher priority takes the place of the newest lower one, which is shed (displaced)."""
    with _proxy(tmp_path, {"max_queue_bytes": 2500, "max_wait_ms": 20000}) as px:
        big = "x" * 900
        long = _occupy(px, 2.0)
        a = Client(px["listen"], 2, priority=0, label="a", prompt=big)
        _wait(lambda: _depth(px, 0) == 1, 5, "a held")
        b = Client(px["listen"], 2, priority=0, label="b", prompt=big)
        _wait(lambda: _depth(px, 0) == 2, 5, "b held")
        c = Client(px["listen"], 2, priority=0, label="c", prompt=big).join()
        assert c.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in c.details, (c.code, c.details)
        assert int(c.trailers["grpc-retry-pushback-ms"]) > 0
        h = Client(px["listen"], 2, priority=7, label="h", prompt=big)
        b.join()
        assert b.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "displaced by a priority 7" in b.details, b.details
        assert int(b.trailers["grpc-retry-pushback-ms"]) > 0
        assert long.code is None  # all of it while the slot was taken
        for x in (long, a, h):
            x.join()
            assert x.code == grpc.StatusCode.OK, (x.label, x.code, x.details)
        assert h.first_token < a.first_token
        sheds = {labels: v for (n, labels), v in _metrics(px["metrics"]).items() if n == "fastpath_sheds_total"}
        assert sheds.get((("priority", "0"), ("reason", "queue_full"))) == 1
        assert sheds.get((("priority", "0"), ("reason", "displaced"))) == 1
