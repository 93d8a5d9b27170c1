"""Fuzz target: `model_from_infer_request`, the model name read from the start of a ModelInferRequest body.

Input layout: byte 0 bit 0 chooses the mode.
- raw (bit 0 clear): the rest is the gRPC-framed body as received.
- built (bit 0 set): a real ModelInferRequest is built from fuzzed fields
  (model name, id, inputs, parameters), serialized, framed, then maybe a
  second model_name appended (bit 1), the compressed flag set (bit 2), or
  the frame cut short (the next byte, 255 = whole).

Contract checked: never raises; returns None or a non-empty str that occurs
in the body; on a built request the answer is exact (the last model_name
when whole, the name only when the cut falls after it, None when
compressed); on raw bytes it never contradicts the protobuf parser, and on
the parser's canonical re-encoding it agrees with it.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router.features import model_from_infer_request
from fastpath.router.model_rewrite import encode_varint

from .fuzz_input import FuzzInput


def frame(body: bytes, compressed: bool = False) -> bytes:
    return bytes((1 if compressed else 0,)) + len(body).to_bytes(4, "big") + body


def _check_shape(message: bytes, got: str | None) -> None:
    assert got is None or (isinstance(got, str) and got), repr(got)
    if got is not None:
        assert got.encode() in message[5:], f"{got!r} is not in the body"


def _raw(message: bytes) -> None:
    got = model_from_infer_request(message)
    _check_shape(message, got)
    if len(message) < 5 or message[0] != 0:
        assert got is None, f"compressed or short frame gave {got!r}"
        return
    length = int.from_bytes(message[1:5], "big")
    body = message[5 : 5 + length]
    if len(body) < length:
        return  # truncated: only "a name seen before the cut, or None" holds, checked by _check_shape
    try:
        req = pb.ModelInferRequest.FromString(body)
    except DecodeError:
        return
    if got is not None:
        assert got == req.model_name, f"we read {got!r}, protobuf {req.model_name!r}"
    req.DiscardUnknownFields()
    canonical = model_from_infer_request(frame(req.SerializeToString()))
    assert canonical == (req.model_name or None), f"canonical body: we read {canonical!r}, protobuf {req.model_name!r}"


def _built(src: FuzzInput, flags: int) -> None:
    model = src.chunk().decode("utf-8", "replace")
    req = pb.ModelInferRequest(model_name=model, id=src.chunk().decode("utf-8", "replace"))
    for _ in range(src.byte() % 4):
        t = req.inputs.add(name=src.chunk().decode("utf-8", "replace"), datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(src.chunk())
    if src.byte() & 1:
        req.parameters["max_tokens"].int64_param = src.u16()
    if src.byte() & 1:
        req.raw_input_contents.append(src.chunk())
    body = req.SerializeToString()
    last = model
    if flags & 2:
        last = src.chunk().decode("utf-8", "replace")
        raw = last.encode()
        body += b"\x0a" + encode_varint(len(raw)) + raw
    cut = src.byte()
    message = frame(body, compressed=bool(flags & 4))
    whole = cut == 255 or flags & 2
    if not whole:
        message = message[: 5 + cut * len(body) // 255]
    got = model_from_infer_request(message)
    _check_shape(message, got)
    if flags & 4:
        assert got is None, f"compressed body gave {got!r}"
    elif whole:
        assert got == (last or None), f"whole body: got {got!r}, expected {last!r}"
    else:
        field_end = 5 + 1 + len(encode_varint(len(model.encode()))) + len(model.encode())
        expected = model if model and len(message) >= field_end else None
        assert got == expected, f"body cut at {len(message) - 5}/{len(body)}: got {got!r}, expected {expected!r}"


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    flags = src.byte()
    if flags & 1:
        _built(src, flags)
    else:
        _raw(src.rest())
