"""The kernel splice end to end: client process/socket <-> relay (this process) <-> echo server process."""
from __future__ import annotations

import ctypes
import logging
import socket
import time

import pytest

from tests.offload.splice_support import (
    Proc,
    PythonRelay,
    exchange,
    header,
    map_entries,
    open_fds,
    relay_connect,
    wait_until,
)

pytestmark = pytest.mark.bpf

MB = 1 << 20


def spliced_flow(driver, server_port: int, session: str, warmup: int = 64 * 1024):
    """A flow relayed in Python for `warmup` bytes, then spliced. Returns (client, installed, python relay counts)."""
    client, rc, rb = relay_connect(server_port)
    relay = PythonRelay(rc, rb)
    client.sendall(header())
    exchange(client, warmup)
    copied = relay.stop()
    installed = driver.splice(session, rc, rb)
    assert installed.path == "kernel", installed.reason
    return client, installed, copied


def test_payload_after_handoff_is_byte_exact_and_counted_by_the_kernel(driver, servers):
    _, port = servers()
    client, installed, copied = spliced_flow(driver, port, "s-bulk")
    assert copied == [8 + 64 * 1024, 64 * 1024]
    sent = 0
    for size in (1, 1000, 3 * MB, 5 * MB + 17):
        exchange(client, size)
        sent += size
    stats = driver.counters()["s-bulk"]
    # Python moved nothing after the handoff: the relay is stopped and the driver forwarded no leftovers.
    assert stats.python_bytes == 0
    assert stats.bytes_to_backend == sent
    assert wait_until(lambda: driver.counters()["s-bulk"].bytes_to_client == sent)
    assert stats.packets_to_backend > 0
    assert driver.errors() == {"no_peer": 0, "redirect": 0, "no_flow": 0}
    (flow,) = driver.list()
    assert flow.path == "kernel" and flow.session == "s-bulk"
    assert flow.client == client.getsockname() and flow.backend == ("127.0.0.1", port)
    client.close()
    assert installed.wait(10), "flow did not end after the client closed"
    assert installed.end_reason == "closed"
    assert installed.final.bytes_to_backend == sent


def test_bytes_queued_at_handoff_arrive_once_and_in_order(driver, servers):
    _, port = servers()
    client, rc, rb = relay_connect(server_port=port)
    relay = PythonRelay(rc, rb)
    client.sendall(header())
    exchange(client, 4096)
    relay.stop()
    # The client keeps talking while nobody relays: 200 KB pile up in the relay's
    # receive queue; the relay has read part of a socket buffer, as a relay does.
    queued = bytes(range(256)) * 800
    client.sendall(queued)
    time.sleep(0.05)
    half_read = rc.recv(777)
    rb.sendall(half_read)
    time.sleep(0.05)  # its echo now waits in the backend-side queue
    installed = driver.splice("s-queued", rc, rb)
    assert installed.path == "kernel", installed.reason
    tail = b"after-the-handoff" * 1000
    client.sendall(tail)
    want = queued + tail
    got = bytearray()
    client.settimeout(10)
    while len(got) < len(want):
        chunk = client.recv(MB)
        assert chunk, "connection closed early"
        got += chunk
    assert bytes(got) == want  # exactly once, in order, both ways
    stats = driver.counters()["s-queued"]
    assert stats.python_bytes_to_backend + stats.bytes_to_backend == len(want) - len(half_read)
    assert wait_until(lambda: driver.counters()["s-queued"].bytes_to_client + driver.counters()["s-queued"].python_bytes_to_client == len(want))
    client.close()
    assert installed.wait(10)


def _assert_clean(driver, fds_before: set[int]) -> None:
    assert map_entries(driver) == {"socks": 0, "targets": 0, "peers": 0, "flows": 0}
    assert open_fds() - fds_before == set(), "the driver left file descriptors open"


