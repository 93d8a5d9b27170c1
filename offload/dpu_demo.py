"""`fastpath demo --offload dpu`: the session phase's clients through the emulated card.

The simulated sites run in the card's backend namespace, the controller and
the proxy (driver `dpu`) in the host namespace, one client address per
session in the client namespace. Each session's first turn goes through the
proxy on its own connection, which stays open while the controller learns the
session's affinity and the card inserts its rule; every later turn comes back
on a new connection, as a reconnecting client does. The summary says how many
of those the card switched, the card's byte counters for them against what
the clients counted, and the proxy's share of them (zero bytes: it never
accepted those connections).

The client speaks gRPC over HTTP/2 on plain sockets opened in the client
namespace (hpack for headers), so every byte it moves is counted.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import hpack

from fastpath.config import Config, parse_config
from fastpath.launch import fastpath_argv, stop_process
from fastpath.h2 import frames as fr
from fastpath.ports import free_port_block

INFER = "/inference.GRPCInferenceService/ModelInfer"


class GrpcConn:
    """One HTTP/2 connection from a client address of the card's client namespace; counts its bytes."""

    def __init__(self, card: Any, client_index: int, vip: tuple[str, int]) -> None:
        self.sock = card.socket("cli")
        self.sock.settimeout(10)
        self.sock.bind((card.client_addr(client_index), 0))
        self.sock.connect(vip)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.reader = fr.FrameReader(max_frame_size=1 << 24, max_header_block=1 << 20)
        self.sent = self.received = 0
        self.next_sid = 1
        self._send(fr.PREFACE + fr.settings_frame({}))

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def infer(self, model: str, prompt: str, session: str, region: str) -> dict[str, str]:
        """A unary ModelInfer call; returns the trailers (grpc-status, x-fastpath-backend when routed)."""
        from fastpath.gen import grpc_service_pb2 as pb

        req = pb.ModelInferRequest(model_name=model, id=session)
        t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(prompt.encode())
        req.parameters["max_tokens"].int64_param = 4
        body = req.SerializeToString()
        sid, self.next_sid = self.next_sid, self.next_sid + 2
        hs = [(":method", "POST"), (":scheme", "http"), (":path", INFER), (":authority", "fastpath"),
              ("content-type", "application/grpc"), ("te", "trailers"),
              ("x-fastpath-session", session), ("x-fastpath-region", region)]
        self._send(fr.headers_frames(sid, self.enc.encode(hs), False)
                   + fr.data_frame(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True))
        trailers: dict[str, str] = {}
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("connection closed before the answer ended")
            self.received += len(data)
            for ftype, flags, s, payload in self.reader.feed(data):
                if ftype == fr.SETTINGS and not flags & fr.ACK:
                    self._send(fr.settings_frame(ack=True))
                elif ftype == fr.PING and not flags & fr.ACK:
                    self._send(fr.ping_frame(payload, ack=True))
                elif ftype == fr.HEADERS and s == sid:
                    trailers.update({k.decode(): v.decode() for k, v in self.dec.decode(payload, raw=True)})
                    if flags & fr.END_STREAM:
                        return trailers

    def drain(self, quiet_s: float = 0.2) -> None:
        """Reads (and counts) what else arrives until the connection is quiet."""
        self.sock.settimeout(quiet_s)
        try:
            while data := self.sock.recv(1 << 16):
                self.received += len(data)
        except (TimeoutError, socket.timeout):
            pass

    def close(self) -> None:
        self.sock.close()


def card_config(config: Config, card: Any, base: int) -> Config:
    raw = json.loads(json.dumps(config.raw))
    for i, b in enumerate(raw["backends"]):
        b["address"] = f"{card.backend_addr(i)}:{base}"
        if b.get("metrics_url"):
            b["metrics_url"] = f"http://{card.backend_addr(i)}:{base + 1}/metrics"
    raw["proxy"] = dict(raw.get("proxy", {}), listen=f"{card.vip}:{base + 2}", metrics_listen=f"{card.vip}:{base + 3}")
    raw["control"] = dict(raw.get("control", {}), listen=f"127.0.0.1:{base + 4}")
    raw["offload"] = {"driver": "dpu"}
    return parse_config(raw, "demo through the emulated card")


def reachable(card: Any, side: str, host: str, port: int) -> bool:
    s = card.socket(side)
    s.settimeout(0.3)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def proxy_metric(card: Any, address: str, name: str) -> float:
    """A counter of the proxy's /metrics summed over its samples (one per worker), fetched from the client
    namespace (through the card's routing)."""
    host, port = address.rsplit(":", 1)
    s = card.socket("cli")
    s.settimeout(3)
    with s:
        s.connect((host, int(port)))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: fastpath\r\n\r\n")
        body = b""
        while d := s.recv(65536):
            body += d
    values = [float(line.rsplit(None, 1)[1]) for line in body.decode(errors="replace").splitlines()
              if line.startswith((name + " ", name + "{"))]
    if values:
        return sum(values)
    raise LookupError(f"{name} not in the proxy's metrics at {address}")


