"""The seed corpus: inputs for each fuzz target built from real traffic, written in each target's layout.

`python -m tests.fuzz.seeds [TARGET...]` (re)writes tests/fuzz/corpus/<target>/. Sources:
a stock grpcio client and server recorded on the wire (traffic_capture),
header blocks from the reference `hpack` encoder (Huffman on and off, table
sizes that force eviction), real ModelInferRequests, and the Prometheus
pages the simulated sites and the proxy really serve.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import hpack

from fastpath.control import promtext
from fastpath.dataplane.metrics import ProxyCollector, ProxyMetrics
from fastpath.gen import grpc_service_pb2 as pb
from prometheus_client import CollectorRegistry, generate_latest
from fastpath.h2 import frames as fr
from fastpath.router import features as ft
from fastpath.sim import metrics as sim_metrics

from . import target_features, target_model_name, target_model_rewrite, target_prompt
from .fuzz_input import chunk
from .traffic_capture import METADATA, Capture, capture, infer_request

CORPUS = Path(__file__).with_name("corpus")


def _frames_seeds(cap: Capture) -> list[bytes]:
    out = []
    for stream in (cap.client_frames(), cap.server_to_client):
        out += [b"\x00" + stream, b"\x05" + bytes((10, 60, 61, 130, 250)) + stream,
                b"\x1f" + bytes(range(0, 256, 17)) + stream, b"\x20" + stream]
    flood = fr.frame_header(10, fr.HEADERS, 0, 1) + b"\x00" * 10
    flood += b"".join(fr.frame_header(30, fr.CONTINUATION, 0, 1) + b"\x00" * 30 for _ in range(5))
    out.append(b"\x20" + flood)
    padded = fr.frame_header(12, fr.HEADERS, fr.PADDED | fr.PRIORITY_FLAG | fr.END_HEADERS, 3)
    out.append(b"\x00" + padded + b"\x02" + b"\x00\x00\x00\x01\x10" + b"\x82\x84\x86\x00\x00\x00")
    out.append(b"\x00" + fr.settings_frame({fr.SETTINGS_MAX_FRAME_SIZE: 20000, fr.SETTINGS_ENABLE_PUSH: 0})
               + fr.goaway_frame(7, fr.ENHANCE_YOUR_CALM, b"calm") + fr.rst_stream_frame(5, fr.CANCEL)
               + fr.window_update_frame(0, 1 << 20) + fr.ping_frame(b"12345678"))
    return out


def _header_blocks(cap: Capture) -> list[bytes]:
    return [p for t, _, _, p in fr.FrameReader().feed(cap.client_frames()) if t == fr.HEADERS]


def _server_header_blocks(cap: Capture) -> list[bytes]:
    return [p for t, _, _, p in fr.FrameReader().feed(cap.server_to_client) if t == fr.HEADERS]


def _hpack_seeds(cap: Capture) -> list[bytes]:
    out = [b"\x00" + b"".join(chunk(b) for b in _header_blocks(cap)) + b"\x00",
           b"\x00" + b"".join(chunk(b) for b in _server_header_blocks(cap))]
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
               (b":authority", b"127.0.0.1:50051"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
               (b"grpc-timeout", b"9998m"), *((k.encode(), v.encode()) for k, v in METADATA)]
    for head, table, huffman in ((0, 4096, True), (0, 4096, False), (1, 256, True), (3, 64, False), (4, 4096, True)):
        enc = hpack.Encoder()
        enc.header_table_size = table
        blocks = [enc.encode(request, huffman=huffman) for _ in range(2)]
        blocks.append(enc.encode(request[:6] + [(b"x-request-id", b"req-0002")], huffman=huffman))
        out.append(bytes((head,)) + b"".join(chunk(b) for b in blocks) + b"\x00")
    out.append(b"\x02" + chunk(b"\x20") + chunk(b"\x3f\xe1\x1f"))  # table to 0, then an update above the limit
    return out


def _features_record(name: bytes, value: bytes) -> bytes:
    if name in target_features.NAMES:
        return bytes((target_features.NAMES.index(name),)) + chunk(value)
    return b"\xf0" + chunk(name) + chunk(value)


def _features_seeds(cap: Capture) -> list[bytes]:
    out = []
    dec = hpack.Decoder()
    for block in _header_blocks(cap):
        headers = dec.decode(block, raw=True)
        out.append(b"".join(_features_record(bytes(n), bytes(v)) for n, v in headers))
    odd = [(ft.MODEL, b"  llama-3-8b  "), (ft.REGION, b"eu_west.2"), (ft.SLO_TTFT_MS, b"1e3"), (ft.MAX_COST, b"-0"),
           (ft.ALLOW_REGIONS, b" b , a,a,"), (ft.SESSION, b""), (ft.POLICY, b"cost first"), (ft.SLO_TTFT_MS, b"nan")]
    out.append(b"".join(_features_record(n, v) for n, v in odd))
    return out


def _model_seeds(cap: Capture) -> list[bytes]:
    out = []
    data = [p for t, _, _, p in fr.FrameReader().feed(cap.client_frames()) if t == fr.DATA and p]
    out += [b"\x00" + p for p in data]
    for model in ("llama-3-8b", "mistral-7b", "ünïcode-模型", ""):
        body = infer_request(model).SerializeToString()
        out.append(b"\x00" + target_model_name.frame(body))
        out.append(b"\x00" + target_model_name.frame(body)[: 5 + len(body) // 2])
        m = model.encode()
        built = b"\x01" + chunk(m) + chunk(b"r-1") + b"\x01" + chunk(b"text_input") + chunk(b"hi") + b"\x01\x08\x00\x00"
        out += [built + b"\xff", built + b"\x40", b"\x03" + built[1:] + chunk(b"second-model") + b"\xff",
                b"\x05" + built[1:] + b"\xff"]
    return out


def _prompt_seeds(cap: Capture) -> list[bytes]:
    out = []
    data = [p for t, _, _, p in fr.FrameReader().feed(cap.client_frames()) if t == fr.DATA and p]
    out += [b"\x00" + p for p in data]
    for raw_encoding in (False, True):
        req = pb.ModelInferRequest(model_name="llama-3-8b", id="r-1")
        req.inputs.add(name="max_tokens", datatype="INT32", shape=[1])
        req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        if raw_encoding:
            req.raw_input_contents.append((8).to_bytes(4, "little"))
        prompt = b"You are a helpful assistant. " * 30
        if raw_encoding:
            req.raw_input_contents.append(len(prompt).to_bytes(4, "little") + prompt)
        else:
            req.inputs[-1].contents.bytes_contents.append(prompt)
        body = req.SerializeToString()
        out.append(b"\x00" + target_prompt.frame(body))
        out.append(b"\x00" + target_prompt.frame(body)[: 5 + len(body) // 2])
        flags = 0x03 if raw_encoding else 0x01
        built = bytes((flags,)) + chunk(b"llama-3-8b") + chunk(b"r-1") + b"\x02" + b"\x01" + chunk(b"hello " * 20) + b"\x03"
        built += b"\x00" + chunk(b"other") + chunk(b"x") + b"\x01" + b"\x01\x08\x00" + b"\x01"
        out += [built + b"\xff", built + b"\x80", bytes((flags | 4,)) + built[1:] + b"\xff"]
    return out


def _promtext_seeds() -> list[bytes]:
    counters = {m: sim_metrics.ModelCounters() for m in ("llama-3-8b", "mistral-7b")}
    for c in counters.values():
        for v in (0.01, 0.2, 3.0):
            c.ttft.observe(v)
    page = sim_metrics.render(site="use1-a100", models=tuple(counters), waiting={"llama-3-8b": 2},
                              running={"mistral-7b": 1}, cache_usage=0.25, counters=counters, power_draw=2500.0,
                              power_budget=6000.0, slots=8, kv_hits=3, kv_misses=1, fault="none")
    proxy = ProxyMetrics()
    proxy.backend_names = ["use1-a100"]
    proxy.requests[("use1-a100", "ok")] += 5
    proxy.limits_hit["rapid_reset"] += 1
    proxy.call_finished(0, "llama-3-8b", True, 0.25, 0.04)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(proxy))
    hand = (
        '# HELP weird_total A help with \\\\ and \\n escapes\n# TYPE weird_total counter\n'
        'weird_total{path="/a\\"b\\\\c\\nd",code="200",} 1.5e3 1700000000000\n'
        'weird_total{path="x"} +Inf\nweird_total{path="y"} NaN\n  spaced:metric \t -0.5  \r\n'
        '# a comment\n\nbad{label=} 1\nname_only\n'
    )
    return [page.encode(), generate_latest(registry), hand.encode(),
            promtext.format_sample(promtext.Sample("x", (("a", 'q"\n\\'),), float("-inf"), -5)).encode(),
            b"\xff\xfe not utf-8\nok 1\n"]


def _call_class_seeds() -> list[bytes]:
    return [b"x-fastpath-priority: 5\nx-fastpath-tenant: acme\ngrpc-timeout: 250m",
            b"grpc-timeout: 99999999H\nx-fastpath-priority: 0",
            b"x-fastpath-priority: 10\ngrpc-timeout: 1x\nx-fastpath-tenant: a b",
            b"grpc-timeout: 000000001n\nx-fastpath-tenant: " + b"t" * 65]


def _hpack_encoder_seeds(cap: Capture) -> list[bytes]:
    from . import target_hpack_encoder as te

    def record(name: bytes, value: bytes) -> bytes:
        sel = bytes((te.NAMES.index(name),)) if name in te.NAMES else b"\xf0" + chunk(name)
        return sel + chunk(value)

    dec = hpack.Decoder()
    lists = [[(bytes(n), bytes(v)) for n, v in dec.decode(b, raw=True)] for b in _header_blocks(cap)]
    out = []
    for peer in (b"", b"\x81", b"\x82", b"\x81\x80"):  # peer table: as is, 0, 100, 0 then back to 4096
        ops = peer
        for headers in lists:
            ops += bytes((8 | min(7, len(headers)),)) + b"".join(record(n, v) for n, v in headers[:7])
        out.append(ops)
    return out


def _pushed_seeds() -> list[bytes]:
    """Real update sequences from the controller's Subscription: full state, deltas, removals, a resync."""
    import asyncio

    from fastpath.config import parse_config
    from fastpath.control.fleet_state import FleetState
    from fastpath.control.health import HealthState
    from fastpath.control.policies import PolicyStore
    from fastpath.control.push import Subscription, config_resources
    from fastpath.control.scraper import BackendMetrics
    from fastpath.gen import control_pb2 as pb

    def cfg(names: list[str]):
        return parse_config({"regions": {"rtt_ms": {"us-east": {"r": 2.0}}}, "backends": [
            {"name": n, "address": f"127.0.0.1:{i + 1}", "region": "r", "cost_per_1k_tokens": 1.0 + i,
             "models": ["m"]} for i, n in enumerate(names)]}, "seed")

    async def run() -> list[bytes]:
        c = cfg(["a", "b"])
        state = FleetState(c, {n: BackendMetrics(has_metrics=True) for n in "ab"},
                           {n: HealthState(healthy=True, detail="", probed=True) for n in "ab"}, session_capacity=4)
        policies = PolicyStore(c)
        sub = Subscription("seed")
        msgs = [sub.next_update(state, config_resources(c, policies), 1)]
        for i in range(6):
            state.observe(pb.Observation(backend="ab"[i % 2], session=f"s{i}", ttft_ms=20, ok=True), "p")
        state.observe(pb.Observation(backend="b", session="s5", ttft_ms=0, ok=False), "p")
        msgs.append(sub.next_update(state, config_resources(c, policies), 1))
        policies.set(pb.Policy(name="green", cost=1))
        state.request_offload("s4", "kernel")
        msgs.append(sub.next_update(state, config_resources(c, policies), 1))
        c2 = cfg(["b", "c"])
        msgs.append(sub.next_update(state, config_resources(c2, PolicyStore(c2)), 2))
        msgs.append(Subscription("seed").next_update(state, config_resources(c2, PolicyStore(c2)), 2))
        return [m.SerializeToString() for m in msgs]

    msgs = asyncio.run(run())
    bad = pb.ConfigUpdate(version=9, resources=[pb.Resource(type="backend", name="x", backend=pb.BackendSpec(
        name="x", address="nohost", region="r", models=["m"])), pb.Resource(type="prefix", name="p", payload=b"\x01")])
    return [b"".join(chunk(m) for m in msgs), b"".join(chunk(m) for m in msgs[1:]), chunk(msgs[-1]) + chunk(msgs[0]),
            chunk(bad.SerializeToString()) + chunk(msgs[0]), chunk(b"\xff\xff not protobuf") + chunk(msgs[2])]