@pytest.mark.parametrize("closer", ["client", "server"])
def test_closing_either_end_releases_everything_and_spares_other_flows(driver, servers, closer):
    _, port = servers()
    fds_before = open_fds()
    other, other_installed, _ = spliced_flow(driver, port, "s-other")
    if closer == "client":
        client, installed, _ = spliced_flow(driver, port, "s-closing")
        exchange(client, MB)
        client.close()
    else:
        # The server closes by itself after 8 + 4096 + 1 MB bytes (its header says so).
        client, rc, rb = relay_connect(port)
        relay = PythonRelay(rc, rb)
        client.sendall(header(4096 + MB))
        exchange(client, 4096)
        relay.stop()
        installed = driver.splice("s-closing", rc, rb)
        assert installed.path == "kernel"
        exchange(client, MB)
        client.settimeout(10)
        assert client.recv(1) == b"", "the server's FIN was not passed on to the client"
        client.close()  # half-closed until the client closes too
    assert installed.wait(10), "flow did not end"
    assert installed.final.bytes_to_backend == MB
    assert [f.session for f in driver.list()] == ["s-other"]
    assert map_entries(driver) == {"socks": 2, "targets": 2, "peers": 2, "flows": 1}
    exchange(other, 2 * MB)  # the other flow is untouched
    other.close()
    assert other_installed.wait(10)
    _assert_clean(driver, fds_before)


def test_half_close_lets_the_answer_finish(driver, servers):
    """A client that shuts its write side after the request still gets the whole answer."""
    _, port = servers()
    client, installed, _ = spliced_flow(driver, port, "s-half-close")
    request = bytes(range(256)) * 4096  # 1 MB, echoed back as the "answer"
    client.sendall(request)
    client.shutdown(socket.SHUT_WR)
    got = bytearray()
    client.settimeout(10)
    while chunk := client.recv(MB):
        got += chunk
    assert bytes(got) == request  # complete, then EOF
    assert installed.wait(10) and installed.end_reason == "closed"
    client.close()


def test_killed_server_process_ends_its_flow_only(driver, servers):
    victim, port = servers()
    _, port2 = servers()
    fds_before = open_fds()
    other, other_installed, _ = spliced_flow(driver, port2, "s-other")
    client, installed, _ = spliced_flow(driver, port, "s-victim")
    exchange(client, MB)
    victim.kill()
    client.settimeout(10)
    assert client.recv(1) == b"", "the client was not told its server went away"
    client.close()
    assert installed.wait(10), "flow did not end after its server was killed"
    exchange(other, MB)
    assert [f.session for f in driver.list()] == ["s-other"]
    other.close()
    assert other_installed.wait(10)
    _assert_clean(driver, fds_before)


def test_killed_client_process_ends_its_flow_only(driver, servers):
    _, port = servers()
    fds_before = open_fds()
    other, other_installed, _ = spliced_flow(driver, port, "s-other")
    procs: list[Proc] = []

    def client_process(relay_port: int) -> None:
        procs.append(Proc("client", str(relay_port), str(256 * 1024)))

    _, rc, rb = relay_connect(port, client_factory=client_process)
    (proc,) = procs
    relay = PythonRelay(rc, rb)
    try:
        assert proc.line() == "ready"
        copied = relay.stop()
        assert copied == [8 + 256 * 1024, 256 * 1024]
        installed = driver.splice("s-victim", rc, rb)
        assert installed.path == "kernel"
        proc.say("go")
        assert proc.line() == "done"  # the client verified its echo through the kernel path
        assert driver.counters()["s-victim"].bytes_to_backend == 256 * 1024
    finally:
        proc.kill()
    assert installed.wait(10), "flow did not end after its client was killed"
    exchange(other, MB)
    other.close()
    assert other_installed.wait(10)
    _assert_clean(driver, fds_before)


def test_a_session_is_spliced_once(driver, servers):
    _, port = servers()
    client, installed, _ = spliced_flow(driver, port, "s-once")
    second, rc, rb = relay_connect(port)
    try:
        with pytest.raises(ValueError, match="already spliced"):
            driver.splice("s-once", rc, rb)
        assert map_entries(driver) == {"socks": 2, "targets": 2, "peers": 2, "flows": 1}
    finally:
        for s in (second, rc, rb, client):
            s.close()
    assert installed.wait(10)


