"""Fault descriptions: one written form everywhere, read back exactly; bad ones say what is allowed."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath.sim.faults import MODES, FaultError, make_fault, parse_fault, parse_site_fault

faults = st.builds(
    make_fault,
    st.sampled_from(sorted(MODES)),
    factor=st.floats(0.01, 1000, allow_nan=False),
    after_tokens=st.integers(0, 10_000),
    code=st.sampled_from(["UNAVAILABLE", "INTERNAL", "ABORTED", "unavailable"]),
    share=st.floats(0, 1, allow_nan=False),
    stall_ms=st.floats(0, 1e6, allow_nan=False),
)


@given(faults)
def test_describe_round_trips(f):
    back = parse_fault(f.describe())
    assert back.describe() == f.describe()
    assert back.mode == f.mode


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_fault_error(text):
    try:
        f = parse_fault(text)
    except FaultError as e:
        assert str(e)
    else:
        assert f.mode in MODES


@pytest.mark.parametrize("text, mode, attr, value", [
    ("hang", "hang", "mode", "hang"),
    ("mode=slow&factor=3", "slow", "factor", 3.0),
    ("slow,factor=3", "slow", "factor", 3.0),
    ("mode=die_mid_stream&after_tokens=3", "die_mid_stream", "after_tokens", 3),
    ("reset&after_tokens=1&code=internal", "reset", "code", "INTERNAL"),
    ("mode=stall&share=0.25&stall_ms=400", "stall", "share", 0.25),
    ("stall&stall_ms=400", "stall", "stall_ms", 400.0),
])
def test_written_forms(text, mode, attr, value):
    f = parse_fault(text)
    assert f.mode == mode and getattr(f, attr) == value


@pytest.mark.parametrize("text, words", [
    ("mode=explode", "unknown fault mode 'explode'; modes are: none"),
    ("mode=slow&speed=3", "unknown fault parameter 'speed'"),
    ("mode=slow&factor=-1", "positive finite"),
    ("mode=stall&share=1.5", "share within 0..1"),
    ("mode=reset&after_tokens=x", "expected int"),
    ("mode=reset&code=OK", "gRPC status name"),
    ("", "empty fault"),
])
def test_bad_faults_name_the_problem(text, words):
    with pytest.raises(FaultError, match=words.replace("(", r"\(")):
        parse_fault(text)


def test_site_form():
    site, f = parse_site_fault("use1-a100=die_mid_stream&after_tokens=3")
    assert site == "use1-a100" and f.mode == "die_mid_stream" and f.after_tokens == 3
    with pytest.raises(FaultError, match="SITE=MODE"):
        parse_site_fault("use1-a100")
