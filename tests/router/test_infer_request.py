"""The model name read from the start of a gRPC-framed ModelInferRequest without decoding it."""
from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router import model_from_infer_request, model_from_path


def frame(body: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(body).to_bytes(4, "big") + body


def request(model: str, **kw) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model, model_version=kw.get("version", ""), id=kw.get("id", ""))
    for name, dtype, shape in kw.get("inputs", []):
        r.inputs.add(name=name, datatype=dtype, shape=shape)
    r.raw_input_contents.extend(kw.get("raw", []))
    for k, v in kw.get("params", {}).items():
        r.parameters[k].string_param = v
    return r


REQUESTS = st.builds(
    request,
    st.text(max_size=300),
    version=st.text(max_size=10),
    id=st.text(max_size=40),
    inputs=st.lists(st.tuples(st.text(max_size=20), st.sampled_from(["BYTES", "FP32", "INT64"]),
                              st.lists(st.integers(-1, 2**40), max_size=4)), max_size=3),
    raw=st.lists(st.binary(max_size=2000), max_size=3),
    params=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)


def test_reads_the_model_of_a_real_request():
    body = request("llama-3-8b", id="r1", inputs=[("text", "BYTES", [1])], raw=[b"hello"]).SerializeToString()
    assert model_from_infer_request(frame(body)) == "llama-3-8b"


def test_absent_compressed_and_empty_give_none():
    body = request("", id="only-an-id").SerializeToString()
    assert model_from_infer_request(frame(body)) is None
    assert model_from_infer_request(frame(request("m").SerializeToString(), compressed=True)) is None
    assert model_from_infer_request(b"") is None
    assert model_from_infer_request(frame(b"")) is None


def test_model_after_other_fields_is_found():
    later = pb.ModelInferRequest(id="x", model_version="1").SerializeToString() + b"\x0a\x02m2"  # model_name last
    assert pb.ModelInferRequest.FromString(later).model_name == "m2"
    assert model_from_infer_request(frame(later)) == "m2"


def test_wrong_wire_type_for_model_name_is_malformed():
    assert model_from_infer_request(frame(b"\x08\x05")) is None  # field 1 as a varint


@given(REQUESTS)
@settings(max_examples=200, deadline=None)
def test_round_trip_against_protobuf(msg):
    data = frame(msg.SerializeToString())
    assert model_from_infer_request(data) == (msg.model_name or None)


@given(REQUESTS, st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_requests_give_the_model_or_none_never_a_wrong_name(msg, data):
    whole = frame(msg.SerializeToString())
    cut = data.draw(st.integers(0, len(whole)))
    got = model_from_infer_request(whole[:cut])
    assert got in (None, msg.model_name or None)
    name_end = 5 + len(pb.ModelInferRequest(model_name=msg.model_name).SerializeToString())
    if msg.model_name and cut >= name_end:
        assert got == msg.model_name  # model_name is serialised first: its bytes are all there


@given(REQUESTS, REQUESTS)
@settings(max_examples=200, deadline=None)
def test_concatenated_messages_follow_protobuf_merge(a, b):
    body = a.SerializeToString() + b.SerializeToString()
    merged = pb.ModelInferRequest.FromString(body)
    assert model_from_infer_request(frame(body)) == (merged.model_name or None)


@given(st.binary(max_size=600))
@settings(max_examples=1000, deadline=None)
def test_arbitrary_bytes_never_raise(data):
    got = model_from_infer_request(data)
    assert got is None or (isinstance(got, str) and got)
    got = model_from_infer_request(b"\x00" + data)
    if got is not None:
        body = (b"\x00" + data)[5:]
        try:
            parsed = pb.ModelInferRequest.FromString(body[: int.from_bytes(data[:4], "big")])
        except DecodeError:
            return
        assert parsed.model_name == got


def test_mutated_real_requests_never_raise_and_agree_with_protobuf_when_it_parses():
    rnd = random.Random(7)
    base = [frame(request(f"model-{i}" * (i % 5), id="abc", inputs=[("x", "FP32", [1, i])], raw=[bytes(i * 50)],
                          params={"p": "v"}).SerializeToString()) for i in range(20)]
    checked = 0
    for _ in range(8000):
        data = bytearray(rnd.choice(base))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            pos = rnd.randrange(1, len(data)) if len(data) > 1 else 0
            if op < 0.5:
                data[pos] = rnd.randrange(256)
            elif op < 0.75:
                del data[pos:pos + rnd.randint(1, 8)]
            else:
                data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        data = bytes(data)
        got = model_from_infer_request(data)
        if got is None or len(data) < 5 or data[0] != 0:
            continue
        body = data[5:5 + int.from_bytes(data[1:5], "big")]
        try:
            parsed = pb.ModelInferRequest.FromString(body)
        except DecodeError:
            continue
        assert parsed.model_name == got
        checked += 1
    assert checked > 400  # the comparison really ran


@pytest.mark.parametrize("path, service", [
    (b"/inference.GRPCInferenceService/ModelInfer", "inference.GRPCInferenceService"),
    (b"/pkg.Service/Method", "pkg.Service"),
    (b"/Method", ""),
    (b"", ""),
    (b"/a.b/c/d", "a.b/c"),
])
def test_model_from_path_is_the_service(path, service):
    assert model_from_path(path) == service


@given(st.binary(max_size=200))
def test_model_from_path_never_raises(path):
    assert isinstance(model_from_path(path), str)
