"""Small TCP socket facts the splice needs: cookies, bytes written, non-blocking copy.

The kernel moves spliced bytes out of user space's sight, so the driver reads
what it needs to know straight from the sockets: the cookie that keys the
maps, and how many bytes a socket has accepted for sending (to tell when
everything redirected into it has really gone out before shutting it down).
"""
from __future__ import annotations

import fcntl
import select
import socket
import struct
import time

SO_COOKIE = 57
TIOCOUTQ = 0x5411
TCP_INFO_LEN = 232
BYTES_ACKED_OFFSET = 120  # struct tcp_info.tcpi_bytes_acked (__u64), Linux >= 4.1


def cookie(sock: socket.socket) -> int:
    """The socket's kernel cookie (SO_COOKIE), stable for its lifetime."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


def check_tcp(sock: socket.socket, role: str) -> None:
    """Raises ValueError unless `sock` is a connected TCP socket."""
    if sock.fileno() < 0:
        raise ValueError(f"{role} socket is closed")
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"{role} socket must be a TCP (AF_INET/AF_INET6 stream) socket, got {sock!r}")
    try:
        sock.getpeername()
    except OSError:
        raise ValueError(f"{role} socket is not connected") from None


def bytes_written(sock: socket.socket) -> int:
    """Bytes ever queued for sending on `sock` (acked + still in the send queue).

    Reads acked first, then the queue, so a concurrent ACK can only make the
    result smaller than the truth, never larger: waiting on it is safe.
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    acked = struct.unpack_from("<Q", info, BYTES_ACKED_OFFSET)[0] if len(info) >= BYTES_ACKED_OFFSET + 8 else 0
    outq = struct.unpack("<i", fcntl.ioctl(sock.fileno(), TIOCOUTQ, b"\0\0\0\0"))[0]
    return acked + outq


def _read_now(sock: socket.socket, limit: int) -> tuple[bytes, str]:
    """Non-blocking reads until the queue is empty, EOF/error, or `limit` bytes: (data, "empty"|"eof"|"limit")."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        try:
            data = sock.recv(min(1 << 20, limit - total), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return b"".join(chunks), "empty"
        except ConnectionError:
            return b"".join(chunks), "eof"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)
        total += len(data)
    return b"".join(chunks), "limit"


def read_round(sock: socket.socket, limit: int) -> tuple[bytes, bool]:
    """Reads until the queue is empty or `limit` bytes; and whether it ended on an empty queue.

    EOF and errors count as empty: nothing more will arrive to be split.
    """
    data, end = _read_now(sock, limit)
    return data, end != "limit"


def read_available(sock: socket.socket, limit: int = 64 << 20) -> tuple[bytes, bool]:
    """Everything readable now, without blocking; and whether EOF was seen."""
    data, end = _read_now(sock, limit)
    return data, end == "eof"


def send_all(sock: socket.socket, data: bytes, timeout: float = 5.0) -> None:
    """Sends all of `data` without touching the socket's blocking mode.

    Raises TimeoutError if the peer does not take it within `timeout` seconds.
    """
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    while view:
        try:
            n = sock.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            view = view[n:]
            continue
        except (BlockingIOError, InterruptedError):
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"peer did not accept {len(view)} bytes within {timeout}s")
        poller.poll(left * 1000)
