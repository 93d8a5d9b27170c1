"""Real TCP end points for the offload tests, run as separate processes (so they can be killed).

server: listens on 127.0.0.1:0, prints its port, and for every connection
        reads an 8-byte header (close after N bytes, 0 = never) then echoes
        everything back until EOF or N bytes, and closes.
client PORT N: connects, sends header 0 and N random bytes, checks the echo,
        prints "ready"; on "go" from stdin does it again and prints "done";
        then waits to be killed.
"""
from __future__ import annotations

import os
import socket
import sys
import threading


def echo(conn: socket.socket) -> None:
    try:
        header = b""
        while len(header) < 8:
            chunk = conn.recv(8 - len(header))
            if not chunk:
                return
            header += chunk
        limit = int.from_bytes(header, "big") or None
        seen = 0
        while limit is None or seen < limit:
            data = conn.recv(min(1 << 16, limit - seen) if limit else 1 << 16)
            if not data:
                break
            seen += len(data)
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def server() -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    print(lst.getsockname()[1], flush=True)
    while True:
        conn, _ = lst.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def exchange(sock: socket.socket, n: int) -> None:
    payload = os.urandom(n)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise SystemExit("connection closed early")
        got += chunk
    sender.join()
    if bytes(got) != payload:
        raise SystemExit("echo mismatch")


def client(port: int, n: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((0).to_bytes(8, "big"))
    exchange(sock, n)
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "go":
        exchange(sock, n)
        print("done", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
