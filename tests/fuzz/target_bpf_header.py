"""Fuzz target: the BPF header parser (`fastpath.offload.maps.parse_header` and `read_with_includes`).

Input: a header's text (UTF-8, undecodable bytes replaced).

Contract checked: parsing returns a Layout or raises HeaderError (nothing
else); every struct it returns has fields and a positive size; and the same
text split at a line boundary into a header that `#include`s the rest parses
to the same constants and structs (the Katran-style split of fastpath's
headers must not change what Python reads).
"""
from __future__ import annotations

import ctypes
import tempfile
from pathlib import Path

from fastpath.offload.maps import _COMMENT, _INCLUDE, HeaderError, parse_header, read_with_includes


def _summary(layout) -> tuple:
    return (layout.constants, {n: [(f, ctypes.sizeof(t)) for f, t in s._fields_] for n, s in layout.structs.items()})


def _cut(lines: list[str]) -> int | None:
    """A line index near the middle that is outside any comment (so the split keeps the text's meaning)."""
    mid = len(lines) // 2
    for off in range(len(lines)):
        for cut in (mid - off, mid + off):
            if 0 <= cut <= len(lines) and "/*" not in _COMMENT.sub(" ", "\n".join(lines[:cut])):
                return cut
    return None


def one_input(data: bytes) -> None:
    # include lines name files this input does not come with: the split below adds the one it needs
    text = _INCLUDE.sub("", data.decode("utf-8", "replace").replace("\r", ""))
    try:
        whole = parse_header(text)
    except HeaderError:
        whole = None
    if whole is not None:
        for s in whole.structs.values():
            assert s._fields_ and ctypes.sizeof(s) > 0
    lines = text.split("\n")
    cut = _cut(lines)
    if cut is None:
        return
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "rest.h").write_text("\n".join(lines[cut:]))
        top = Path(d) / "top.h"
        top.write_text("\n".join(lines[:cut]) + '\n#include "rest.h"\n')
        try:
            split = parse_header(read_with_includes(top))
        except HeaderError:
            split = None
    assert (whole is None) == (split is None), "splitting the header into an include changed whether it parses"
    if whole is not None:
        assert _summary(whole) == _summary(split), "splitting the header into an include changed what it defines"