def run_demo(config: Config, plan: Any, say, logs: bool = False, wait_rule_s: float = 5.0) -> dict[str, Any]:
    """Runs the session phase through a fresh card; returns the summary (everything is removed afterwards)."""
    from fastpath.offload.dpu_card import EmulatedCard

    sessions: dict[str, list[Any]] = {}
    for phase in plan.phases:
        if phase.name == "session":
            for s in phase.specs:
                sessions.setdefault(s.session, []).append(s)
    if not sessions:
        raise ValueError("the workload has no session phase: use --requests 60 or more")
    card = EmulatedCard(clients=len(sessions), backends=len(config.backends)).create()
    procs: list[subprocess.Popen] = []
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"fastpath-{card.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, FASTPATH_DPU_CARD=card.name)
    try:
        base = free_port_block(8)
        cfg = card_config(config, card, base)
        path = cfg.write(workdir / "fastpath.toml")

        def start(side: str, *args: str) -> None:
            out = None if logs else subprocess.DEVNULL
            procs.append(subprocess.Popen(card.exec_argv(side, fastpath_argv("--log-level", "INFO" if logs else "WARNING",
                                                                             *args, "--config", str(path))),
                                          env=env, stdout=out, stderr=out))

        say(f"card {card.name}: clients {card.client_addr(0)}.., VIP {card.vip}, sites on {card.backend_addr(0)}..")
        start("net", "sim")
        for b in cfg.backends:
            host, port = b.address.rsplit(":", 1)
            _wait(lambda h=host, p=int(port): reachable(card, "host", h, p), 30, f"site {b.name}")
        start("host", "controller")
        _wait(lambda: reachable(card, "host", "127.0.0.1", base + 4), 20, "the controller")
        start("host", "proxy")
        vip = (card.vip, base + 2)
        _wait(lambda: reachable(card, "cli", *vip), 20, "the proxy")
        from fastpath.offload.dpu_cli import rules_doc

        rows = []
        for i, (sid, turns) in enumerate(sessions.items()):
            first = GrpcConn(card, i, vip)
            t0 = turns[0]
            tr = first.infer(t0.model, t0.prompt, sid, t0.region)
            say(f"session {sid} from {card.client_addr(i)}: first turn through the proxy "
                f"(grpc-status {tr.get('grpc-status', '?')}); waiting for the card rule")
            end = time.monotonic() + wait_rule_s
            entry = None
            while time.monotonic() < end and entry is None:
                entry = next((e for e in rules_doc(card.name)["pipes"][0]["entries"]
                              if e.get("session") == sid and e["status"] == "DOCA_FLOW_ENTRY_STATUS_SUCCESS"), None)
                time.sleep(0.1)
            accepted0 = proxy_metric(card, cfg.proxy.metrics_listen, "fastpath_connections_total")
            sent = received = ok = 0
            for t in turns[1:]:
                c = GrpcConn(card, i, vip)
                ok += c.infer(t.model, t.prompt, sid, t.region).get("grpc-status") == "0"
                c.drain()
                sent, received = sent + c.sent, received + c.received
                c.close()
            accepted = proxy_metric(card, cfg.proxy.metrics_listen, "fastpath_connections_total") - accepted0
            first.close()
            doc = rules_doc(card.name)
            entry = next((e for e in doc["pipes"][0]["entries"] if e.get("session") == sid), entry)
            q = entry["query"] if entry else {}
            rows.append({
                "session": sid, "client": card.client_addr(i), "repeat_connections": len(turns) - 1, "ok": ok,
                "card_switched": q.get("connections", 0) if entry else 0,
                "backend": entry["actions"]["outer"]["ip4"]["dst_ip"] if entry else "",
                "client_bytes_sent": sent, "client_bytes_received": received,
                "card_bytes_to_backend": q.get("to_backend", {}).get("bytes", 0),
                "card_bytes_to_client": q.get("to_client", {}).get("bytes", 0),
                "proxy_connections": int(accepted),
            })
        return {"card": card.name, "sessions": rows}
    finally:
        for p in procs:
            stop_process(p)
        card.destroy()
        for f in workdir.glob("*"):
            f.unlink(missing_ok=True)
        workdir.rmdir()


def render(summary: dict[str, Any]) -> str:
    rows = summary["sessions"]
    head = ("SESSION", "CLIENT", "REPEATS", "SWITCHED", "CARD->BACKEND", "CLIENT SENT", "CARD->CLIENT", "CLIENT GOT", "PROXY CONNS")
    table = [head] + [(r["session"], r["client"], str(r["repeat_connections"]), str(r["card_switched"]),
                       f"{r['card_bytes_to_backend']} B", f"{r['client_bytes_sent']} B",
                       f"{r['card_bytes_to_client']} B", f"{r['client_bytes_received']} B", str(r["proxy_connections"]))
                      for r in rows]
    w = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in table]
    switched = sum(r["card_switched"] for r in rows)
    repeats = sum(r["repeat_connections"] for r in rows)
    exact = all(r["card_bytes_to_backend"] == r["client_bytes_sent"] and r["card_bytes_to_client"] == r["client_bytes_received"]
                for r in rows if r["card_switched"] == r["repeat_connections"])
    lines.append(f"card {summary['card']}: switched {switched} of {repeats} repeat connections; the proxy accepted "
                 f"{sum(r['proxy_connections'] for r in rows)} of them (0 bytes of the switched ones); card counters "
                 f"{'equal' if exact else 'DIFFER FROM'} what the clients sent and received.")
    return "\n".join(lines)


def run(args: argparse.Namespace, config: Config, plan: Any, say) -> int:
    """The demo's --offload dpu branch: needs root (namespaces, tc, BPF)."""
    if os.geteuid() != 0:
        say("--offload dpu builds an emulated card (network namespaces, tc programs): run as root")
        return 2
    try:
        summary = run_demo(config, plan, say, logs=getattr(args, "logs", False))
    except (OSError, RuntimeError, TimeoutError, ValueError, LookupError) as e:
        say(f"the DPU demo could not run: {e}")
        return 1
    print(json.dumps(summary, indent=2) if getattr(args, "json", False) else render(summary))
    rows = summary["sessions"]
    return 0 if all(r["ok"] == r["repeat_connections"] for r in rows) else 1
