"""The decision trailer's score formatting gives exactly what b"%.3f" gives."""
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.router.fixed3 import fixed3


@settings(max_examples=3000)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_scores_in_range_format_as_percent_3f(v: float) -> None:
    assert fixed3(v) == b"%.3f" % v


@given(st.integers(min_value=0, max_value=999))
def test_values_at_and_next_to_rounding_ties(i: int) -> None:
    # (i + 0.5) / 1000 is the tie case itself; its float neighbours sit on either side of it
    import math

    tie = (i + 0.5) / 1000
    for v in (tie, math.nextafter(tie, 0.0), math.nextafter(tie, 1.0), i / 1000):
        assert fixed3(v) == b"%.3f" % v


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_formats_as_percent_3f(v: float) -> None:
    assert fixed3(v) == b"%.3f" % v


def test_negative_zero_keeps_its_sign() -> None:
    assert fixed3(-0.0) == b"-0.000" and fixed3(0.0) == b"0.000"
