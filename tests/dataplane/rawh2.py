"""A raw HTTP/2 client over a blocking socket, for tests that must misbehave on purpose.

It encodes with the reference `hpack` package (not fastpath's encoder), so the
proxy is checked against an independent implementation.
"""
from __future__ import annotations

import socket
import struct
import time

import hpack

from fastpath.h2 import frames as fr


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">L", len(payload)) + payload


class RawH2:
    def __init__(self, address: str, settings: dict[int, int] | None = None, preface: bool = True) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.reader = fr.FrameReader(max_frame_size=1 << 24, max_header_block=1 << 20)
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.next_id = 1
        if preface:
            self.send(fr.PREFACE + fr.settings_frame(settings or {}))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def headers(self, path: str, metadata: tuple = (), end: bool = False, sid: int | None = None) -> int:
        sid = sid or self.next_id
        self.next_id = max(self.next_id, sid + 2)
        hs = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "fastpath"),
              ("content-type", "application/grpc"), ("te", "trailers"), *metadata]
        self.send(fr.headers_frames(sid, self.enc.encode(hs), end))
        return sid

    def call(self, path: str, body: bytes, metadata: tuple = ()) -> int:
        sid = self.headers(path, metadata)
        self.send(fr.data_frame(sid, grpc_message(body), end_stream=True))
        return sid

    def read(self, timeout: float = 1.0) -> list[tuple[int, int, int, bytes]]:
        """Frames that arrive within `timeout` (decoding header blocks); [] when the connection closed."""
        self.sock.settimeout(timeout)
        got = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            for f in self.reader.feed(data):
                if f[0] == fr.HEADERS:
                    f = (f[0], f[1], f[2], self.dec.decode(f[3], raw=True))
                got.append(f)
            self.sock.settimeout(0.005)  # got something: return once the socket goes quiet
        self.frames += got
        return got

    def read_until(self, pred, timeout: float = 5.0) -> list:
        end = time.monotonic() + timeout
        got = []
        while time.monotonic() < end:
            got += self.read(0.1)
            if pred(got):
                return got
        raise AssertionError(f"condition not met in {timeout}s; frames: {[(f[0], f[1], f[2]) for f in got][:20]}")

    def close(self) -> None:
        self.sock.close()
    closed = False


def trailers_of(frames: list, sid: int) -> dict:
    out: dict = {}
    for ftype, flags, s, payload in frames:
        if ftype == fr.HEADERS and s == sid:
            out.update({k.decode(): v.decode() for k, v in payload})
    return out
