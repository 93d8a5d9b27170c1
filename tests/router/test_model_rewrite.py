"""model_name rewritten at the frame level: byte-exact against the protobuf library, for unary and
streaming bodies, with the gRPC message and DATA frame lengths (and padding) kept right."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router.model_rewrite import rewrite_data_frame, rewrite_grpc_messages, rewrite_message_body

from .test_infer_request import REQUESTS, frame

MODELS = st.text(min_size=1, max_size=300)


def data_frame(payload: bytes, pad: int | None = None, flags: int = 0, stream_id: int = 1) -> bytes:
    if pad is not None:
        flags |= 0x8
        payload = bytes([pad]) + payload + b"\x00" * pad
    return len(payload).to_bytes(3, "big") + bytes([0, flags]) + stream_id.to_bytes(4, "big") + payload


def renamed(req: pb.ModelInferRequest, model: str) -> bytes:
    out = pb.ModelInferRequest()
    out.CopyFrom(req)
    out.model_name = model
    return out.SerializeToString(deterministic=True)


@given(REQUESTS, MODELS)
@settings(max_examples=200, deadline=None)
def test_unary_body_is_exactly_what_protobuf_would_send(req, model):
    body = req.SerializeToString(deterministic=True)  # map entries in key order, as in renamed()
    assert rewrite_message_body(body, model) == renamed(req, model)
    assert rewrite_grpc_messages(frame(body), model) == frame(renamed(req, model))


@given(st.lists(REQUESTS, min_size=1, max_size=4), MODELS, st.one_of(st.none(), st.integers(0, 255)),
       st.booleans())
@settings(max_examples=150, deadline=None)
def test_stream_of_messages_in_a_data_frame_keeps_lengths_and_padding(reqs, model, pad, end_stream):
    payload = b"".join(frame(r.SerializeToString(deterministic=True)) for r in reqs)
    original = data_frame(payload, pad, flags=0x1 if end_stream else 0, stream_id=7)
    got = rewrite_data_frame(original, model)
    assert got is not None
    new, delta = got
    expected_payload = b"".join(frame(renamed(r, model)) for r in reqs)
    assert new == data_frame(expected_payload, pad, flags=0x1 if end_stream else 0, stream_id=7)
    assert delta == len(new) - len(original)  # what flow control must account for
    assert int.from_bytes(new[:3], "big") == len(new) - 9


def test_what_cannot_be_rewritten_exactly_is_refused():
    body = pb.ModelInferRequest(model_name="m", id="x").SerializeToString()
    assert rewrite_grpc_messages(frame(body, compressed=True), "n") is None
    assert rewrite_grpc_messages(frame(body)[:-1], "n") is None  # a message cut short
    assert rewrite_message_body(b"\x08\x01", "n") is None  # field 1 as a varint: not a ModelInferRequest
    assert rewrite_data_frame(b"\x00\x00\x00\x01\x00\x00\x00\x00\x01", "n") is None  # HEADERS, not DATA
    assert rewrite_data_frame(data_frame(frame(body))[:-1], "n") is None  # length mismatch
    bad_pad = bytearray(data_frame(frame(body), pad=2))
    bad_pad[9] = 200  # padding longer than the payload
    assert rewrite_data_frame(bytes(bad_pad), "n") is None
