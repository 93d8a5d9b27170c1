"""The BPF map layouts, read from bpf/fastpath_maps.h so C and Python share one definition.

The header is the source of truth (Katran keeps its balancer_maps.h the same
way); this module parses its `#define`s and plain structs into Python
constants and ctypes structures, so a field added in C shows up here without
a second hand-written copy that could drift.
"""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fastpath.offload.bpf_files import bpf_dir  # the one locator (re-exported: callers import it from here too)

# C field types the header may use, and their ctypes equivalents.
CTYPES: dict[str, type] = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
    "__s8": ctypes.c_int8,
    "__s16": ctypes.c_int16,
    "__s32": ctypes.c_int32,
    "__s64": ctypes.c_int64,
}

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_STRUCT = re.compile(r"\bstruct[ \t\n]+([A-Za-z_]\w*)[ \t\n]*\{(.*?)\}[ \t\n]*;", re.DOTALL)
_FIELD = re.compile(r"^([A-Za-z_]\w*)[ \t\n]+([A-Za-z_]\w*)[ \t\n]*(?:\[[ \t\n]*(\w+)[ \t\n]*\])?$")
_INT = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*$")


class HeaderError(ValueError):
    """fastpath_maps.h holds something this parser does not accept; the message names it."""


@dataclass(frozen=True)
class Layout:
    """Everything fastpath_maps.h defines: constants and ctypes structs."""

    constants: dict[str, int | str]
    structs: dict[str, type[ctypes.Structure]] = field(default_factory=dict)
    source: str = "<text>"

    def int(self, name: str) -> int:
        value = self.constants[name]
        if not isinstance(value, int):
            raise HeaderError(f"{self.source}: {name} is {value!r}, expected an integer")
        return value

    def str(self, name: str) -> str:
        value = self.constants[name]
        if not isinstance(value, str):
            raise HeaderError(f"{self.source}: {name} is {value!r}, expected a name or string")
        return value

    def prefixed(self, prefix: str) -> dict[str, int]:
        """Integer constants starting with `prefix`, e.g. the FP_ERR_ failure classes."""
        return {k: v for k, v in self.constants.items() if k.startswith(prefix) and isinstance(v, int)}


def _value(name: str, text: str, source: str) -> int | str:
    if _INT.match(text):
        digits = text.rstrip("uUlL")
        if digits[:2] in ("0x", "0X"):
            return int(digits, 16)
        return int(digits, 8) if digits.startswith("0") else int(digits)
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1] and "\\" not in text:
        return text[1:-1]
    if re.fullmatch(r"[A-Za-z_]\w*", text):
        return text
    raise HeaderError(f"{source}: #define {name} {text}: expected an integer, a \"string\" or a name")


def parse_header(text: str, source: str = "<text>") -> Layout:
    """Parses the restricted C of fastpath_maps.h into a Layout.

    Accepts `#define NAME value` (integer, "string", identifier) and structs of
    fixed-width integer fields and arrays; anything else in a struct is an error.
    """
    clean = _COMMENT.sub(" ", text)
    constants: dict[str, int | str] = {}
    for m in _DEFINE.finditer(clean):
        name, raw = m.group(1), m.group(2)
        constants[name] = _value(name, raw.strip(), source)
    structs: dict[str, type[ctypes.Structure]] = {}
    for m in _STRUCT.finditer(clean):
        sname, body = m.group(1), m.group(2)
        fields: list[tuple[str, type]] = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            f = _FIELD.match(decl)
            if not f:
                raise HeaderError(f"{source}: struct {sname}: cannot read field {decl!r}; use '__u64 name;' or '__u64 name[N];'")
            ctype_name, fname, count = f.groups()
            if ctype_name not in CTYPES:
                raise HeaderError(f"{source}: struct {sname}.{fname}: type {ctype_name} unsupported; use one of {sorted(CTYPES)}")
            ctype: type = CTYPES[ctype_name]
            if count is not None:
                n = constants.get(count, count)
                n = _value(count, str(n), source) if not isinstance(n, int) else n
                if not isinstance(n, int) or n <= 0:
                    raise HeaderError(f"{source}: struct {sname}.{fname}: array size {count!r} is not a positive integer")
                ctype = ctype * n
            if any(fname == existing for existing, _ in fields):
                raise HeaderError(f"{source}: struct {sname}: field {fname} appears twice")
            fields.append((fname, ctype))
        if not fields:
            raise HeaderError(f"{source}: struct {sname} has no fields")
        structs[sname] = type(sname, (ctypes.Structure,), {"_fields_": fields})
    return Layout(constants=constants, structs=structs, source=source)



_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def read_with_includes(p: Path, seen: set[Path] | None = None) -> str:
    """The header's text with its `#include "x.h"` lines replaced by x.h (next to it), each file once.

    fastpath_maps.h includes fastpath_consts.h and fastpath_structs.h (the
    Katran-style split); `<...>` system includes are left alone.
    """
    seen = set() if seen is None else seen
    seen.add(p.resolve())
    try:
        text = p.read_text()
    except OSError as e:
        raise HeaderError(f"cannot read {p}: {e.strerror}; set FASTPATH_BPF_DIR to the folder holding fastpath_maps.h") from None

    def inline(m: re.Match[str]) -> str:
        inc = p.parent / m.group(1)
        if inc.resolve() in seen:
            return ""
        return read_with_includes(inc, seen)

    return _INCLUDE.sub(inline, text)


@lru_cache(maxsize=4)
def load_layout(path: str | None = None) -> Layout:
    """Parses fastpath_maps.h and what it includes (from bpf_dir() unless `path` is given)."""
    p = Path(path) if path else bpf_dir() / "fastpath_maps.h"
    return parse_header(read_with_includes(p), str(p))
