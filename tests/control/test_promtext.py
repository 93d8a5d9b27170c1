"""The Prometheus text parser: what exporters write comes back exactly; bad lines are named or skipped."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastpath.control import promtext
from fastpath.control.promtext import PromTextError, Sample, parse

_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_DIGITS = "0123456789"
metric_names = st.builds(str.__add__, st.sampled_from(_ALPHA + ":"), st.text(alphabet=_ALPHA + _DIGITS + ":", max_size=30))
label_names = st.builds(str.__add__, st.sampled_from(_ALPHA), st.text(alphabet=_ALPHA + _DIGITS, max_size=20))
label_values = st.text(max_size=40)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**15), 10**15).map(float)
timestamps = st.none() | st.integers(-(2**63), 2**63 - 1)
# A shared, noisy machine: no per-example deadline, no "generation is slow" failures.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
blanks = st.text(alphabet=" \t", min_size=1, max_size=3)
opt_blanks = st.text(alphabet=" \t", max_size=3)


@st.composite
def samples(draw) -> Sample:
    labels = draw(st.dictionaries(label_names, label_values, max_size=3))
    return Sample(draw(metric_names), tuple(labels.items()), draw(values), draw(timestamps))


def same(a: Sample, b: Sample) -> bool:
    vals = (math.isnan(a.value) and math.isnan(b.value)) or a.value == b.value
    return vals and (a.name, a.labels, a.timestamp_ms) == (b.name, b.labels, b.timestamp_ms)


@relaxed
@given(st.lists(samples(), max_size=8))
def test_formatted_samples_parse_back_exactly(ss: list[Sample]) -> None:
    text = "\n".join(promtext.format_sample(s) for s in ss) + "\n"
    out = parse(text)
    assert len(out.samples) == len(ss)
    assert all(same(a, b) for a, b in zip(out.samples, ss))


@relaxed
@given(samples(), opt_blanks, blanks, opt_blanks, st.booleans(), opt_blanks, st.data())
def test_blanks_between_tokens_and_a_trailing_comma_do_not_change_a_sample(s, lead, sep, inner, comma, trail, data):
    labels = ""
    if s.labels:
        pairs = [f'{inner}{k}{inner}={inner}"{promtext._escape_label(v)}"{inner}' for k, v in s.labels]
        labels = "{" + ",".join(pairs) + ("," if comma else "") + inner + "}"
    ts = f"{data.draw(blanks)}{s.timestamp_ms}" if s.timestamp_ms is not None else ""
    line = f"{lead}{s.name}{labels}{sep}{promtext.format_value(s.value)}{ts}{trail}\r"
    [got] = parse(line).samples
    assert same(got, s)


help_texts = st.text(max_size=60).filter(lambda t: t == t.strip(" \t\r"))


@relaxed
@given(st.dictionaries(metric_names, st.tuples(help_texts, st.sampled_from(sorted(promtext.METRIC_TYPES))), max_size=6))
def test_help_and_type_lines_are_read_with_their_escapes(meta) -> None:
    lines = []
    for name, (help_text, kind) in meta.items():
        lines += [promtext.format_help(name, help_text), f"# TYPE {name} {kind}", f"{name} 1"]
    out = parse("\n".join(lines))
    assert out.help == {n: h for n, (h, _) in meta.items()}
    assert out.types == {n: k for n, (_, k) in meta.items()}
    assert len(out.samples) == len(meta)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
@example(b'x{a="\\')
@example(b"x{a=\"b\"}} 1")
@example(b"\xff\xfe")
@example(b"# TYPE")
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        parse(data)
    except PromTextError as e:
        assert e.lineno >= 1 and f"line {e.lineno}" in str(e)
    lenient = parse(data, strict=False)
    assert all(n >= 1 for n, _ in lenient.skipped)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet='ab_:{}="\\, \t\n#0123456789.eE+-InfNa', max_size=120))
def test_random_near_misses_give_line_errors_or_samples(text: str) -> None:
    """Text made of the format's own characters: every line is either read or named as bad."""
    content = [i for i, line in enumerate(text.split("\n"), 1) if line.strip(" \t") and not line.strip(" \t").startswith("#")]
    lenient = parse(text, strict=False)
    bad_sample_lines = {n for n, _ in lenient.skipped}
    assert len(lenient.samples) + len(bad_sample_lines - _comment_lines(text)) == len(content)
    if lenient.skipped:
        with pytest.raises(PromTextError) as e:
            parse(text)
        assert e.value.lineno == lenient.skipped[0][0]
    else:
        assert len(parse(text).samples) == len(lenient.samples)


def _comment_lines(text: str) -> set[int]:
    return {i for i, line in enumerate(text.split("\n"), 1) if line.strip(" \t").startswith("#")}


