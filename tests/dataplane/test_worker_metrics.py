"""Workers' /metrics merged into one page: valid text format, every sample once per worker, labelled."""
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.control import promtext as pt
from fastpath.dataplane.worker_metrics import merge_expositions

NAME = st.sampled_from(["up", "fastpath_requests_total", "rt_seconds", "queue_depth", "x", "a_b"])
LABELS = st.dictionaries(st.sampled_from(["backend", "model", "status", "le", "path"]),
                         st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6), max_size=3)
VALUE = st.floats(allow_nan=False, width=64)
SERIES = st.lists(st.tuples(LABELS, VALUE), max_size=4, unique_by=lambda t: tuple(sorted(t[0].items())))


@st.composite
def exposition(draw) -> str:
    lines = []
    for name in draw(st.lists(NAME, min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["counter", "gauge", "untyped", ""]))
        help_text = draw(st.sampled_from(["", "what it counts", "a \\ b"]))
        if help_text:
            lines.append(pt.format_help(name, help_text))
        if kind:
            lines.append(f"# TYPE {name} {kind}")
        for labels, value in draw(SERIES):
            lines.append(pt.format_sample(pt.Sample(name, tuple(sorted(labels.items())), value, None)))
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(pages=st.lists(exposition(), min_size=1, max_size=3))
def test_merged_page_parses_and_keeps_every_sample_per_worker(pages):
    merged = merge_expositions([(str(i), p) for i, p in enumerate(pages)])
    out = pt.parse(merged)  # strict: families stay together under one header
    for i, page in enumerate(pages):
        want = sorted((s.name, tuple(sorted(s.labels)), s.value) for s in pt.parse(page).samples)
        got = sorted((s.name, tuple(sorted(kv for kv in s.labels if kv[0] != "worker")), s.value)
                     for s in out.samples if ("worker", str(i)) in s.labels)
        assert got == want


def test_histogram_series_stay_under_their_family_header():
    page = ('# HELP rt_seconds time\n# TYPE rt_seconds histogram\nrt_seconds_bucket{le="0.1"} 1\n'
            'rt_seconds_bucket{le="+Inf"} 2\nrt_seconds_sum 0.3\nrt_seconds_count 2\n# TYPE up gauge\nup 1\n')
    merged = merge_expositions([("0", page), ("1", page)])
    lines = merged.splitlines()
    assert lines.count("# TYPE rt_seconds histogram") == 1
    assert lines.index("# TYPE up gauge") > max(i for i, x in enumerate(lines) if x.startswith("rt_seconds"))
    assert 'rt_seconds_bucket{le="0.1",worker="1"} 1' in lines and 'up{worker="0"} 1' in lines
