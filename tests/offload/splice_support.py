"""Pieces the splice tests share: end-point processes, a Python relay, leak checks."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PEER = str(Path(__file__).with_name("peer_proc.py"))


class Proc:
    """A peer_proc.py process, stopped by PID."""

    def __init__(self, *args: str, cgroup=None) -> None:
        argv = [sys.executable, PEER, *args]
        if cgroup is not None:
            argv = cgroup.wrap(argv)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @classmethod
    def in_cgroup(cls, cgroup, *args: str) -> Proc:
        """Started inside `cgroup` (a fastpath.offload.skmsg.Cgroup), so its sockets can be shortcut."""
        return cls(*args, cgroup=cgroup)

    def line(self, timeout: float = 10) -> str:
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("peer process said nothing")
        return self.p.stdout.readline().strip()

    def say(self, text: str) -> None:
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(5)
        for f in (self.p.stdin, self.p.stdout):
            if not f.closed:
                f.close()


def start_server() -> tuple[Proc, int]:
    proc = Proc("server")
    return proc, int(proc.line())


def relay_connect(server_port: int, client_factory=None) -> tuple[socket.socket | None, socket.socket, socket.socket]:
    """A listening relay port; the client connects (here, or via client_factory(port)); the relay dials the server.

    Returns (client socket or None, relay's client-side socket, relay's backend-side socket).
    """
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port)) if client_factory is None else client_factory(port)
    lst.settimeout(10)
    relay_c, _ = lst.accept()
    lst.close()
    relay_b = socket.create_connection(("127.0.0.1", server_port))
    return client, relay_c, relay_b


class PythonRelay(threading.Thread):
    """Copies bytes both ways in user space until stopped; counts what it copied."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        super().__init__(daemon=True)
        self.a, self.b = a, b
        self.copied = [0, 0]  # a->b, b->a
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.a.fileno(), select.POLLIN)
        poller.register(self.b.fileno(), select.POLLIN)
        peer = {self.a.fileno(): (self.b, 0), self.b.fileno(): (self.a, 1)}
        src = {self.a.fileno(): self.a, self.b.fileno(): self.b}
        while not self._halt.is_set():
            for fd, _ev in poller.poll(5):
                data = src[fd].recv(1 << 16)
                if not data:
                    return
                dst, d = peer[fd]
                dst.sendall(data)
                self.copied[d] += len(data)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(5)
        return list(self.copied)


def exchange(sock: socket.socket, n: int) -> bytes:
    """Sends n random bytes through an echo path and returns what came back."""
    payload = os.urandom(n)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    sock.settimeout(20)
    while len(got) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    sender.join()
    assert bytes(got) == payload, f"echo differs: sent {n} bytes, got {len(got)}"
    return payload


def header(close_after: int = 0) -> bytes:
    return close_after.to_bytes(8, "big")


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def map_entries(driver) -> dict[str, int]:
    m = driver.maps
    return {"socks": len(m.socks.keys()), "targets": len(m.targets.keys()), "peers": len(m.peers.keys()), "flows": len(m.flows.keys())}