@relaxed
@given(st.lists(samples(), min_size=1, max_size=5), st.data())
def test_a_bad_line_is_named_by_number_and_skipped_alone_when_lenient(ss, data) -> None:
    lines = [promtext.format_sample(s) for s in ss]
    at = data.draw(st.integers(0, len(lines)))
    bad = data.draw(st.sampled_from(['x{a="unclosed 1', "x 1 2 3", "x notanumber", "9lives 1", 'x{a="b",a="c"} 1', "x 1 1.5"]))
    lines.insert(at, bad)
    with pytest.raises(PromTextError) as e:
        parse("\n".join(lines))
    assert e.value.lineno == at + 1
    assert e.value.line == bad
    out = parse("\n".join(lines), strict=False)
    assert [n for n, _ in out.skipped] == [at + 1]
    assert all(same(a, b) for a, b in zip(out.samples, ss)) and len(out.samples) == len(ss)


VLLM_PAGE = '''# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3-8B"} 3.0
vllm:num_requests_running{model_name="mistral-7b"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3-8B"} 5.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3-8B"} 0.25
vllm:gpu_cache_usage_perc{model_name="mistral-7b"} 0.75
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="mistral-7b"} 0.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="mistral-7b"} 12.0
vllm:time_to_first_token_seconds_sum{model_name="mistral-7b"} 1.7
vllm:time_to_first_token_seconds_count{model_name="mistral-7b"} 12.0
# a comment
python_gc_objects_collected_total{generation="0"} 1.2e+03 1700000000000
weird_value NaN
neg -Inf
'''


def test_a_vllm_page_reads_as_vllm_meant_it() -> None:
    out = parse(VLLM_PAGE)
    assert out.total("vllm:num_requests_running") == 5.0
    assert out.total("vllm:num_requests_waiting") == 5.0
    assert out.mean("vllm:gpu_cache_usage_perc") == 0.5
    assert out.types["vllm:time_to_first_token_seconds"] == "histogram"
    assert out.family("vllm:time_to_first_token_seconds_bucket") == "vllm:time_to_first_token_seconds"
    assert out.family("vllm:time_to_first_token_seconds_count") == "vllm:time_to_first_token_seconds"
    assert out.family("python_gc_objects_collected_total") == "python_gc_objects_collected_total"
    inf_bucket = [s for s in out.series("vllm:time_to_first_token_seconds_bucket") if s.label("le") == "+Inf"]
    assert inf_bucket[0].value == 12.0 and inf_bucket[0].label("model_name") == "mistral-7b"
    gc = next(out.series("python_gc_objects_collected_total"))
    assert gc.value == 1200.0 and gc.timestamp_ms == 1700000000000
    assert math.isnan(next(out.series("weird_value")).value)
    assert next(out.series("neg")).value == -math.inf
    assert out.total("absent") is None


def test_only_reads_the_families_asked_for_including_histogram_series() -> None:
    page = VLLM_PAGE + "garbage that would not parse {\n"
    out = parse(page, only=["vllm:num_requests_running", "vllm:time_to_first_token_seconds"])
    assert {s.name for s in out.samples} == {
        "vllm:num_requests_running",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_count",
    }
    assert not out.skipped


@pytest.mark.parametrize(
    "line, words",
    [
        ('x{a="b\\t"} 1', "unknown escape \\t"),
        ('x{a="b"', "label set not closed"),
        ("x{a=b} 1", "expected name=\"value\""),
        ('x{a="b} 1', "not closed with '\"'"),
        ('x{a="1",a="2"} 1', "label 'a' given twice"),
        ("x", "missing value"),
        ("x 0x1p3", "not a number"),
        ("x 1_000", "not a number"),
        ("x 1 12.5", "not an integer"),
        ("x 1 2 3", "after the timestamp"),
        ("x 1 99999999999999999999", "int64"),
        ("# TYPE x histogramm", "unknown type 'histogramm'"),
        ("# HELP", "needs a metric name"),
        ("# HELP x a\\", "dangling backslash"),
        ("x-y 1", "invalid character '-'"),
        ("x 1 \u0661", "not an integer"),
    ],
)
def test_errors_say_what_is_wrong(line: str, words: str) -> None:
    with pytest.raises(PromTextError) as e:
        parse("ok 1\n" + line)
    assert e.value.lineno == 2
    assert words in str(e.value)
    assert "line 2" in str(e.value)


def test_a_second_type_line_for_a_family_is_an_error() -> None:
    with pytest.raises(PromTextError, match="second # TYPE"):
        parse("# TYPE x gauge\n# TYPE x counter\n")


def test_other_comments_and_unknown_keywords_are_ignored() -> None:
    out = parse("#\n# HELPER not metadata\n#TYPE x gauge\n  \n\tx 1\n")
    assert out.types == {"x": "gauge"}
    assert [s.name for s in out.samples] == ["x"]


def test_values_accept_prometheus_spellings() -> None:
    out = parse("a +Inf\nb inf\nc -infinity\nd nan\ne .5\nf 5.\ng -1E-3\n")
    assert [s.value for s in out.samples[:3]] == [math.inf, math.inf, -math.inf]
    assert math.isnan(out.samples[3].value)
    assert [s.value for s in out.samples[4:]] == [0.5, 5.0, -0.001]
