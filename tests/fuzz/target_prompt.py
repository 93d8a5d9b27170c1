"""Fuzz target: `prompt_from_infer_request`, the prompt read from a ModelInferRequest without decoding it.

Input layout: byte 0 bit 0 chooses the mode.
- raw (bit 0 clear): the rest is the gRPC-framed body as received.
- built (bit 0 set): a real ModelInferRequest is built from fuzzed fields with
  the generated protobuf classes — inputs (some named text_input) carrying
  `contents.bytes_contents` or a `raw_input_contents` entry (bit 1 picks the
  encoding), parameters, outputs — serialized, framed, maybe flagged
  compressed (bit 2), maybe cut short (the next byte; 255 = whole).

Contract checked: never raises; returns None or bytes found in the body, at
most MAX bytes; on a whole built request the answer equals what the protobuf
parser says the prompt is; on a cut one it is a prefix of it (or None); on raw
bytes the parser decodes, it never contradicts the parser's prompt.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router.features import prompt_from_infer_request

from .fuzz_input import FuzzInput

NAME = b"text_input"
MAX = 512  # a small bound, so the fuzzer reaches it


def frame(body: bytes, compressed: bool = False) -> bytes:
    return bytes((1 if compressed else 0,)) + len(body).to_bytes(4, "big") + body


def reference(req: pb.ModelInferRequest, name: bytes = NAME, limit: int = MAX) -> bytes | None:
    """The prompt as the decoded message defines it (the contract's oracle)."""
    for k, t in enumerate(req.inputs):
        if t.name.encode() != name:
            continue
        if len(t.contents.bytes_contents):
            return t.contents.bytes_contents[0][:limit]
        if k < len(req.raw_input_contents):
            raw = req.raw_input_contents[k]
            if len(raw) < 4:
                return None
            size = int.from_bytes(raw[:4], "little")
            return raw[4:4 + size][:limit]
        return None
    return None


def build(src: FuzzInput, raw_encoding: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=src.chunk().decode("utf-8", "replace"), id=src.chunk().decode("utf-8", "replace"))
    for _ in range(src.byte() % 4):
        named = src.byte() & 1
        t = req.inputs.add(name="text_input" if named else src.chunk().decode("utf-8", "replace"),
                           datatype="BYTES", shape=[1])
        data = src.chunk() * (1 + src.byte() % 8)
        if raw_encoding:
            req.raw_input_contents.append(len(data).to_bytes(4, "little") + data)
        else:
            t.contents.bytes_contents.append(data)
    if src.byte() & 1:
        req.parameters["max_tokens"].int64_param = src.u16()
    if src.byte() & 1:
        req.outputs.add(name="text_output")
    return req


def _raw(message: bytes) -> None:
    got = prompt_from_infer_request(message, NAME, MAX)
    assert got is None or (isinstance(got, bytes) and len(got) <= MAX), repr(got)[:80]
    if got is not None:
        assert got in message, "the prompt is not in the body"
    if len(message) < 5 or message[0] != 0:
        assert got is None, "compressed or short frame gave a prompt"
        return
    length = int.from_bytes(message[1:5], "big")
    body = message[5:5 + length]
    if len(body) < length:
        return
    try:
        req = pb.ModelInferRequest.FromString(body)
    except DecodeError:
        return
    req.DiscardUnknownFields()
    canonical = prompt_from_infer_request(frame(req.SerializeToString()), NAME, MAX)
    assert canonical == reference(req), f"canonical body: we read {canonical!r:.60}, protobuf {reference(req)!r:.60}"


def _built(src: FuzzInput, flags: int) -> None:
    req = build(src, bool(flags & 2))
    body = req.SerializeToString()
    cut = src.byte()
    message = frame(body, compressed=bool(flags & 4))
    whole = cut == 255
    if not whole:
        message = message[:5 + cut * len(body) // 255]
    got = prompt_from_infer_request(message, NAME, MAX)
    expected = reference(req)
    if flags & 4:
        assert got is None, "compressed body gave a prompt"
    elif whole:
        assert got == expected, f"whole body: got {got!r:.60}, expected {expected!r:.60}"
    elif got is not None:
        assert expected is not None and expected.startswith(got), f"cut body: {got!r:.60} is no prefix of {expected!r:.60}"


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    flags = src.byte()
    if flags & 1:
        _built(src, flags)
    else:
        _raw(src.rest())
