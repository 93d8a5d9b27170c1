"""Reading and writing the LLM request/response shape of KServe v2.

Sites accept two shapes of request, both seen in the field:
- fastpath's own: input tensor `text_input` (BYTES) and request parameter
  `max_tokens` (int64_param);
- Triton's vLLM backend: `text_input` plus `sampling_parameters`, a JSON
  string (as a request parameter or as a BYTES input tensor) holding
  `max_tokens`.
BYTES tensors are read from `contents.bytes_contents` or from
`raw_input_contents` (Triton's encoding: each element prefixed by its length
as 4 little-endian bytes); responses use the raw encoding, which Triton's
clients expect.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from fastpath.gen import grpc_service_pb2 as pb

DEFAULT_MAX_TOKENS = 16
MAX_MAX_TOKENS = 4096
TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"


class RequestError(ValueError):
    """A request the simulated model cannot serve; the message says what to send instead."""


@dataclass(frozen=True)
class LLMRequest:
    """What a site needs from a ModelInferRequest."""

    model: str
    prompt: str
    max_tokens: int
    request_id: str


def encode_bytes_elements(elements: list[bytes]) -> bytes:
    """Triton's raw BYTES encoding: each element as <u32 little-endian length><bytes>."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_bytes_elements(raw: bytes) -> list[bytes]:
    """Inverse of encode_bytes_elements; raises RequestError on a truncated buffer."""
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise RequestError(f"raw BYTES tensor truncated: {len(raw) - i} trailing bytes cannot hold a 4-byte length")
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise RequestError(f"raw BYTES tensor truncated: element claims {n} bytes, {len(raw) - i} remain")
        out.append(raw[i : i + n])
        i += n
    return out


def _input_bytes(req: pb.ModelInferRequest, name: str) -> bytes | None:
    """The first element of BYTES input `name`, or None when the input is absent."""
    for idx, t in enumerate(req.inputs):
        if t.name != name:
            continue
        if t.contents.bytes_contents:
            return t.contents.bytes_contents[0]
        if req.raw_input_contents:
            if idx >= len(req.raw_input_contents):
                raise RequestError(
                    f"input {name!r} is input #{idx} but the request has only "
                    f"{len(req.raw_input_contents)} raw_input_contents"
                )
            elems = decode_bytes_elements(req.raw_input_contents[idx])
            if not elems:
                raise RequestError(f"input {name!r} is empty: send one BYTES element")
            return elems[0]
        raise RequestError(f"input {name!r} has no contents: put the text in contents.bytes_contents")
    return None


def _int_param(p: pb.InferParameter, where: str) -> int:
    kind = p.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return p.int64_param
    if kind == "uint64_param":
        return p.uint64_param
    if kind == "string_param" and p.string_param.strip().lstrip("-").isdigit():
        return int(p.string_param)
    if kind == "double_param" and float(p.double_param).is_integer():
        return int(p.double_param)
    raise RequestError(f"{where}: expected an integer (int64_param), got {kind or 'nothing'}")


def _max_tokens_from_json(text: str, where: str) -> int | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise RequestError(f"{where}: not valid JSON ({e}); send e.g. '{{\"max_tokens\": 16}}'") from None
    if not isinstance(data, dict):
        raise RequestError(f"{where}: expected a JSON object such as '{{\"max_tokens\": 16}}'")
    if "max_tokens" not in data:
        return None
    v = data["max_tokens"]
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise RequestError(f"{where}: max_tokens = {v!r}: expected an integer")
    try:
        return int(v)
    except (ValueError, OverflowError):
        raise RequestError(f"{where}: max_tokens = {v!r}: expected an integer") from None


def parse_llm_request(req: pb.ModelInferRequest) -> LLMRequest:
    """Extracts prompt and max_tokens; RequestError says what was wrong."""
    raw_prompt = _input_bytes(req, TEXT_INPUT)
    if raw_prompt is None:
        have = [t.name for t in req.inputs]
        raise RequestError(f"missing input tensor {TEXT_INPUT!r} (BYTES, the prompt); the request has {have}")
    prompt = raw_prompt.decode("utf-8", errors="replace")

    max_tokens: int | None = None
    if "max_tokens" in req.parameters:
        max_tokens = _int_param(req.parameters["max_tokens"], "parameter max_tokens")
    else:
        sp = None
        if "sampling_parameters" in req.parameters:
            p = req.parameters["sampling_parameters"]
            if p.WhichOneof("parameter_choice") != "string_param":
                raise RequestError("parameter sampling_parameters: expected a JSON string (string_param)")
            sp = p.string_param
        else:
            b = _input_bytes(req, "sampling_parameters")
            if b is not None:
                sp = b.decode("utf-8", errors="replace")
        if sp is not None:
            max_tokens = _max_tokens_from_json(sp, "sampling_parameters")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not 1 <= max_tokens <= MAX_MAX_TOKENS:
        raise RequestError(f"max_tokens = {max_tokens}: must be between 1 and {MAX_MAX_TOKENS}")
    return LLMRequest(model=req.model_name, prompt=prompt, max_tokens=max_tokens, request_id=req.id)


def make_request(model: str, prompt: str, max_tokens: int | None = None, request_id: str = "") -> pb.ModelInferRequest:
    """A ModelInferRequest in fastpath's shape (what tests, the demo and benchmarks send)."""
    req = pb.ModelInferRequest(model_name=model, id=request_id)
    t = req.inputs.add(name=TEXT_INPUT, datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(prompt.encode())
    if max_tokens is not None:
        req.parameters["max_tokens"].int64_param = max_tokens
    return req


def text_output(resp: pb.ModelInferResponse) -> str:
    """The text of output `text_output` (raw or contents encoding); "" when absent (a final stream response)."""
    for idx, t in enumerate(resp.outputs):
        if t.name != TEXT_OUTPUT:
            continue
        if t.contents.bytes_contents:
            return b"".join(t.contents.bytes_contents).decode("utf-8", errors="replace")
        if idx < len(resp.raw_output_contents):
            return b"".join(decode_bytes_elements(resp.raw_output_contents[idx])).decode("utf-8", errors="replace")
    return ""


def response_parameter(resp: pb.ModelInferResponse, name: str) -> object:
    """A response parameter's value (bool, int, str or float), or None when absent."""
    if name not in resp.parameters:
        return None
    p = resp.parameters[name]
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None