def test_remove_ends_the_flow(driver, servers):
    _, port = servers()
    fds_before = open_fds()
    client, installed, _ = spliced_flow(driver, port, "s-removed")
    assert driver.remove("s-removed") is True
    assert installed.wait(5) and installed.end_reason == "removed"
    assert driver.remove("s-removed") is False
    client.settimeout(5)
    try:
        assert client.recv(1) == b""
    except ConnectionResetError:
        pass
    client.close()
    _assert_clean(driver, fds_before)


def test_full_flow_table_leaves_the_session_on_python(bpf_ready, servers, caplog):
    from fastpath.offload.ebpf import EbpfDriver

    _, port = servers()
    with EbpfDriver(pin_dir=None, max_flows=1) as driver:
        first, first_installed, _ = spliced_flow(driver, port, "s-first")
        client, rc, rb = relay_connect(port)
        client.sendall(header())
        with caplog.at_level(logging.WARNING, logger="fastpath.offload"):
            result = driver.splice("s-second", rc, rb)
        assert result.path == "python" and not result.offloaded
        assert "map is full" in result.reason and "s-second" in result.reason
        assert result.final.python_bytes == 0  # refused before any byte was touched
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "stays on the Python relay" in warnings[0].getMessage()
        # The caller still owns the sockets and keeps relaying in Python.
        relay = PythonRelay(rc, rb)
        exchange(client, MB)
        assert relay.stop() == [8 + MB, MB]
        exchange(first, MB)
        assert map_entries(driver) == {"socks": 2, "targets": 2, "peers": 2, "flows": 1}
        for s in (client, rc, rb, first):
            s.close()
        assert first_installed.wait(10)