def _bpf_header_seeds() -> list[bytes]:
    """fastpath's own BPF headers (each alone, and fastpath_maps.h with its includes inlined) and hand-written edges."""
    from fastpath.offload.maps import bpf_dir, read_with_includes

    d = bpf_dir()
    out = [p.read_bytes() for p in sorted(d.glob("fastpath_*.h"))]
    out.append(read_with_includes(d / "fastpath_maps.h").encode())
    out.append(b"#define FP_A 0x10\n#define FP_N fp_name\nstruct s {\n\t__u16 a;\n\t__u64 b[FP_A];\n};\n")
    out.append(b"struct bad {\n\tint x;\n};\n#define FP_S \"str\"\n")
    return out


def _huffman_seeds(cap: Capture) -> list[bytes]:
    """Metadata values as a gRPC client Huffman-codes them (raw mode), the same as plain text (round trip)."""
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    enc = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    texts = [v if isinstance(v, bytes) else str(v).encode() for _, v in METADATA]
    texts += [b"%032x" % 0x1234ABCD, b"application/grpc", b"/inference.GRPCInferenceService/ModelInfer", bytes(range(256))]
    out = [b"\x00" + enc.encode(t) for t in texts]
    out += [b"\x01" + t for t in texts] + [b"\x03\x80" + t for t in texts[:4]]
    return out


