"""All four RPC shapes through the routed proxy: content, metadata, trailers, no buffering."""
import grpc
import pytest

from .conftest import NEAR, bidi, client_stream, server_stream, unary


def test_unary_carries_metadata_and_adds_decision_trailers(harness):
    harness.simple("a", "b")
    resp, call = unary(harness.channel()).with_call(b"hello", metadata=NEAR + (("x-custom", "v1"),), timeout=5)
    assert resp == b"a:hello"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-backend-name"] == "a"            # the backend's own trailers arrive intact
    assert trailers["x-fastpath-backend"] == "a"
    decision = dict(kv.split("=") for kv in trailers["x-fastpath-decision"].split(";"))
    assert set(decision) >= {"policy", "score", "ttft", "cost", "affinity", "capacity", "proximity"}
    assert all(0.0 <= float(decision[a]) <= 1.0 for a in ("ttft", "cost", "affinity", "capacity", "proximity"))
    assert harness.backends["a"].seen_metadata[-1]["x-custom"] == "v1"


def test_many_unary_calls_reuse_connections_and_stay_correct(harness):
    harness.simple("a")
    stub = unary(harness.channel())
    for i in range(200):
        payload = b"%d" % i * (i % 7 + 1)
        assert stub(payload, metadata=(("x-request-id", str(i)),), timeout=5) == b"a:" + payload
    assert harness.backends["a"].calls == 200


def test_server_stream_is_not_buffered(harness):
    """The first message reaches the client while the backend still holds the rest back."""
    harness.simple("a")
    b = harness.backends["a"]
    it = server_stream(harness.channel())(b"5,100,gate", metadata=NEAR, timeout=10)
    first = next(it)  # would time out if the proxy waited for more
    assert first.startswith(b"00000000")
    harness.loop.call(b.gate.set)
    rest = list(it)
    assert [m[:8] for m in rest] == [b"%08d" % i for i in range(1, 5)]


def test_client_stream_and_large_messages(harness):
    harness.simple("a")
    msgs = [bytes([i % 256]) * (i * 7919 % 300000) for i in range(40)]
    out = client_stream(harness.channel())(iter(msgs), metadata=NEAR, timeout=20)
    assert out == f"{len(msgs)},{sum(map(len, msgs))}".encode()


def test_bidi_interleaves_in_both_directions(harness):
    harness.simple("a")
    import queue

    q: queue.Queue = queue.Queue()

    def requests():
        for i in range(20):
            yield b"%d" % i
            q.get(timeout=5)  # wait for the echo before sending the next: needs an unbuffered proxy

    call = bidi(harness.channel())(requests(), metadata=NEAR, timeout=20)
    got = []
    for msg in call:
        got.append(msg)
        q.put(1)
    assert got == [b"a:%d" % i for i in range(20)]


def test_big_server_stream_arrives_byte_exact(harness):
    harness.simple("a")
    msgs = list(server_stream(harness.channel())(b"64,200000", timeout=30))
    assert len(msgs) == 64 and all(len(m) == 200000 for m in msgs)
    assert [m[:8] for m in msgs] == [b"%08d" % i for i in range(64)]


def test_deadline_is_passed_to_the_backend(harness):
    harness.simple("a")
    unary(harness.channel())(b"x", timeout=3)
    remaining = harness.backends["a"].deadlines[-1]
    assert remaining is not None and 0 < remaining <= 3.1  # grpc-timeout is rounded to its unit


def test_bad_routing_metadata_is_invalid_argument(harness):
    harness.simple("a")
    with pytest.raises(grpc.RpcError) as e:
        unary(harness.channel())(b"x", metadata=(("x-fastpath-max-cost", "cheap"),), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-fastpath-max-cost" in e.value.details()
    assert harness.backends["a"].calls == 0


def test_unknown_model_is_unavailable_with_reason(harness):
    harness.simple("a")
    with pytest.raises(grpc.RpcError) as e:
        unary(harness.channel())(b"x", metadata=(("x-fastpath-model", "gpt-17"),), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "gpt-17" in e.value.details()


def test_tls_listener_with_alpn_h2(harness, tmp_path):
    import subprocess

    from fastpath.config import parse_config
    from fastpath.dataplane.proxy import Proxy

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fastpath.test",
                    "-addext", "subjectAltName=DNS:fastpath.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    b = harness.add_backend("a")
    cfg = parse_config({"proxy": {"listen": "127.0.0.1:0", "metrics_listen": "", "tls_cert": str(cert), "tls_key": str(key)},
                        "backends": [{"name": "a", "address": f"127.0.0.1:{b.port}", "region": "r1",
                                      "cost_per_1k_tokens": 1.0, "models": ["m"]}]})

    async def go():
        proxy = Proxy(cfg)
        return proxy, await proxy.start()

    proxy, (host, port) = harness.loop.run(go())
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"{host}:{port}", creds, options=[("grpc.ssl_target_name_override", "fastpath.test")]) as ch:
            resp, call = unary(ch).with_call(b"secret", timeout=5)
            assert resp == b"a:secret"
            assert dict(call.trailing_metadata())["x-fastpath-backend"] == "a"
            # A session over TLS is pinned but never spliced: the socket carries ciphertext.
            assert unary(ch)(b"s", metadata=(("x-fastpath-session", "tls-1"),), timeout=5) == b"a:s"
    finally:
        harness.loop.run(proxy.drain(0.5))


def test_unknown_policy_is_invalid_argument(harness):
    harness.simple("a")
    with pytest.raises(grpc.RpcError) as e:
        unary(harness.channel())(b"x", metadata=(("x-fastpath-policy", "warp-speed"),), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "warp-speed" in e.value.details()


def test_policies_from_the_controller_take_effect(harness):
    from fastpath.gen import control_pb2

    proxy = harness.simple("a", "b")
    msg = control_pb2.PolicyList(default_policy="far-first", policies=[control_pb2.Policy(name="far-first", proximity=1)])
    harness.loop.call(lambda: proxy.set_policies(msg))
    _, call = unary(harness.channel()).with_call(b"x", metadata=(("x-fastpath-region", "far"),), timeout=5)
    assert dict(call.trailing_metadata())["x-fastpath-decision"].startswith("policy=far-first;")
