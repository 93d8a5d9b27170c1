"""Real gRPC traffic for the seed corpus: a stock grpcio client and server, recorded by a TCP relay between them.

The relay copies bytes both ways and keeps what each side sent, so the seeds
hold exactly what a gRPC stack puts on the wire (Huffman-coded, dynamically
indexed header blocks, WINDOW_UPDATEs, PINGs, trailers), not what a test
author imagined.
"""
from __future__ import annotations

import socket
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.gen import grpc_service_pb2_grpc as pb_grpc
from fastpath.h2 import frames as fr

METADATA = (
    ("x-fastpath-region", "us-east"), ("x-fastpath-session", "sess-42"), ("x-fastpath-policy", "latency-first"),
    ("x-fastpath-slo-ttft-ms", "250"), ("x-fastpath-max-cost", "0.5"), ("x-fastpath-allow-regions", "us-east,eu-west"),
    ("x-request-id", "req-0001"),
)


def infer_request(model: str = "llama-3-8b", prompt: str = "tell me about fastpath", max_tokens: int = 8) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id="r-1")
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(prompt.encode())
    req.parameters["max_tokens"].int64_param = max_tokens
    return req


class _Inference(pb_grpc.GRPCInferenceServiceServicer):
    def ModelInfer(self, request, context):  # noqa: N802 - gRPC method name
        context.set_trailing_metadata((("x-fastpath-backend", "use1-a100"),))
        resp = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        out = resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(b"fastpath routes tokens")
        return resp

    def ModelStreamInfer(self, request_iterator, context):  # noqa: N802
        for request in request_iterator:
            for i in range(4):
                r = pb.ModelStreamInferResponse()
                r.infer_response.model_name = request.model_name
                r.infer_response.raw_output_contents.append(b"tok%d" % i)
                yield r


@dataclass
class Capture:
    client_to_server: bytes  # starts with the HTTP/2 preface
    server_to_client: bytes

    def client_frames(self) -> bytes:
        assert self.client_to_server.startswith(fr.PREFACE)
        return self.client_to_server[len(fr.PREFACE):]


def _pump(src: socket.socket, dst: socket.socket, sink: bytearray) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            sink += data
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def capture() -> Capture:
    """Runs unary and streamed KServe calls through a recording relay; returns both directions' bytes."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Inference(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    listener = socket.create_server(("127.0.0.1", 0))
    up, down = bytearray(), bytearray()
    threads: list[threading.Thread] = []

    def accept() -> None:
        client, _ = listener.accept()
        backend = socket.create_connection(("127.0.0.1", port))
        for a, b, sink in ((client, backend, up), (backend, client, down)):
            t = threading.Thread(target=_pump, args=(a, b, sink), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{listener.getsockname()[1]}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            for i in range(3):  # repeats: the client's HPACK indexes, then refers to the table
                stub.ModelInfer(infer_request(prompt=f"prompt {i}"), metadata=METADATA, timeout=10)
            list(stub.ModelStreamInfer(iter([infer_request("mistral-7b", "stream please", 4)]),
                                       metadata=METADATA[:2], timeout=10))
        acceptor.join(5)
        for t in threads:
            t.join(5)
    finally:
        listener.close()
        server.stop(None)
    return Capture(bytes(up), bytes(down))
