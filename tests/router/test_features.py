"""Routing inputs from metadata: what is accepted, and bad values named clearly."""
from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpath.router import MetadataError, RequestFeatures, features_from_headers

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=64)
VISIBLE = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=256)
NUMBER = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


def test_every_header_is_read():
    f = features_from_headers([
        (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
        (b"x-fastpath-model", b"llama-3-8b"),
        (b"x-fastpath-region", b"eu-west"),
        (b"x-fastpath-session", b"c0ffee/1"),
        (b"x-fastpath-policy", b"latency-first"),
        (b"x-fastpath-slo-ttft-ms", b"250"),
        (b"x-fastpath-max-cost", b"0.5"),
        (b"x-fastpath-allow-regions", b"eu-west, eu-central,eu-west"),
        (b"x-fastpath-backend", b"ignored"),
        (b"user-agent", b"grpc-python/1.6"),
    ])
    assert f == RequestFeatures("llama-3-8b", "eu-west", "c0ffee/1", "latency-first", 250.0, 0.5,
                                ("eu-central", "eu-west"))


def test_no_headers_is_the_default_request():
    assert features_from_headers([]) == RequestFeatures()


def test_empty_string_headers_count_as_absent_but_empty_limits_do_not():
    assert features_from_headers([(b"x-fastpath-model", b""), (b"x-fastpath-session", b"")]) == RequestFeatures()
    for name in (b"x-fastpath-slo-ttft-ms", b"x-fastpath-max-cost", b"x-fastpath-allow-regions"):
        with pytest.raises(MetadataError, match=name.decode()):
            features_from_headers([(name, b"")])
    with pytest.raises(MetadataError, match="omit the header to allow any"):
        features_from_headers([(b"x-fastpath-allow-regions", b" , ,")])


@pytest.mark.parametrize("value, words", [
    (b"abc", "is not a number"),
    (b"-1", "is negative"),
    (b"nan", "not a finite number"),
    (b"inf", "not a finite number"),
    (b"1e400", "not a finite number"),
    (b"1" * 40, "40 bytes long"),
    (b"\xff", "is not a number"),
])
def test_bad_numbers_name_the_header_and_say_what_is_accepted(value, words):
    for header in (b"x-fastpath-slo-ttft-ms", b"x-fastpath-max-cost"):
        with pytest.raises(MetadataError) as e:
            features_from_headers([(header, value)])
        msg = str(e.value)
        assert msg.startswith(header.decode() + ":") and words in msg and "non-negative number" in msg


@pytest.mark.parametrize("header, value, words", [
    (b"x-fastpath-region", b"eu west", "not a valid region name"),
    (b"x-fastpath-policy", b"cost;first", "not a valid policy name"),
    (b"x-fastpath-region", b"r" * 65, "at most 64 bytes"),
    (b"x-fastpath-model", "modèle".encode(), "visible ASCII"),
    (b"x-fastpath-session", b"a\x00b", "visible ASCII"),
    (b"x-fastpath-session", b"s" * 257, "at most 256 bytes"),
    (b"x-fastpath-allow-regions", b"eu-west,moon base", "not a valid region name"),
    (b"x-fastpath-allow-regions", b",".join([b"r%d" % i for i in range(33)]), "at most 32"),
])
def test_bad_names_say_what_was_wrong(header, value, words):
    with pytest.raises(MetadataError) as e:
        features_from_headers([(header, value)])
    assert str(e.value).startswith(header.decode()) and words in str(e.value)


def test_a_repeated_header_keeps_the_last_value():
    f = features_from_headers([(b"x-fastpath-region", b"a"), (b"x-fastpath-region", b"b")])
    assert f.region == "b"


@given(model=VISIBLE, region=TOKEN, session=VISIBLE, policy=TOKEN, slo=NUMBER, cost=NUMBER,
       allow=st.lists(TOKEN, min_size=1, max_size=32))
@settings(max_examples=200, deadline=None)
def test_valid_values_round_trip(model, region, session, policy, slo, cost, allow):
    headers = [
        (b"x-fastpath-model", model.encode()),
        (b"x-fastpath-region", region.encode()),
        (b"x-fastpath-session", session.encode()),
        (b"x-fastpath-policy", policy.encode()),
        (b"x-fastpath-slo-ttft-ms", repr(slo).encode()),
        (b"x-fastpath-max-cost", f"{cost:.6g}".encode()),
        (b"x-fastpath-allow-regions", ",".join(allow).encode()),
    ]
    f = features_from_headers(headers)
    assert (f.model, f.region, f.session, f.policy) == (model, region, session, policy)
    assert f.slo_ttft_ms == slo
    assert math.isclose(f.max_cost, cost, rel_tol=1e-5)
    assert f.allow_regions == tuple(sorted(set(allow)))


HEADER_NAMES = st.sampled_from([
    b"x-fastpath-model", b"x-fastpath-region", b"x-fastpath-session", b"x-fastpath-policy",
    b"x-fastpath-slo-ttft-ms", b"x-fastpath-max-cost", b"x-fastpath-allow-regions", b"x-fastpath-other", b":path",
])


@given(st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=300)), max_size=12))
@settings(max_examples=300, deadline=None)
@example([(b"x-fastpath-max-cost", b"1_000")])
@example([(b"x-fastpath-slo-ttft-ms", b" 12 ")])
def test_arbitrary_values_either_parse_or_raise_metadata_error(headers):
    try:
        f = features_from_headers(headers)
    except MetadataError as e:
        assert str(e).split(":", 1)[0] in {n.decode() for n, _ in headers}
        return
    assert f.slo_ttft_ms >= 0 and math.isfinite(f.slo_ttft_ms)
    assert f.max_cost >= 0 and math.isfinite(f.max_cost)
    for text in (f.model, f.session, f.region, f.policy, *f.allow_regions):
        assert text == text.strip() and text.isascii() and text.isprintable()