def test_full_socket_map_rolls_back_a_half_inserted_flow(bpf_ready, servers):
    from fastpath.offload.ebpf import EbpfDriver

    _, port = servers()
    fillers = []
    with EbpfDriver(pin_dir=None, max_flows=2) as driver:
        # Fill 3 of the 4 socket slots so the client socket fits and the backend socket does not.
        for _ in range(3):
            c, rc, rb = relay_connect(port)
            fillers += [c, rc, rb]
            cookie = int.from_bytes(rc.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
            driver.maps.socks.update(ctypes.c_uint64(cookie), ctypes.c_uint64(rc.fileno()))
        client, rc, rb = relay_connect(port)
        client.sendall(header())
        time.sleep(0.05)
        result = driver.splice("s-half", rc, rb)
        assert result.path == "python" and "backend socket" in result.reason
        assert result.final.python_bytes_to_backend == 8  # the header, forwarded during the attempt
        assert map_entries(driver) == {"socks": 3, "targets": 0, "peers": 0, "flows": 0}
        exchange_relay = PythonRelay(rc, rb)
        exchange(client, MB)
        exchange_relay.stop()
        for s in fillers + [client, rc, rb]:
            s.close()
        assert wait_until(lambda: map_entries(driver)["socks"] == 0)


def test_splice_refuses_what_is_not_a_connected_tcp_socket(driver):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    try:
        with pytest.raises(ValueError, match="TCP"):
            driver.splice("s", udp, unconnected)
        tcp_a, tcp_b = socket.socketpair(socket.AF_UNIX)
        with pytest.raises(ValueError, match="TCP"):
            driver.splice("s", tcp_a, tcp_b)
        tcp_a.close()
        tcp_b.close()
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        c = socket.create_connection(lst.getsockname())
        with pytest.raises(ValueError, match="not connected"):
            driver.splice("s", c, unconnected)
        c.close()
        lst.close()
    finally:
        udp.close()
        unconnected.close()


def test_a_peer_that_does_not_read_cannot_pile_up_kernel_memory(bpf_ready):
    """The splice has no backpressure; the driver aborts a flow whose peer stopped reading."""
    from fastpath.offload.ebpf import EbpfDriver

    def pair():
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        lst.close()
        return c, s

    with EbpfDriver(pin_dir=None, max_backlog=8 * MB) as driver:
        client, rc = pair()
        rb, server = pair()  # `server` never reads
        installed = driver.splice("s-flood", rc, rb)
        assert installed.path == "kernel"
        client.setblocking(False)
        chunk = bytes(64 * 1024)
        deadline = time.monotonic() + 15
        pushed = 0
        while not installed.done and time.monotonic() < deadline:
            try:
                pushed += client.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        assert installed.wait(5), f"flow not aborted after {pushed} bytes pushed at a peer that does not read"
        assert "backend is not reading" in installed.end_reason
        assert pushed > 8 * MB
        assert map_entries(driver) == {"socks": 0, "targets": 0, "peers": 0, "flows": 0}
        client.close()
        server.close()


def test_ipv6_flows_splice_too(driver):
    def pair():
        lst = socket.socket(socket.AF_INET6)
        lst.bind(("::1", 0))
        lst.listen()
        c = socket.create_connection(lst.getsockname()[:2])
        s, _ = lst.accept()
        lst.close()
        return c, s

    client, rc = pair()
    rb, server = pair()
    installed = driver.splice("s-v6", rc, rb)
    assert installed.path == "kernel"
    payload = bytes(range(256)) * 4096
    client.sendall(payload)
    got = bytearray()
    server.settimeout(10)
    while len(got) < len(payload):
        got += server.recv(MB)
    assert bytes(got) == payload and driver.counters()["s-v6"].bytes_to_backend == len(payload)
    assert driver.list()[0].client[0] == "::1"
    client.close()
    server.close()
    assert installed.wait(10) and installed.end_reason == "closed"


def test_a_reset_from_the_client_aborts_only_its_flow(driver, servers):
    _, port = servers()
    fds_before = open_fds()
    other, other_installed, _ = spliced_flow(driver, port, "s-other")
    client, installed, _ = spliced_flow(driver, port, "s-reset")
    client.sendall(bytes(256 * 1024))  # its echo is on the way back, unread, when the client resets
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    client.close()  # RST
    assert installed.wait(10), "flow did not end after the client's reset"
    # The reset itself, or the kernel's send of the echo into the dead socket, whichever is seen first.
    assert installed.end_reason in {"client socket error: Connection reset by peer", "client socket error: Broken pipe",
                                    "client connection reset"}, installed.end_reason
    exchange(other, MB)
    other.close()
    assert other_installed.wait(10)
    _assert_clean(driver, fds_before)


@pytest.mark.parametrize("round_", range(4))
def test_handoff_in_the_middle_of_a_stream_keeps_every_byte_in_order(driver, servers, round_):
    """The client never pauses: the relay stops, splices and the kernel takes over mid-stream."""
    import os
    import threading

    _, port = servers()
    client, rc, rb = relay_connect(port)
    client.sendall(header())
    relay = PythonRelay(rc, rb)
    payload = os.urandom(12 * MB)
    got = bytearray()

    def read_all() -> None:
        client.settimeout(20)
        while len(got) < len(payload):
            chunk = client.recv(MB)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    step = 4096 + 512 * round_  # chunk sizes that do not line up with socket buffers

    def send_all() -> None:
        for i in range(0, len(payload), step):
            client.sendall(payload[i:i + step])

    sender = threading.Thread(target=send_all)
    sender.start()
    assert wait_until(lambda: relay.copied[0] > 2 * MB)
    relay.stop()
    installed = driver.splice(f"s-mid-{round_}", rc, rb)
    assert installed.path == "kernel", installed.reason
    sender.join(30)
    reader.join(30)
    assert len(got) == len(payload) and bytes(got) == payload
    stats = driver.counters()[f"s-mid-{round_}"]
    assert relay.copied[0] - 8 + stats.python_bytes_to_backend + stats.bytes_to_backend == len(payload)
    assert driver.errors() == {"no_peer": 0, "redirect": 0, "no_flow": 0}
    client.close()
    assert installed.wait(10)
