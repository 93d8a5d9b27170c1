"""Free loopback ports, for stacks started side by side (tests, benchmarks, `--base-port`)."""
from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def block_is_free(base: int, n: int) -> bool:
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port_block(n: int, attempts: int = 500) -> int:
    """A base port with n consecutive free ports, below the kernel's ephemeral range (32768+)
    so outgoing connections cannot take them meanwhile (for `config.with_ports`)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(15000, 32000 - n)
        if block_is_free(base, n):
            return base
    raise RuntimeError(f"no block of {n} free ports found on 127.0.0.1")
