"""Percentiles the summaries rest on, and the backend's request-shape parser."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath.bench import backend, stats

samples = st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=200)


@given(samples, st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_and_bounded(xs, q1, q2):
    s = sorted(xs)
    a, b = stats.percentile(s, min(q1, q2)), stats.percentile(s, max(q1, q2))
    assert s[0] <= a <= b <= s[-1] or a == pytest.approx(b)
    assert stats.percentile(s, 0) == s[0] and stats.percentile(s, 100) == s[-1]


def test_percentile_of_nothing_is_none_and_bad_q_is_refused():
    assert stats.percentile([], 50) is None
    assert stats.median([None, None]) is None
    assert stats.median([3.0, None, 1.0, 2.0]) == 2.0
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


@given(st.integers(1, backend.MAX_N), st.integers(0, backend.MAX_SIZE))
def test_request_shape_round_trips(n, size):
    body = backend.encode_request(n, size)
    from fastpath.gen import grpc_service_pb2

    req = grpc_service_pb2.ModelInferRequest.FromString(body)
    assert req.model_name == backend.MODEL
    assert backend.parse_shape(req.id) == (n, size)


@given(st.text(max_size=40))
def test_any_shape_text_parses_or_says_what_is_expected(text):
    try:
        n, size = backend.parse_shape(text)
    except backend.ShapeError as e:
        assert "n=<count>" in str(e) or "need" in str(e)
    else:
        assert 1 <= n <= backend.MAX_N and 0 <= size <= backend.MAX_SIZE
