"""Model switching through the proxy with real gRPC: a substitute backend receives exactly the request
with model_name changed, in every message, and the client is told which model served it."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from fastpath.config import parse_config
from fastpath.dataplane.proxy import Proxy
from fastpath.gen import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
INFER = f"/{SERVICE}/ModelInfer"
STREAM = f"/{SERVICE}/ModelStreamInfer"
OPT_IN = ("x-fastpath-allow-substitute", "true")
NEAR = ("x-fastpath-region", "near")


def _ident(x: bytes) -> bytes:
    return x


@dataclass
class RecordingSite:
    """A real grpc.aio KServe endpoint that keeps the raw bytes of every request message it gets."""

    name: str
    refuse: bool = False  # answer UNAVAILABLE before reading anything (the proxy fails over)
    received: list[list[bytes]] = field(default_factory=list)  # per call, its request messages
    server: Any = None
    port: int = 0

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 << 20)])
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self.infer, _ident, _ident),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.stream, _ident, _ident),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server

    def _reply(self, raw: bytes) -> bytes:
        req = pb.ModelInferRequest.FromString(raw)
        return pb.ModelInferResponse(model_name=req.model_name, id=self.name).SerializeToString()

    async def infer(self, request: bytes, context) -> bytes:
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "refusing")
        self.received.append([request])
        return self._reply(request)

    async def stream(self, request_iterator, context):
        if self.refuse:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "refusing")
        got: list[bytes] = []
        self.received.append(got)
        async for raw in request_iterator:
            got.append(raw)
            yield pb.ModelInferResponse(id=self.name).SerializeToString()
        yield self._reply(got[-1]) if got else b""


class Fleet:
    """Recording sites behind a real proxy: "near-*" sites 1 ms from region near, "far-*" 80 ms."""

    def __init__(self, loop_thread, sites: dict[str, tuple[str, ...]], policies: dict | None = None) -> None:
        self.loop = loop_thread
        self.sites = {n: RecordingSite(n) for n in sites}
        for s in self.sites.values():
            self.loop.run(s.start())
        raw: dict[str, Any] = {
            "proxy": {"listen": "127.0.0.1:0", "metrics_listen": ""},
            "router": {"explore_every": 0},
            "regions": {"rtt_ms": {"near": {"r1": 1.0, "r2": 80.0}, "far": {"r1": 80.0, "r2": 1.0}}},
            "model_groups": {"big": {"substitutes": ["small"], "penalty": 0.1}},
            "backends": [{"name": n, "address": f"127.0.0.1:{self.sites[n].port}",
                          "region": "r1" if n.startswith("near") else "r2", "cost_per_1k_tokens": 1.0,
                          "models": list(models)} for n, models in sites.items()],
        }
        if policies:
            raw["policies"] = policies
        cfg = parse_config(raw, "<model switch test>")

        async def go() -> Proxy:
            proxy = Proxy(cfg)
            host, port = await proxy.start()
            self.address = f"{host}:{port}"
            return proxy

        self.proxy: Proxy = self.loop.run(go())
        self.channel = grpc.insecure_channel(self.address, options=[("grpc.enable_retries", 0),
                                                                    ("grpc.max_send_message_length", 8 << 20)])

    def infer(self, req: pb.ModelInferRequest, metadata=(NEAR, OPT_IN)):
        call = self.channel.unary_unary(INFER, request_serializer=_ident, response_deserializer=_ident)
        raw, c = call.with_call(req.SerializeToString(), metadata=metadata, timeout=10)
        return pb.ModelInferResponse.FromString(raw), dict(c.trailing_metadata())

    def stream(self, reqs: list[pb.ModelInferRequest], metadata=(NEAR, OPT_IN)):
        call = self.channel.stream_stream(STREAM, request_serializer=_ident, response_deserializer=_ident)
        it = call(iter([r.SerializeToString() for r in reqs]), metadata=metadata, timeout=20)
        out = [pb.ModelInferResponse.FromString(m) for m in it]
        return out, dict(it.trailing_metadata())

    def close(self) -> None:
        self.channel.close()
        self.loop.run(self.proxy.drain(0.5))
        for s in self.sites.values():
            self.loop.run(s.server.stop(0))


@pytest.fixture
def fleet(loop_thread):
    made: list[Fleet] = []

    def make(sites: dict[str, tuple[str, ...]], **kw) -> Fleet:
        f = Fleet(loop_thread, sites, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def request(model: str, prompt: bytes, request_id: str = "r1", raw: bytes = b"") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version="1", id=request_id)
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(prompt)
    req.parameters["max_tokens"].int64_param = 8
    if raw:
        req.raw_input_contents.append(raw)
    return req


def as_served(req: pb.ModelInferRequest, model: str) -> bytes:
    """The expected encoding: the same request naming `model` (protobuf writes field 1 first)."""
    out = pb.ModelInferRequest()
    out.CopyFrom(req)
    out.model_name = model
    return out.SerializeToString()


TWO_SITES = {"near-small": ("small",), "far-big": ("big",)}


def test_unary_call_served_by_a_nearer_substitute_is_rewritten_byte_exact(fleet):
    f = fleet(TWO_SITES)
    req = request("big", b"hello " * 20)
    resp, trailers = f.infer(req)
    near, far = f.sites["near-small"], f.sites["far-big"]
    assert near.received == [[as_served(req, "small")]] and far.received == []
    assert near.received[0][0] != req.SerializeToString()
    assert resp.model_name == "small" and resp.id == "near-small"
    assert trailers["x-fastpath-served-model"] == "small"
    assert trailers["x-fastpath-backend"] == "near-small"
    assert ";served=small" in trailers["x-fastpath-decision"]
    m = f.loop.call(lambda: dict(f.proxy.metrics.substitutions))
    assert m == {("big", "small"): 1}


def test_without_the_opt_in_the_request_is_untouched_and_goes_to_its_model(fleet):
    f = fleet(TWO_SITES)
    req = request("big", b"hello")
    resp, trailers = f.infer(req, metadata=(NEAR,))
    assert f.sites["far-big"].received == [[req.SerializeToString()]]
    assert f.sites["near-small"].received == []
    assert "x-fastpath-served-model" not in trailers and "served=" not in trailers["x-fastpath-decision"]
    resp, trailers = f.infer(req, metadata=(NEAR, ("x-fastpath-allow-substitute", "false")))
    assert f.sites["far-big"].received[-1] == [req.SerializeToString()] and "x-fastpath-served-model" not in trailers


def test_every_message_of_a_stream_is_rewritten(fleet):
    f = fleet(TWO_SITES)
    reqs = [request("big", b"turn %d " % k * (k + 1), request_id=f"m{k}") for k in range(6)]
    out, trailers = f.stream(reqs)
    got = f.sites["near-small"].received
    assert got == [[as_served(r, "small") for r in reqs]]
    assert out[-1].model_name == "small"
    assert trailers["x-fastpath-served-model"] == "small"


def test_a_large_message_split_over_many_data_frames_is_rewritten(fleet):
    """300 KiB messages arrive in 16 KiB DATA frames (the proxy's max frame size); two of them in a
    stream also exceed what one window update covers, so crediting the client wrongly would stall."""
    f = fleet(TWO_SITES)
    big = bytes(range(256)) * 1200  # 300 KiB of raw input
    req = request("big", b"prompt", raw=big)
    resp, trailers = f.infer(req)
    assert f.sites["near-small"].received == [[as_served(req, "small")]]
    reqs = [request("big", b"p%d" % k, request_id=f"s{k}", raw=big) for k in range(5)]  # 1.5 MiB > window
    out, trailers = f.stream(reqs)
    assert f.sites["near-small"].received[-1] == [as_served(r, "small") for r in reqs]
    assert trailers["x-fastpath-served-model"] == "small"


def test_a_longer_substitute_name_and_a_shorter_one_both_keep_flow_control_right(fleet):
    """The rewritten stream is longer (or shorter) than what the client sent; 12 x 200 KiB messages
    (2.4 MiB, over twice the stream window) only get through if the client is credited exactly."""
    f = fleet({"near-a-much-longer-model-name": ("a-much-longer-model-name",), "far-big": ("big",)})
    f.proxy.router.model_groups["big"] = type(f.proxy.router.model_groups.get("big"))(
        "big", ("a-much-longer-model-name",), 0.1)
    f.proxy.router._entries = {}
    payload = b"\x01" * (200 * 1024)
    reqs = [request("big", b"q%d" % k, request_id=f"l{k}", raw=payload) for k in range(12)]
    out, trailers = f.stream(reqs)
    got = f.sites["near-a-much-longer-model-name"].received[-1]
    assert got == [as_served(r, "a-much-longer-model-name") for r in reqs]
    assert trailers["x-fastpath-served-model"] == "a-much-longer-model-name"
    # Shorter: a request naming a long model served by "small".
    g = fleet({"near-small": ("small",), "far-long": ("a-very-long-requested-model",)})
    g.proxy.router.model_groups["a-very-long-requested-model"] = type(g.proxy.router.model_groups["big"])(
        "a-very-long-requested-model", ("small",), 0.1)
    g.proxy.router._entries = {}
    reqs = [request("a-very-long-requested-model", b"q%d" % k, request_id=f"s{k}", raw=payload) for k in range(12)]
    out, trailers = g.stream(reqs)
    assert g.sites["near-small"].received[-1] == [as_served(r, "small") for r in reqs]


def test_failover_replays_rewritten_for_a_substitute_and_original_for_the_model_itself(fleet):
    f = fleet({"near-small": ("small",), "near-small-2": ("small",), "far-big": ("big",)})
    f.sites["near-small"].refuse = True
    f.sites["near-small-2"].refuse = True
    req = request("big", b"fail over")
    resp, trailers = f.infer(req)
    # Both substitutes refused: the requested model's own site got the original bytes.
    assert f.sites["far-big"].received == [[req.SerializeToString()]]
    assert "x-fastpath-served-model" not in trailers and trailers["x-fastpath-backend"] == "far-big"
    f.sites["near-small"].refuse = False
    f.sites["near-small-2"].refuse = False
    order = f.loop.call(lambda: f.proxy.router.route(
        f.proxy.call_services.features([(b"x-fastpath-region", b"near"), (b"x-fastpath-model", b"big"),
                                   (b"x-fastpath-allow-substitute", b"true")]), f.proxy.snapshot, f.proxy.live).ranked)
    first = f.proxy.names[order[0]]
    f.sites[first].refuse = True
    resp, trailers = f.infer(req)
    other = "near-small-2" if first == "near-small" else "near-small"
    assert f.sites[other].received[-1] == [as_served(req, "small")]
    assert trailers["x-fastpath-served-model"] == "small" and trailers["x-fastpath-backend"] == other


def test_a_call_that_cannot_be_rewritten_is_served_by_its_own_model(fleet):
    f = fleet(TWO_SITES)
    big = b"\x02" * (2 << 20)  # 2 MiB: more than the proxy holds to rewrite one message
    req = request("big", b"huge", raw=big)
    resp, trailers = f.infer(req)
    assert f.sites["far-big"].received == [[req.SerializeToString()]] and f.sites["near-small"].received == []
    assert "substitute_refused=message 1 is 2097" in trailers["x-fastpath-decision"]
    assert "x-fastpath-served-model" not in trailers


def test_no_model_site_and_an_unrewritable_call_get_a_clear_error(fleet):
    f = fleet({"near-small": ("small",)})
    with pytest.raises(grpc.RpcError) as e:
        f.infer(request("big", b"x", raw=b"\x03" * (2 << 20)))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    details = e.value.details()
    assert "no backend serving model 'big'" in details and "message 1 is 2097" in details
    refused = f.loop.call(lambda: dict(f.proxy.metrics.substitutes_refused))
    assert refused == {("big", "small"): 1}


def test_a_policy_can_opt_in(fleet):
    from fastpath.config import AXES

    f = fleet(TWO_SITES, policies={"balanced": {a: 1.0 for a in AXES},
                                   "switch": {**{a: 1.0 for a in AXES}, "allow_substitute": True}})
    req = request("big", b"policy")
    resp, trailers = f.infer(req, metadata=(NEAR, ("x-fastpath-policy", "switch")))
    assert f.sites["near-small"].received == [[as_served(req, "small")]]
    assert trailers["x-fastpath-served-model"] == "small"
    resp, trailers = f.infer(req, metadata=(NEAR,))
    assert f.sites["far-big"].received == [[req.SerializeToString()]]


def test_a_later_compressed_message_ends_the_stream_with_a_clear_status(fleet):
    """gRPC's compressed flag on a message of an identity stream cannot be rewritten: the call ends,
    naming the message, and the proxy keeps serving."""
    from urllib.parse import unquote

    from fastpath.h2 import frames as fr

    from .rawh2 import RawH2, trailers_of

    f = fleet(TWO_SITES)
    first = request("big", b"ok").SerializeToString()
    c = RawH2(f.address)
    try:
        sid = c.headers(STREAM, (NEAR, OPT_IN))
        c.send(fr.data_frame(sid, b"\x00" + len(first).to_bytes(4, "big") + first, end_stream=False))
        c.send(fr.data_frame(sid, b"\x01" + (3).to_bytes(4, "big") + b"abc", end_stream=True))
        frames = c.read_until(lambda got: "grpc-status" in trailers_of(got, sid))
    finally:
        c.close()
    t = trailers_of(frames, sid)
    assert t["grpc-status"] == "9"  # FAILED_PRECONDITION
    message = unquote(t["grpc-message"])
    assert "message 2" in message and "compressed" in message and "small" in message
    resp, trailers = f.infer(request("big", b"still serving"))
    assert trailers["x-fastpath-served-model"] == "small"


def test_a_session_call_that_allows_a_substitute_is_routed_not_pinned(fleet):
    """Pinned connections relay bytes verbatim: a call that may be switched stays in routed mode."""
    f = fleet(TWO_SITES)
    req = request("big", b"session turn")
    resp, trailers = f.infer(req, metadata=(NEAR, OPT_IN, ("x-fastpath-session", "s-1")))
    assert f.sites["near-small"].received == [[as_served(req, "small")]]
    assert trailers["x-fastpath-served-model"] == "small"
    assert f.loop.call(lambda: f.proxy.metrics.pinned_total) == 0
