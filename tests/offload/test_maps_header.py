"""fastpath_maps.h parsing: properties of the parser, and agreement with what clang built."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest
from fastpath.offload.maps import HeaderError, load_layout, parse_header
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.offload.conftest import REPO

SIZES = {"__u8": 1, "__u16": 2, "__u32": 4, "__u64": 8, "__s8": 1, "__s16": 2, "__s32": 4, "__s64": 8}
LOWER, UPPER, DIGITS = "abcdefghijklmnopqrstuvwxyz_", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_", "0123456789"
ident = st.builds(lambda a, b: a + b, st.sampled_from(LOWER), st.text(LOWER + DIGITS, max_size=12)).filter(
    lambda s: s not in ("struct", "define"))
const_name = st.builds(lambda b: "FP_" + b, st.text(UPPER + DIGITS, min_size=1, max_size=12))
field_spec = st.tuples(st.sampled_from(sorted(SIZES)), st.integers(0, 5))  # (type, array length or 0)


def c_layout(fields: list[tuple[str, int]]) -> tuple[int, list[int]]:
    """Size and offsets by the C rules for naturally aligned integer fields."""
    off, offsets, align = 0, [], 1
    for t, n in fields:
        size = SIZES[t]
        off = (off + size - 1) // size * size
        offsets.append(off)
        off += size * max(n, 1)
        align = max(align, size)
    return (off + align - 1) // align * align, offsets


@settings(max_examples=150, deadline=None)
@given(
    consts=st.dictionaries(const_name, st.one_of(st.integers(0, 2**40), ident), max_size=6),
    structs=st.dictionaries(ident, st.lists(st.tuples(ident, field_spec), min_size=1, max_size=6, unique_by=lambda f: f[0]), max_size=3),
    hex_style=st.booleans(),
)
def test_parsed_header_matches_what_was_written(consts, structs, hex_style):
    lines = ["/* generated */", "#ifndef X_H", "#define X_H"]
    for name, value in consts.items():
        rendered = (hex(value) if hex_style else str(value)) if isinstance(value, int) else value
        lines.append(f"#define {name} {rendered}   /* note */")
    for sname, fields in structs.items():
        lines.append(f"struct {sname} {{")
        for fname, (t, n) in fields:
            lines.append(f"\t{t} {fname}{f'[{n}]' if n else ''}; // why")
        lines.append("};")
    lines.append("#endif")
    layout = parse_header("\n".join(lines))
    for name, value in consts.items():
        assert layout.constants[name] == value
    assert set(layout.structs) == set(structs)
    for sname, fields in structs.items():
        cls = layout.structs[sname]
        size, offsets = c_layout([spec for _, spec in fields])
        assert ctypes.sizeof(cls) == size
        assert [getattr(cls, f).offset for f, _ in fields] == offsets
        assert [f for f, _ in cls._fields_] == [f for f, _ in fields]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("#define struct{};[]_ FPx0123456789\"/*\n\tabc")), max_size=200))
def test_any_text_parses_or_says_what_is_wrong(text):
    try:
        parse_header(text)
    except HeaderError as e:
        assert str(e)


@pytest.mark.parametrize(
    "text, words",
    [
        ("#define FP_X 12abc", "expected an integer"),
        ("struct s { float f; };", "unsupported"),
        ("struct s { __u32 a; __u32 a; };", "appears twice"),
        ("struct s { __u32 a[FP_N]; };", "array size"),
        ("struct s { };", "no fields"),
        ("struct s { __u32 *p; };", "cannot read field"),
    ],
)
def test_malformed_header_names_the_problem(text, words):
    with pytest.raises(HeaderError, match=re.escape(words)):
        parse_header(text)


def test_array_length_may_name_a_constant():
    layout = parse_header("#define FP_N 3\nstruct s { __u64 a[FP_N]; __u8 b; };")
    assert ctypes.sizeof(layout.structs["s"]) == 32


def btf_structs(obj: str) -> dict[str, tuple[int, dict[str, int]]]:
    """struct name -> (size, member byte offsets) from the object's BTF, via bpftool."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", obj], capture_output=True, text=True, check=True).stdout
    structs: dict[str, tuple[int, dict[str, int]]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"\[\d+\] STRUCT '(\w+)' size=(\d+) vlen=\d+", line)
        if m:
            current = m.group(1)
            structs[current] = (int(m.group(2)), {})
            continue
        m = re.match(r"\s+'(\w+)' type_id=\d+ bits_offset=(\d+)", line)
        if m and current:
            structs[current][1][m.group(1)] = int(m.group(2)) // 8
        elif not line.startswith("\t") and not line.startswith(" "):
            current = None
    return structs


def test_python_layout_is_what_clang_compiled(bpf_ready):
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool missing: apt-get install bpftool")
    btf: dict[str, tuple[int, dict[str, int]]] = {}
    for obj in ("sockmap_splice.bpf.o", "sockmsg_redirect.bpf.o", "dpu_steer.bpf.o"):
        btf.update(btf_structs(str(REPO / "bpf/build" / obj)))
    layout = load_layout()
    assert {"fp_peer", "fp_flow_stats", "fp_tuple", "fp_shortcut", "fp_dpu_match", "fp_dpu_rule",
            "fp_dpu_tuple", "fp_dpu_conn"} <= set(layout.structs)
    for name, cls in layout.structs.items():
        size, members = btf[name]
        assert ctypes.sizeof(cls) == size, name
        assert {f: getattr(cls, f).offset for f, _ in cls._fields_} == members, name
    errs = layout.prefixed("FP_ERR_")
    classes = {k: v for k, v in errs.items() if k != "FP_ERR_COUNT"}
    assert sorted(classes.values()) == list(range(errs["FP_ERR_COUNT"]))
    for prefix in ("FP_MSG_ERR_", "FP_DPU_ERR_"):  # every program's failure classes are 0..COUNT-1, one each
        errs = layout.prefixed(prefix)
        classes = {k: v for k, v in errs.items() if k != prefix + "COUNT"}
        assert sorted(classes.values()) == list(range(errs[prefix + "COUNT"])), prefix
