"""The transport of an HTTP/2 connection: uvloop bytes in and out of a sans-IO `H2Connection`.

All protocol logic lives in `fastpath.h2.connection`; this class only moves
bytes. Output is queued per connection and written once per event (one
`transport.write` per read event, whatever number of frames it produced),
which is what keeps the CPU per message low.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Final

from fastpath.h2 import frames as fr
from fastpath.h2.connection import H2Connection, H2Stream, Half

from .limits import Limits

__all__ = ["H2Transport", "Half", "after_flush", "flush_dirty"]

log = logging.getLogger("fastpath.dataplane")

_dirty: Final[list["H2Transport"]] = []
_after: Final[list[tuple[Callable[[Any], None], Any]]] = []


class _Event:
    """Whether a read event is being handled (its flush_dirty is sure to follow)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


_event: Final = _Event()


def after_flush(fn: Callable[[Any], None], arg: Any) -> None:
    """Runs `fn(arg)` once this event's frames are written.

    For bookkeeping no peer waits on (a finished call's statistics and metrics): done after the
    write instead of before it, it leaves the client's latency. It still runs before the loop
    takes the next event, so routing never sees it undone. Outside an event loop (sans-IO use)
    it runs at once.
    """
    if not _after and not _event.depth:
        try:
            asyncio.get_running_loop().call_soon(flush_dirty)  # a path that never flushes still runs it
        except RuntimeError:
            fn(arg)
            return
    _after.append((fn, arg))


def flush_dirty() -> None:
    """Writes every connection's queued frames (one transport write per connection per event),
    then runs the `after_flush` work, and writes what that queued."""
    while True:
        while _dirty:
            conn = _dirty.pop()
            h2 = conn.h2
            h2.queued = False
            out = h2.out
            if out:
                t = conn.transport
                if t is not None and not conn.closed:
                    t.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
            if conn.close_after_flush and conn.transport is not None:
                conn.transport.close()
        if not _after:
            return
        work = _after[:]
        _after.clear()
        for fn, arg in work:
            try:
                fn(arg)
            except Exception:
                log.exception("internal error in call bookkeeping")


class H2Transport:
    """An asyncio protocol (duck-typed, so mypyc can compile it) around an `H2Connection`; subclasses are its handler."""

    client_side = False  # True for connections to backends (we are the HTTP/2 client)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.close_after_flush = False
        self.peer = "?"
        h2 = self.h2 = H2Connection(limits, self.client_side, self)
        h2.wake = self._wake
        self.send = h2.send
        self.send_headers = h2.send_headers

    @property
    def streams(self) -> dict[int, H2Stream]:
        return self.h2.streams

    def _wake(self) -> None:
        _dirty.append(self)

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.unsent_bytes = transport.get_write_buffer_size  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        _event.depth += 1
        try:
            self.h2.receive_data(data)
        except Exception:
            log.exception("internal error on connection with %s", self.peer)
            self.h2.connection_error(fr.INTERNAL_ERROR, "internal error")
        finally:
            _event.depth -= 1
            flush_dirty()

    def pause_writing(self) -> None:  # windows bound what we write; nothing more to do
        pass

    def resume_writing(self) -> None:
        pass

    # -- handler: per stream (each side implements these) -----------------------
    def on_headers(self, st: H2Stream, headers: list, end: bool) -> None:
        raise NotImplementedError

    def on_data(self, st: H2Stream, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def on_reset(self, st: H2Stream, code: int) -> None:
        raise NotImplementedError

    def on_stream_error(self, st: H2Stream, code: int, message: str) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    # -- handler: connection-level -------------------------------------------
    def on_connection_error(self, code: int, message: str) -> None:
        """We sent GOAWAY(code): write it, then close."""
        self.note_error(code, message)
        log.warning("closing connection with %s: %s (%s)", self.peer, message, fr.ERROR_NAMES.get(code, code))
        self.close_after_flush = True
        if not self.h2.queued:
            self._wake()

    def on_limit(self, name: str) -> None:
        pass

    def note_error(self, code: int, message: str) -> None:
        pass

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        pass

    def on_refused(self, sid: int, why: str, message: str) -> None:
        pass

    def close_soon(self) -> None:
        """Closes the transport once what is queued is written."""
        self.close_after_flush = True
        self._wake()


