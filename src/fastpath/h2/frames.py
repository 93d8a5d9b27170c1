"""HTTP/2 frame codec (RFC 9113 §4, §6): parse frames out of a byte buffer, build frames.

The fast path reads every frame header but passes DATA payloads through as
bytes; this module is the only place that knows the wire layout.
"""
from __future__ import annotations

import struct
import time
from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20
# Not a wire flag: FrameReader sets it on a HEADERS whose priority names its own stream
# (a stream error, RFC 9113 §5.3.1, which the connection answers).
SELF_DEPENDENT: Final = 0x100

# Settings identifiers.
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

# Error codes.
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
SETTINGS_TIMEOUT: Final = 0x4
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
CONNECT_ERROR: Final = 0xA
ENHANCE_YOUR_CALM: Final = 0xB

ERROR_NAMES: Final = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

DEFAULT_WINDOW: Final = 65535
DEFAULT_MAX_FRAME: Final = 16384
MAX_WINDOW: Final = 2**31 - 1
MAX_STREAM_ID: Final = 2**31 - 1

_HDR: Final = struct.Struct(">HBBBL")  # 24-bit length as (high 16, low 8), type, flags, stream id
_pack_hdr: Final = _HDR.pack
_pack_u32: Final = struct.Struct(">L").pack


