"""Rewriting `model_name` in a ModelInferRequest at the frame level, byte-exact.

When the router serves a request with a substitute model (a model group's
member the client allowed), the request the backend sees must name that
model. The message is not decoded: its tags are walked as in
fastpath.router.features, every `model_name` field (1) is replaced in place,
and the lengths that enclose it are recomputed — the gRPC message prefix,
and, for a whole HTTP/2 DATA frame, the frame length (padding kept). The
size difference is returned so the caller can account for it in HTTP/2 flow
control (the client's window was charged for the original bytes; the
backend's is charged for the new ones).

Compressed messages, truncated ones and anything that does not walk as a
protobuf message are refused (None): a request that cannot be rewritten
exactly must not be sent to a backend serving a different model.
"""
from __future__ import annotations

from fastpath.router.features import _varint, skip_scalar

DATA = 0x0
PADDED = 0x8
MAX_FRAME_LENGTH = (1 << 24) - 1


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def rewrite_message_body(body: bytes, model: str) -> bytes | None:
    """The protobuf body with every model_name field set to `model`; None when it does not walk."""
    new = model.encode("utf-8")
    field = b"\x0a" + _encode_varint(len(new)) + new
    out = []
    pos = 0
    end = len(body)
    start = 0
    seen = False
    while pos < end:
        tag_at = pos
        tag, pos = _varint(body, pos, end)
        if pos < 0:
            return None
        wire, number = tag & 7, tag >> 3
        if number == 0:
            return None
        if wire == 2:
            length, pos = _varint(body, pos, end)
            if pos < 0 or pos + length > end:
                return None
            if number == 1:
                out.append(body[start:tag_at])
                out.append(field)
                start = pos + length
                seen = True
            pos += length
        elif number == 1:
            return None  # model_name must be length-delimited
        else:
            pos = skip_scalar(body, pos, end, wire)
            if pos < 0 or pos > end:
                return None
    if not seen:
        # proto3 omits an empty model_name: the substitute's name goes first.
        return field + body
    out.append(body[start:])
    return b"".join(out)


def rewrite_grpc_messages(data: bytes, model: str) -> bytes | None:
    """Every gRPC-framed message in `data` (whole messages only) with model_name set to `model`."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 5 or data[pos] != 0:
            return None  # a partial prefix, or a compressed message
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        stop = pos + 5 + length
        if stop > n:
            return None
        body = rewrite_message_body(data[pos + 5:stop], model)
        if body is None:
            return None
        out.append(b"\x00" + len(body).to_bytes(4, "big") + body)
        pos = stop
    return b"".join(out)


def rewrite_data_frame(frame: bytes, model: str) -> tuple[bytes, int] | None:
    """An HTTP/2 DATA frame (9-byte header + payload) carrying whole gRPC messages, rewritten.

    Returns (new frame, size difference of the payload for flow control), or None
    when it is not a DATA frame of whole, uncompressed messages, or would outgrow
    the 24-bit frame length (the caller must split it against the peer's
    SETTINGS_MAX_FRAME_SIZE anyway).
    """
    if len(frame) < 9 or frame[3] != DATA:
        return None
    length = int.from_bytes(frame[0:3], "big")
    if len(frame) != 9 + length:
        return None
    flags = frame[4]
    payload = frame[9:]
    pad = 0
    if flags & PADDED:
        if not payload:
            return None
        pad = payload[0]
        if pad + 1 > len(payload):
            return None
        data = payload[1:len(payload) - pad]
    else:
        data = payload
    new = rewrite_grpc_messages(data, model)
    if new is None:
        return None
    new_payload = (payload[:1] + new + payload[len(payload) - pad:]) if flags & PADDED else new
    if len(new_payload) > MAX_FRAME_LENGTH:
        return None
    return len(new_payload).to_bytes(3, "big") + frame[3:9] + new_payload, len(new_payload) - len(payload)