def _model_rewrite_seeds() -> list[bytes]:
    """Real ModelInferRequest streams (one message, several, a large one) cut at a few points."""
    reqs = []
    for k in range(3):
        req = pb.ModelInferRequest(model_name="llama-3-70b", id=f"r-{k}")
        t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(b"turn %d: hello" % k * (k + 1))
        req.parameters["max_tokens"].int64_param = 8
        reqs.append(req.SerializeToString())
    big = pb.ModelInferRequest(model_name="llama-3-70b", raw_input_contents=[bytes(range(256)) * 8])
    one = target_model_rewrite.frame(reqs[0])
    many = b"".join(target_model_rewrite.frame(r) for r in reqs)
    name = b"llama-3-8b"
    head = bytes((len(name),)) + name
    return [head + b"\x00\x00" + one, head + b"\x01\x07\x03\x00" + many,
            head + b"\x02\xff\x80\x00" + target_model_rewrite.frame(big.SerializeToString()),
            head + b"\x00\x02\x00" + many[:-7], head + b"\x00\x00" + target_model_rewrite.frame(reqs[1], True)]


def build() -> dict[str, list[bytes]]:
    """Seed inputs per target name, built fresh (about a second: it makes real gRPC calls)."""
    cap = capture()
    return {"frames": _frames_seeds(cap), "connection": _frames_seeds(cap), "hpack": _hpack_seeds(cap), "hpack_encoder": _hpack_encoder_seeds(cap),
            "features": _features_seeds(cap),
            "model_name": _model_seeds(cap), "promtext": _promtext_seeds(), "worker_metrics": _promtext_seeds(),
            "pushed": _pushed_seeds(), "prompt": _prompt_seeds(cap), "bpf_header": _bpf_header_seeds(),
            "huffman": _huffman_seeds(cap), "model_rewrite": _model_rewrite_seeds(), "call_class": _call_class_seeds()}


def write(root: Path = CORPUS, only: list[str] | None = None) -> dict[str, int]:
    """Writes each seed as corpus/<target>/seed-<sha1 prefix> (of the `only` targets, or all); returns how many per target."""
    counts = {}
    for target, seeds in build().items():
        if only and target not in only:
            continue
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for s in seeds:
            (d / f"seed-{hashlib.sha1(s).hexdigest()[:12]}").write_bytes(s)
        counts[target] = len(seeds)
    return counts


def load(target: str, root: Path = CORPUS) -> list[bytes]:
    """Every corpus file of a target (seeds, and any reproducers kept next to them)."""
    d = root / target
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


if __name__ == "__main__":
    # Captured traffic differs a little run to run (PINGs, window updates): name targets to rewrite only those.
    for name, n in write(only=sys.argv[1:] or None).items():
        print(f"{name}: {n} seeds in {CORPUS / name}")
    sys.exit(0)