class H2Error(Exception):
    """A protocol violation: `code` is the RFC 9113 error code to send, `stream_id` 0 = connection error."""

    def __init__(self, code: int, message: str, stream_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.stream_id = stream_id

    @property
    def code_name(self) -> str:
        return ERROR_NAMES.get(self.code, hex(self.code))


def frame_header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte frame header (RFC 9113 §4.1); the one encoder every part of fastpath uses."""
    return _pack_hdr(length >> 8, length & 0xFF, ftype, flags, stream_id)


def unpack_frame_header(buf: bytes, pos: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at `pos`; the one decoder fastpath uses."""
    if len(buf) - pos < 9 or pos < 0:
        raise ValueError(f"a frame header is 9 bytes; {max(0, len(buf) - pos)} at position {pos}")
    # FrameReader._feed inlines these same reads (per frame, no call or tuple).
    return ((buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2], buf[pos + 3], buf[pos + 4],
            ((buf[pos + 5] & 0x7F) << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8])


def read_u32(payload: bytes, pos: int = 0) -> int:
    """The big-endian 32-bit integer at `pos` (window increments, settings values, error codes)."""
    if len(payload) - pos < 4 or pos < 0:
        raise ValueError(f"a 32-bit field needs 4 bytes; {max(0, len(payload) - pos)} at position {pos}")
    return (payload[pos] << 24) | (payload[pos + 1] << 16) | (payload[pos + 2] << 8) | payload[pos + 3]


def data_frame(stream_id: int, payload: bytes, end_stream: bool = False) -> bytes:
    return _pack_hdr(len(payload) >> 8, len(payload) & 0xFF, DATA, END_STREAM if end_stream else 0, stream_id) + payload


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """HEADERS, plus CONTINUATION frames when the block exceeds the peer's max frame size."""
    flags = END_STREAM if end_stream else 0
    n = len(block)
    if n <= max_frame:
        return _pack_hdr(n >> 8, n & 0xFF, HEADERS, flags | END_HEADERS, stream_id) + block
    parts = [block[i : i + max_frame] for i in range(0, n, max_frame)]
    out = [frame_header(len(parts[0]), HEADERS, flags, stream_id), parts[0]]
    for k, part in enumerate(parts[1:], 1):
        last = k == len(parts) - 1
        out += [frame_header(len(part), CONTINUATION, END_HEADERS if last else 0, stream_id), part]
    return b"".join(out)


def settings_frame(settings: dict[int, int] | None = None, ack: bool = False) -> bytes:
    payload = b"".join(struct.pack(">HL", k, v) for k, v in (settings or {}).items())
    return frame_header(len(payload), SETTINGS, ACK if ack else 0, 0) + payload


def ping_frame(opaque: bytes, ack: bool = False) -> bytes:
    return frame_header(8, PING, ACK if ack else 0, 0) + opaque


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _pack_hdr(0, 4, WINDOW_UPDATE, 0, stream_id) + _pack_u32(increment)


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return _pack_hdr(0, 4, RST_STREAM, 0, stream_id) + _pack_u32(code)


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    payload = struct.pack(">LL", last_stream_id & MAX_STREAM_ID, code) + debug
    return frame_header(len(payload), GOAWAY, 0, 0) + payload


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise H2Error(FRAME_SIZE_ERROR, f"SETTINGS payload of {len(payload)} bytes is not a multiple of 6")
    out = [struct.unpack_from(">HL", payload, i) for i in range(0, len(payload), 6)]
    for key, value in out:
        if key == SETTINGS_ENABLE_PUSH and value > 1:
            raise H2Error(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH must be 0 or 1, got {value}")
        if key == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise H2Error(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1")
        if key == SETTINGS_MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
            raise H2Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} outside 16384..16777215")
    return out


def parse_window_update(payload: bytes, stream_id: int) -> int:
    if len(payload) != 4:
        raise H2Error(FRAME_SIZE_ERROR, f"WINDOW_UPDATE payload must be 4 bytes, got {len(payload)}")
    inc = read_u32(payload) & MAX_WINDOW
    if inc == 0:
        raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment", stream_id)
    return inc


def parse_rst_stream(payload: bytes) -> int:
    if len(payload) != 4:
        raise H2Error(FRAME_SIZE_ERROR, f"RST_STREAM payload must be 4 bytes, got {len(payload)}")
    return read_u32(payload)


def parse_goaway(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < 8:
        raise H2Error(FRAME_SIZE_ERROR, f"GOAWAY payload must be at least 8 bytes, got {len(payload)}")
    last, code = struct.unpack_from(">LL", payload)
    return last & MAX_STREAM_ID, code, bytes(payload[8:])


def strip_padding(payload: bytes, flags: int, stream_id: int) -> bytes:
    """Removes the Pad Length octet and padding of a PADDED DATA/HEADERS frame."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise H2Error(FRAME_SIZE_ERROR, "PADDED frame without a pad length octet", stream_id)
    pad = payload[0]
    if pad >= len(payload):
        raise H2Error(PROTOCOL_ERROR, f"padding of {pad} bytes exceeds the frame payload", stream_id)
    return payload[1 : len(payload) - pad]


def headers_block_fragment(payload: bytes, flags: int, stream_id: int) -> bytes:
    """The header block fragment of a HEADERS frame, without padding and priority fields."""
    fragment, flags = _fragment(payload, flags, stream_id)
    if flags & SELF_DEPENDENT:
        raise H2Error(PROTOCOL_ERROR, "stream depends on itself", stream_id)
    return fragment


def _fragment(payload: bytes, flags: int, stream_id: int) -> tuple[bytes, int]:
    """As `headers_block_fragment`, but a self-dependency is flagged (SELF_DEPENDENT), not raised."""
    if flags & PADDED:
        payload = strip_padding(payload, flags, stream_id)
    if flags & PRIORITY_FLAG:
        if len(payload) < 5:
            raise H2Error(FRAME_SIZE_ERROR, "HEADERS with PRIORITY flag shorter than 5 bytes", stream_id)
        if read_u32(payload) & MAX_STREAM_ID == stream_id:
            flags |= SELF_DEPENDENT
        payload = payload[5:]
    return payload, flags


class FrameReader:
    """Splits a byte stream into frames, and joins HEADERS+CONTINUATION into one block.

    `feed(data)` returns a list of (type, flags, stream_id, payload). A
    violation raises H2Error, unless frames came before it in the same call:
    then those are returned and the error waits in `error` (so frames that
    arrived first are still acted on). HEADERS
    come out with the whole header block as payload (padding and priority
    removed, END_HEADERS set). A frame larger than `max_frame_size` or a header
    block larger than `max_header_block` raises H2Error, so a peer cannot make
    us buffer without bound (CONTINUATION floods included).
    """

    __slots__ = ("buf", "max_frame_size", "max_header_block", "_cont", "frames_seen", "_cont_since", "error")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME, max_header_block: int = 65536) -> None:
        self.buf = bytearray()
        self.max_frame_size = max_frame_size
        self.max_header_block = max_header_block
        self._cont: list | None = None  # [stream_id, flags, [fragments], size] while CONTINUATION pending
        self._cont_since = 0.0
        self.frames_seen = 0
        self.error: H2Error | None = None

    def pending_since(self) -> float:
        """When the header block still waiting for CONTINUATION started (0.0 = none pending)."""
        return self._cont_since if self._cont is not None else 0.0

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        out: list[tuple[int, int, int, bytes]] = []
        try:
            self._feed(data, out)
        except H2Error as e:
            if not out:
                raise
            self.error = e
            self.buf.clear()
        return out

    def _feed(self, data: bytes, out: list[tuple[int, int, int, bytes]]) -> None:
        buf = self.buf
        if buf:
            buf += data
            view = bytes(buf)
        else:
            view = data
        n = len(view)
        pos = 0
        max_frame = self.max_frame_size
        while n - pos >= 9:
            # unpack_frame_header, inlined: compiled, these are native byte reads with no tuple or int objects.
            length = (view[pos] << 16) | (view[pos + 1] << 8) | view[pos + 2]
            ftype = view[pos + 3]
            flags = view[pos + 4]
            if length > max_frame:
                raise H2Error(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE {max_frame}")
            end = pos + 9 + length
            if end > n:
                break
            sid = ((view[pos + 5] & 0x7F) << 24) | (view[pos + 6] << 16) | (view[pos + 7] << 8) | view[pos + 8]
            payload = view[pos + 9 : end]
            pos = end
            self.frames_seen += 1
            if self._cont is not None:
                self._continuation(ftype, flags, sid, payload, out)
                continue
            if ftype == HEADERS:
                if sid == 0:
                    raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
                if flags & (PADDED | PRIORITY_FLAG):
                    frag, flags = _fragment(payload, flags, sid)
                else:
                    frag = payload
                if not flags & END_HEADERS:
                    if len(frag) > self.max_header_block:
                        raise H2Error(ENHANCE_YOUR_CALM, f"header block over {self.max_header_block} bytes", 0)
                    self._cont = [sid, flags, [frag], len(frag)]
                    self._cont_since = time.monotonic()
                    continue
                out.append((HEADERS, flags, sid, frag))
            elif ftype == CONTINUATION:
                raise H2Error(PROTOCOL_ERROR, "CONTINUATION without a preceding HEADERS")
            else:
                out.append((ftype, flags, sid, payload))
        if pos == n:
            if buf:
                buf.clear()
        elif buf:
            del buf[:pos]
        else:
            buf += view[pos:]

    def _continuation(self, ftype: int, flags: int, sid: int, payload: bytes, out: list) -> None:
        cont = self._cont
        assert cont is not None
        if ftype != CONTINUATION or sid != cont[0]:
            raise H2Error(PROTOCOL_ERROR, f"expected CONTINUATION on stream {cont[0]}, got frame type {ftype} on stream {sid}")
        cont[2].append(payload)
        cont[3] += len(payload)
        if cont[3] > self.max_header_block:
            raise H2Error(ENHANCE_YOUR_CALM, f"header block over {self.max_header_block} bytes (CONTINUATION flood?)")
        if flags & END_HEADERS:
            self._cont = None
            out.append((HEADERS, cont[1] | END_HEADERS, sid, b"".join(cont[2])))
