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


def encode_varint(n: int) -> bytes:
    """n as a protobuf base-128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def rewrite_message_body(body: bytes, model: str) -> bytes | None:
    """The protobuf body with every model_name field set to `model`; None when it does not walk."""
    new = model.encode("utf-8")
    field = b"\x0a" + encode_varint(len(new)) + new
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


class MessageStreamRewriter:
    """A request body (gRPC-framed messages, split across DATA frames anyhow) with model_name rewritten
    in every message, fed as it arrives.

    `feed(data)` returns the rewritten bytes of every message that `data` completes (b"" when none)
    and holds the start of an incomplete one (`held` bytes, the 5-byte prefix included, kept as the
    pieces that came and joined once) until the rest arrives: a message's length prefix can only be
    written once its whole body is known. A message is refused (None, and `error` says why) when it is compressed, longer than
    `max_message`, or does not walk as a protobuf message; nothing is returned for it, and the
    rewriter stays refused. Sans-IO: no sockets, no flow control (the caller accounts for `held`
    bytes and for the size difference).
    """

    __slots__ = ("model", "max_message", "parts", "held", "need", "error", "messages")

    def __init__(self, model: str, max_message: int) -> None:
        self.model = model
        self.max_message = max_message
        self.parts: list[bytes] = []  # the incomplete message held so far
        self.held = 0  # its bytes
        self.need = 0  # bytes (prefix included) it will have; 0 = prefix not complete yet
        self.error = ""
        self.messages = 0  # messages rewritten

    def feed(self, data: bytes) -> bytes | None:
        if self.error:
            return None
        if self.parts:
            if self.need and self.held + len(data) < self.need:  # still incomplete: no copy
                self.parts.append(data)
                self.held += len(data)
                return b""
            self.parts.append(data)
            buf = b"".join(self.parts)
            self.parts = []
            self.held = 0
        else:
            buf = data
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            flag = buf[pos]
            if flag != 0:
                return self._refuse(f"message {self.messages + 1} is compressed" if flag == 1 else
                                    f"message {self.messages + 1} has an invalid gRPC flag byte {flag}")
            if n - pos < 5:
                self.need = 0
                break
            length = int.from_bytes(buf[pos + 1:pos + 5], "big")
            if length > self.max_message:
                return self._refuse(f"message {self.messages + 1} is {length} bytes, over the "
                                    f"{self.max_message} bytes held to rewrite one message")
            stop = pos + 5 + length
            if stop > n:
                self.need = 5 + length
                break
            body = rewrite_message_body(buf[pos + 5:stop], self.model)
            if body is None:
                return self._refuse(f"message {self.messages + 1} is not a protobuf message with a "
                                    "string model_name")
            out.append(b"\x00" + len(body).to_bytes(4, "big") + body)
            self.messages += 1
            pos = stop
        if pos < n:
            self.parts.append(buf[pos:] if pos else buf)
            self.held = n - pos
        return b"".join(out) if out else b""

    def _refuse(self, why: str) -> None:
        self.error = why
        self.parts = []
        self.held = 0
        return None
