"""Pieces the DPU tests share: an echo backend and a counting relay inside the card's namespaces."""
from __future__ import annotations

import socket
import subprocess
import threading
import time

from fastpath.offload import libbpf
from fastpath.offload.dpu_card import PIN_PREFIX, EmulatedCard, state_dir


class Echo:
    """A TCP echo server on a backend address in the card's backend namespace."""

    def __init__(self, card: EmulatedCard, addr: str, port: int = 7000) -> None:
        self.sock = card.socket("net")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(64)
        self.addr = (addr, port)
        self.bytes_in = 0
        self.conns = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.conns += 1
                self._open.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c: socket.socket) -> None:
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                with self._lock:
                    self.bytes_in += len(d)
                c.sendall(d)

    def close(self) -> None:
        """Closes the listener and every connection (a socket keeps its network namespace alive)."""
        self.sock.close()
        with self._lock:
            for c in self._open:
                c.close()
            self._open.clear()


class Relay:
    """The host's proxy path: listens on the VIP, relays to one backend, counts every byte it sees."""

    def __init__(self, card: EmulatedCard, backend: tuple[str, int], port: int = 8000) -> None:
        self.card, self.backend = card, backend
        self.sock = card.socket("host")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((card.vip, port))
        self.sock.listen(64)
        self.port = port
        self.bytes = 0
        self.conns = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            b = self.card.socket("host")
            try:
                b.connect(self.backend)
            except OSError:  # backend gone: the client sees the connection close
                b.close()
                c.close()
                continue
            with self._lock:
                self.conns += 1
                self._open += [c, b]
            for src, dst in ((c, b), (b, c)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                d = b""
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self._lock:
                self.bytes += len(d)
            try:
                dst.sendall(d)
            except OSError:
                return

    def close(self) -> None:
        """Closes the listener and every connection (a socket keeps its network namespace alive)."""
        self.sock.close()
        with self._lock:
            for c in self._open:
                c.close()
            self._open.clear()


def client(card: EmulatedCard, vip_port: int, src_index: int = 0, timeout: float = 5.0) -> socket.socket:
    """A connected client socket from client address `src_index` to the VIP."""
    s = card.socket("cli")
    s.settimeout(timeout)
    s.bind((card.client_addr(src_index), 0))
    s.connect((card.vip, vip_port))
    return s


def round_trip(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        d = s.recv(65536)
        if not d:
            raise ConnectionError(f"closed after {len(got)} of {len(payload)} bytes")
        got += d
    return got


def leftovers(card: EmulatedCard, prog_ids: list[int], map_ids: list[int], wait_s: float = 20.0) -> list[str]:
    """What of `card` is still in the kernel or on disk (empty when destroy() left nothing)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = []
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        out += [f"netns {line.split()[0]}" for line in names.splitlines() if line.startswith(card.name)]
        pin = libbpf.BPF_FS_ROOT / f"{PIN_PREFIX}{card.name}"
        if pin.exists():
            out.append(f"pin dir {pin}")
        if (state_dir() / f"{card.name}.json").exists():
            out.append("descriptor")
        # the kernel frees a deleted namespace (its veths, their tc filters, then programs and maps)
        # from a work queue: seconds later on a busy machine
        live = {o.id for o in libbpf.all_objects()}
        out += [f"prog {i}" for i in prog_ids if i in live]
        out += [f"map {i}" for i in map_ids if i in live]
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)
