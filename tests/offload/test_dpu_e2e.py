"""End to end through the emulated card with real fastpath processes.

A simulated GPU site runs in the card's backend namespace, the controller
and the proxy (both `[offload] driver = "dpu"`) in the host namespace, the
client in the client namespace. The client's first session goes through the
proxy; the controller learns its affinity and installs a card rule; the
client's next connection reaches the backend through the card only: the
proxy accepts no connection for it, and the card's counters equal, byte for
byte, what the client sent and received. The connection opened through the
proxy keeps working throughout. Everything is removed afterwards.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import hpack
import pytest
from fastpath.config import load_config, parse_config, with_ports
from fastpath.launch import stop_process
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.h2 import frames as fr
from fastpath.offload.dpu_card import EmulatedCard
from fastpath.offload.dpu_demo import proxy_metric, reachable
from fastpath.ports import free_port_block

from tests.dataplane.rawh2 import RawH2, trailers_of
from tests.offload.dpu_support import leftovers
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.bpf, pytest.mark.slow]
INFER = "/inference.GRPCInferenceService/ModelInfer"


class Counted:
    """A socket that counts the bytes it moves (what the card must have counted)."""

    def __init__(self, sock: socket.socket) -> None:
        self.s, self.sent, self.received = sock, 0, 0

    def sendall(self, data: bytes) -> None:
        self.s.sendall(data)
        self.sent += len(data)

    def recv(self, n: int) -> bytes:
        d = self.s.recv(n)
        self.received += len(d)
        return d

    def settimeout(self, t) -> None:
        self.s.settimeout(t)

    def close(self) -> None:
        self.s.close()


def h2_client(card: EmulatedCard, vip: tuple[str, int]) -> RawH2:
    """A raw HTTP/2 client on a socket of the client namespace."""
    s = card.socket("cli")
    s.settimeout(5)
    s.connect(vip)
    c = RawH2.__new__(RawH2)
    c.sock = Counted(s)
    c.enc, c.dec = hpack.Encoder(), hpack.Decoder()
    c.reader = fr.FrameReader(max_frame_size=1 << 24, max_header_block=1 << 20)
    c.frames, c.next_id = [], 1
    c.send(fr.PREFACE + fr.settings_frame({}))
    return c


def infer(c: RawH2, session: str, prompt: str) -> dict:
    req = pb.ModelInferRequest(model_name="mistral-7b", id="e2e")
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(prompt.encode())
    req.parameters["max_tokens"].int64_param = 4
    sid = c.call(INFER, req.SerializeToString(), (("x-fastpath-session", session), ("x-fastpath-region", "eu-west")))
    c.read_until(lambda fs: any(f[0] == fr.HEADERS and f[2] == sid and f[1] & fr.END_STREAM for f in fs), 10)
    return trailers_of(c.frames, sid)


def hostport(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def dpu_cli(*args: str, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "dpu", *args], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_repeat_connection_bypasses_the_proxy_byte_exact(bpf_ready, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPATH_DPU_DIR", str(tmp_path / "dpu"))
    card = EmulatedCard(clients=1, backends=1).create()
    ids = (list(card.info.prog_ids), list(card.info.map_ids))
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, FASTPATH_DPU_CARD=card.name)
    try:
        base = free_port_block(10)
        raw = dict(with_ports(load_config(), base).raw)
        site = next(b for b in raw["backends"] if b["name"] == "euw1-a100")
        site["address"] = f"{card.backend_addr()}:{base}"
        site["metrics_url"] = f"http://{card.backend_addr()}:{base + 1}/metrics"
        raw["backends"] = [site]
        raw["proxy"] = dict(raw["proxy"], listen=f"{card.vip}:{base + 2}", metrics_listen=f"{card.vip}:{base + 3}")
        raw["control"] = dict(raw["control"], listen=f"127.0.0.1:{base + 4}")
        raw["offload"] = {"driver": "dpu"}
        cfg = parse_config(raw, "dpu e2e")
        path = cfg.write(tmp_path / "fastpath.toml")

        def start(side: str, *args: str) -> subprocess.Popen:
            argv = card.exec_argv(side, [sys.executable, "-m", "fastpath.cli", *args, "--config", str(path)])
            p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{args[0]}.log", "w"))
            procs.append(p)
            return p

        start("net", "sim", "--site", "euw1-a100")
        wait_for(lambda: reachable(card, "host", *hostport(site["address"])), 20, "the site")
        start("host", "controller")
        wait_for(lambda: reachable(card, "host", *hostport(cfg.control.listen)), 20, "the controller")
        start("host", "proxy")
        vip = (card.vip, base + 2)
        wait_for(lambda: reachable(card, "cli", *vip), 20, "the proxy")

        # First session: through the proxy (pinned), and the connection stays open.
        first = h2_client(card, vip)
        assert infer(first, "sess-dpu", "hello").get("grpc-status") == "0"

        # The controller learns the affinity from the proxy's report and the card inserts the rule.
        def inserted():
            doc = dpu_cli("rules", "--format", "doca", env=env)
            return [e for e in doc["pipes"][0]["entries"]
                    if e["session"] == "sess-dpu" and e["status"] == "DOCA_FLOW_ENTRY_STATUS_SUCCESS"]
        wait_for(inserted, 20, "the card rule")
        accepted = proxy_metric(card, cfg.proxy.metrics_listen, "fastpath_connections_total")

        # The repeat connection: straight to the backend through the card.
        again = h2_client(card, vip)
        for i in range(3):
            assert infer(again, "sess-dpu", f"again {i}").get("grpc-status") == "0"
        again.read(0.3)  # whatever else the backend sends (pings, window updates) is counted too
        sent, received = again.sock.sent, again.sock.received
        entry = inserted()[0]
        assert entry["query"]["to_backend"]["bytes"] == sent
        assert entry["query"]["to_client"]["bytes"] == received
        assert entry["query"]["connections"] == 1
        assert proxy_metric(card, cfg.proxy.metrics_listen, "fastpath_connections_total") == accepted  # the proxy never saw it

        # `fastpath flows` lists the card's flow with its counters.
        r = subprocess.run(card.exec_argv("host", [sys.executable, "-m", "fastpath.cli", "flows", "--json",
                                                   "--control", cfg.control.listen]),
                           capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        rows = [f for f in json.loads(r.stdout) if f["session"] == "sess-dpu"]
        assert {f["path"] for f in rows} == {"python", "dpu"}
        assert next(f for f in rows if f["path"] == "dpu")["bytes_offload"] == sent + received

        # The connection opened through the proxy still works, through the proxy.
        assert infer(first, "sess-dpu", "still here").get("grpc-status") == "0"
        status = dpu_cli("status", "--json", env=env)
        assert status["flow_table"]["used"] == 1 and status["agent"]["agent"]
        assert status["errors"]["midstream"] >= 1
        again.close()
        first.close()

        # The backend dies: the controller's health probe marks it unhealthy and the rule leaves the card.
        sim = procs[0]
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)

        def removed():
            doc = dpu_cli("rules", "--format", "doca", env=env)
            return [e for e in doc["pipes"][0]["entries"] if e["session"] == "sess-dpu" and e["status"] == "REMOVED"]
        wait_for(removed, 20, "the rule's removal")
        assert "unhealthy" in removed()[0]["reason"]
        assert dpu_cli("status", "--json", env=env)["flow_table"]["used"] == 0
    finally:
        for p in procs:
            stop_process(p)
        card.destroy()
    assert leftovers(card, *ids) == []

