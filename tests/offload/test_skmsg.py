"""The sk_msg shortcut: client and server processes in a cgroup, talking past the relay."""
from __future__ import annotations

import uuid

import pytest

from tests.support.requirements import missing

from tests.offload.splice_support import (
    Proc,
    PythonRelay,
    exchange,
    header,
    relay_connect,
    wait_until,
)

pytestmark = pytest.mark.bpf


@pytest.fixture
def shortcut_cgroup(bpf_ready):
    from fastpath.offload.skmsg import Cgroup, MsgShortcuts, cgroup2_root

    try:
        cgroup2_root()
    except OSError as e:
        missing(f"sk_msg shortcut needs cgroup v2: {e}")
    cg = Cgroup(f"fastpath-test-{uuid.uuid4().hex[:8]}")
    procs: list[Proc] = []
    try:
        with MsgShortcuts(cg.path, max_flows=16) as ms:
            yield cg, ms, procs
            for p in procs:
                p.kill()
    finally:
        for p in procs:
            p.kill()
        cg.close()


def test_shortcut_moves_bytes_past_the_relay(shortcut_cgroup):
    cg, ms, procs = shortcut_cgroup
    server = Proc.in_cgroup(cg, "server")
    procs.append(server)
    server_port = int(server.line())
    ms.watch_port(server_port)
    n = 256 * 1024

    def client_process(relay_port: int) -> None:
        ms.watch_port(relay_port)
        procs.append(Proc.in_cgroup(cg, "client", str(relay_port), str(n)))

    _, rc, rb = relay_connect(server_port, client_factory=client_process)
    client = procs[-1]
    relay = PythonRelay(rc, rb)
    assert client.line() == "ready"  # first exchange went through the Python relay
    assert wait_until(lambda: relay.copied == [8 + n, n])
    before = list(relay.copied)
    result = ms.install("s-msg", rc, rb)
    assert result.path == "kernel", result.reason
    client.say("go")
    assert client.line() == "done"  # the client checked its echo, byte for byte
    stats = ms.counters()["s-msg"]
    assert stats.bytes_to_backend == n and stats.bytes_to_client == n
    assert relay.copied == before, "bytes went through the relay despite the shortcut"
    assert ms.errors() == {"redirect": 0, "no_flow": 0}
    (flow,) = ms.list()
    assert flow.session == "s-msg" and flow.backend == ("127.0.0.1", server_port)
    client.kill()  # its FIN still travels through the relay
    assert wait_until(lambda: not relay.is_alive()), "the relay did not see the client's FIN"
    assert ms.remove("s-msg") and not ms.remove("s-msg")
    rc.close()
    rb.close()
    assert wait_until(lambda: len(ms.ends.keys()) == 0 or all(k.local_port != server_port for k in ms.ends.keys()))  # noqa: SIM118


def test_ends_outside_the_cgroup_stay_on_the_relay(shortcut_cgroup):
    cg, ms, procs = shortcut_cgroup
    server = Proc.in_cgroup(cg, "server")
    procs.append(server)
    server_port = int(server.line())
    ms.watch_port(server_port)
    client, rc, rb = relay_connect(server_port)  # this client (the test process) is not in the cgroup
    try:
        result = ms.install("s-outside", rc, rb)
        assert result.path == "python" and "client end socket is not tracked" in result.reason and str(cg.path) in result.reason
        relay = PythonRelay(rc, rb)
        client.sendall(header())
        exchange(client, 64 * 1024)
        relay.stop()
        assert ms.counters() == {}
    finally:
        for s in (client, rc, rb):
            s.close()
