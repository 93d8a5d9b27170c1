"""Fuzz target: `MessageStreamRewriter`, model_name rewritten in a request stream fed in pieces.

Input layout: byte 0 = length of the substitute model name (mod 64), then
that many bytes of it (UTF-8, replaced), byte 2 = max_message in KiB (0 =
1 MiB), then split points as chunk()s of one byte each until a 0, then the
rest: the gRPC-framed request stream as the client sent it.

Contract checked: never raises; the stream cut at the fuzzed points gives
exactly what the whole stream rewritten at once gives (the complete
messages' rewrite, fastpath.router.model_rewrite.rewrite_grpc_messages), the
incomplete tail is what it holds, and every rewritten message that protobuf
parses names the substitute; a refusal (None) happens only when some
complete message (or the prefix of the next) is compressed, over
max_message, or does not walk as protobuf, and it is final.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.router.model_rewrite import MessageStreamRewriter, rewrite_grpc_messages

from .fuzz_input import FuzzInput


def frame(body: bytes, compressed: bool = False) -> bytes:
    return bytes((1 if compressed else 0,)) + len(body).to_bytes(4, "big") + body


def _complete(stream: bytes) -> int:
    """Bytes of `stream` taken by whole messages (the rest is an incomplete one)."""
    pos = 0
    while len(stream) - pos >= 5:
        stop = pos + 5 + int.from_bytes(stream[pos + 1:pos + 5], "big")
        if stop > len(stream):
            break
        pos = stop
    return pos


def one_input(data: bytes) -> None:
    src = FuzzInput(data)
    model = src.take(src.byte() % 64).decode("utf-8", "replace") or "m"
    max_message = (src.byte() or 1024) * 1024
    cuts = []
    while src.left():
        b = src.byte()
        if b == 0:
            break
        cuts.append(b)
    stream = src.rest()
    rw = MessageStreamRewriter(model, max_message)
    out: list[bytes] = []
    refused = False
    pos = 0
    pieces = []
    for c in cuts:
        pieces.append(stream[pos:pos + c])
        pos += c
    pieces.append(stream[pos:])
    for piece in pieces:
        got = rw.feed(piece)
        if got is None:
            refused = True
            assert rw.error, "refused without saying why"
            assert rw.feed(b"\x00") is None, "a refused rewriter took more input"
            break
        out.append(got)
    whole = _complete(stream)
    expected = rewrite_grpc_messages(stream[:whole], model)
    too_large = any(n > max_message for n in _sizes(stream))
    bad_flag = _flags_bad(stream)
    if refused:
        assert expected is None or too_large or bad_flag, f"refused ({rw.error}) a stream protobuf-walks whole"
        return
    assert expected is not None and not too_large, "took a stream the whole-stream rewrite refuses"
    assert b"".join(out) == expected, "pieces rewrite differently from the whole"
    assert rw.held == len(stream) - whole, f"holds {rw.held}, incomplete tail is {len(stream) - whole}"
    for body in _bodies(expected):
        try:
            req = pb.ModelInferRequest.FromString(body)
        except DecodeError:
            continue
        assert req.model_name == model, f"rewritten message names {req.model_name!r}, not {model!r}"


def _sizes(stream: bytes) -> list[int]:
    """Declared lengths of the messages in `stream`, the incomplete last one included."""
    out, pos = [], 0
    while len(stream) - pos >= 5:
        n = int.from_bytes(stream[pos + 1:pos + 5], "big")
        out.append(n)
        pos += 5 + n
    return out


def _bodies(stream: bytes) -> list[bytes]:
    """Bodies of the complete messages of `stream`."""
    out, pos = [], 0
    while len(stream) - pos >= 5:
        n = int.from_bytes(stream[pos + 1:pos + 5], "big")
        if pos + 5 + n > len(stream):
            break
        out.append(stream[pos + 5:pos + 5 + n])
        pos += 5 + n
    return out


def _flags_bad(stream: bytes) -> bool:
    pos = 0
    while pos < len(stream):
        if stream[pos] != 0:
            return True
        if len(stream) - pos < 5:
            return False
        pos += 5 + int.from_bytes(stream[pos + 1:pos + 5], "big")
    return False
