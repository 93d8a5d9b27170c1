"""The request/response shape: both request encodings parse; nothing malformed escapes as a crash."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.gen import grpc_service_pb2 as pb
from fastpath.sim.llm_request import (
    DEFAULT_MAX_TOKENS, MAX_MAX_TOKENS, RequestError, decode_bytes_elements, encode_bytes_elements, make_request,
    parse_llm_request, text_output,
)
from fastpath.sim.tokens import completion, completion_tokens

prompts = st.text(max_size=200)
counts = st.integers(1, MAX_MAX_TOKENS)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_raw_bytes_encoding_round_trips(elems):
    assert decode_bytes_elements(encode_bytes_elements(elems)) == elems


@given(st.binary(max_size=64))
def test_arbitrary_raw_bytes_decode_or_say_truncated(raw):
    try:
        out = decode_bytes_elements(raw)
    except RequestError as e:
        assert "truncated" in str(e)
    else:
        assert encode_bytes_elements(out) == raw


@given(prompts, st.one_of(st.none(), counts), st.text(max_size=20))
def test_fastpath_shape_round_trips(prompt, n, rid):
    req = pb.ModelInferRequest.FromString(make_request("m", prompt, n, rid).SerializeToString())
    llm = parse_llm_request(req)
    assert (llm.model, llm.prompt, llm.request_id) == ("m", prompt, rid)
    assert llm.max_tokens == (DEFAULT_MAX_TOKENS if n is None else n)


@given(prompts, counts, st.booleans())
def test_triton_vllm_shape_parses(prompt, n, as_tensor):
    """Triton's vLLM backend: raw BYTES inputs, sampling_parameters JSON as a parameter or a tensor."""
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(encode_bytes_elements([prompt.encode()]))
    sp = json.dumps({"max_tokens": n, "temperature": 0.7})
    if as_tensor:
        req.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1])
        req.raw_input_contents.append(encode_bytes_elements([sp.encode()]))
    else:
        req.parameters["sampling_parameters"].string_param = sp
    llm = parse_llm_request(pb.ModelInferRequest.FromString(req.SerializeToString()))
    assert (llm.prompt, llm.max_tokens) == (prompt, n)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_decodable_request_parses_or_says_why(data):
    try:
        req = pb.ModelInferRequest.FromString(data)
    except Exception:
        return  # not a protobuf message at all: gRPC itself rejects it
    try:
        llm = parse_llm_request(req)
    except RequestError as e:
        assert str(e)
    else:
        assert 1 <= llm.max_tokens <= MAX_MAX_TOKENS


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda r: r.inputs.pop(), "missing input tensor 'text_input'"),
        (lambda r: r.parameters["max_tokens"].CopyFrom(pb.InferParameter(int64_param=0)), "between 1 and"),
        (lambda r: r.parameters["max_tokens"].CopyFrom(pb.InferParameter(bool_param=True)), "expected an integer"),
        (lambda r: r.parameters["sampling_parameters"].CopyFrom(pb.InferParameter(string_param="{nope")), "not valid JSON"),
    ],
)
def test_bad_requests_say_what_to_send(mutate, words):
    req = make_request("m", "hi")
    mutate(req)
    with pytest.raises(RequestError, match=words):
        parse_llm_request(req)


@given(prompts, st.integers(0, 40))
def test_completion_is_deterministic_and_streams_concatenate(prompt, n):
    toks = completion_tokens(prompt, n)
    assert toks == completion_tokens(prompt, n)
    assert "".join(toks) == completion(prompt, n)
    assert all(t.startswith(" ") and len(t) > 1 for t in toks)


@given(st.text(max_size=50), st.booleans())
def test_text_output_reads_both_encodings(text, raw):
    r = pb.ModelInferResponse()
    t = r.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    if raw:
        r.raw_output_contents.append(encode_bytes_elements([text.encode()]))
    else:
        t.contents.bytes_contents.append(text.encode())
    assert text_output(r) == text
