"""HPACK (RFC 7541) decoder and encoder tuned for a proxy that sees the same blocks again and again.

gRPC clients repeat header blocks call after call. The decoder caches whole
blocks while its dynamic table is unchanged, and caches Huffman-decoded
strings per field, so a block with one unique value (an `x-request-id`) costs
one string decode, not a whole block. The encoder indexes fields whose values
repeat and sends fields whose values keep changing as literals without
indexing, so unique values do not churn the table; it never Huffman-codes
(cheaper to produce, a few bytes more on loopback-class links).
"""
from __future__ import annotations

from typing import Final

from collections import deque

from .huffman import decode_huffman
from hpack.table import HeaderTable

from .frames import COMPRESSION_ERROR, H2Error

STATIC_TABLE: Final[tuple[tuple[bytes, bytes], ...]] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_LEN: Final = len(STATIC_TABLE)  # 61
_STATIC_PAIR: Final = {pair: i + 1 for i, pair in reversed(list(enumerate(STATIC_TABLE)))}
_STATIC_NAME: Final[dict[bytes, int]] = {}
for _i, (_n, _v) in reversed(list(enumerate(STATIC_TABLE))):
    _STATIC_NAME[_n] = _i + 1

Header = tuple[bytes, bytes]
_LITERALS: Final[dict[Header, bytes]] = {}  # literal-without-indexing encodings (independent of any table)
NEVER_INDEX: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})


def _entry_size(name: bytes, value: bytes) -> int:
    return len(name) + len(value) + 32


def encode_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with `first` holding the representation's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class HpackDecoder:
    """Decodes header blocks of one connection (one direction)."""

    __slots__ = ("table", "size", "max_size", "settings_max", "generation", "_blocks", "_strings",
                 "max_header_list", "cached")

    def __init__(self, settings_max: int = 4096, max_header_list: int = 65536) -> None:
        self.table: deque[Header] = deque()
        self.size = 0
        self.max_size = settings_max
        self.settings_max = settings_max  # what we advertised in SETTINGS_HEADER_TABLE_SIZE
        self.generation = 0  # bumps whenever the dynamic table changes
        self._blocks: dict[bytes, tuple[int, list[Header]]] = {}
        self._strings: dict[bytes, bytes] = {}
        self.max_header_list = max_header_list
        # Whether the list decode() last returned is the block cache's (the same list comes back for
        # the same block): what is worth remembering per list. A block that changed the table (a
        # unique value indexed by the peer) decodes to a list seen once: caching it only churns.
        self.cached = False

    def decode(self, block: bytes) -> list[Header]:
        hit = self._blocks.get(block)
        if hit is not None and hit[0] == self.generation:
            self.cached = True
            return hit[1]
        gen = self.generation
        headers = self._decode(block)
        self.cached = gen == self.generation
        if self.cached:  # block left the table alone: same bytes, same meaning next time
            if len(self._blocks) >= 512:
                self._blocks.clear()
            self._blocks[block] = (gen, headers)
        return headers

    def _int(self, data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        try:
            value = data[pos] & limit
            pos += 1
            if value < limit:
                return value, pos
            shift = 0
            while True:
                b = data[pos]
                pos += 1
                value += (b & 0x7F) << shift
                if not b & 0x80:
                    return value, pos
                shift += 7
                if shift > 28:
                    raise H2Error(COMPRESSION_ERROR, "HPACK integer too large")
        except IndexError:
            raise H2Error(COMPRESSION_ERROR, "truncated HPACK integer") from None

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(data):
            raise H2Error(COMPRESSION_ERROR, "truncated HPACK string")
        huff = data[pos] & 0x80
        length, pos = self._int(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise H2Error(COMPRESSION_ERROR, "HPACK string runs past the end of the block")
        raw = data[pos:end]
        if not huff:
            return raw, end
        s = self._strings.get(raw)
        if s is None:
            try:
                s = decode_huffman(raw)
            except Exception:
                raise H2Error(COMPRESSION_ERROR, "invalid Huffman-coded string in header block") from None
            if len(self._strings) >= 4096:
                self._strings.clear()
            self._strings[raw] = s
        return s, end

    def _lookup(self, index: int) -> Header:
        if index == 0:
            raise H2Error(COMPRESSION_ERROR, "HPACK index 0")
        if index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        try:
            return self.table[index - _STATIC_LEN - 1]
        except IndexError:
            raise H2Error(COMPRESSION_ERROR, f"HPACK index {index} outside the dynamic table") from None

    def _add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        size = _entry_size(name, value)
        table = self.table
        if size > self.max_size:
            table.clear()
            self.size = 0
            return
        table.appendleft((name, value))
        self.size += size
        while self.size > self.max_size:
            n, v = table.pop()
            self.size -= _entry_size(n, v)

    def _resize(self, new: int) -> None:
        if new > self.settings_max:
            raise H2Error(COMPRESSION_ERROR, f"dynamic table size update to {new} above the {self.settings_max} we allow")
        self.generation += 1
        self.max_size = new
        while self.size > new:
            n, v = self.table.pop()
            self.size -= _entry_size(n, v)

    def _decode(self, data: bytes) -> list[Header]:
        out: list[Header] = []
        pos = 0
        n = len(data)
        total = 0
        seen_field = False
        while pos < n:
            b = data[pos]
            if b & 0x80:  # indexed field
                index, pos = self._int(data, pos, 7)
                name, value = self._lookup(index)
            elif b & 0x40:  # literal with incremental indexing
                index, pos = self._int(data, pos, 6)
                if index:
                    name = self._lookup(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
                self._add(name, value)
            elif b & 0x20:  # dynamic table size update: only before the first field
                if seen_field:
                    raise H2Error(COMPRESSION_ERROR, "dynamic table size update after a header field")
                size, pos = self._int(data, pos, 5)
                self._resize(size)
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                index, pos = self._int(data, pos, 4)
                if index:
                    name = self._lookup(index)[0]
                else:
                    name, pos = self._string(data, pos)
                value, pos = self._string(data, pos)
            seen_field = True
            total += len(name) + len(value) + 32
            if total > self.max_header_list:
                raise H2Error(COMPRESSION_ERROR, f"header list larger than {self.max_header_list} bytes")
            out.append((name, value))
        return out


class HpackEncoder:
    """Encodes header lists for one connection (one direction), never Huffman-coding."""

    __slots__ = ("entries", "size", "max_size", "_pairs", "_names", "_inserted", "_last_value",
                 "_value_changes", "_pending_resize", "generation", "_blocks", "_fields")

    def __init__(self) -> None:
        self.entries: deque[Header] = deque()  # newest first
        self.size = 0
        self.max_size = 4096
        self._pairs: dict[Header, int] = {}   # pair -> insertion number
        self._names: dict[bytes, int] = {}    # name -> insertion number of newest entry with it
        self._inserted = 0                    # insertions so far
        self._last_value: dict[bytes, bytes] = {}
        self._value_changes: dict[bytes, int] = {}  # name -> times its value changed
        self._pending_resize: int | None = None
        self.generation = 0
        self._blocks: dict[tuple[Header, ...], tuple[int, bytes]] = {}
        # Per field: its encoding while the table is unchanged (a block with one new value still
        # reuses the others).
        self._fields: dict[Header, tuple[int, bytes]] = {}

    def set_max_table_size(self, size: int) -> None:
        """Applies the peer's SETTINGS_HEADER_TABLE_SIZE (we use at most 4096)."""
        size = min(size, 4096)
        if size != self.max_size:
            self.max_size = size
            self._pending_resize = size
            self._evict()
            self.generation += 1

    def _evict(self) -> None:
        while self.size > self.max_size and self.entries:
            name, value = self.entries.pop()
            self.size -= _entry_size(name, value)
            oldest = self._inserted - len(self.entries) - 1
            if self._pairs.get((name, value)) == oldest:
                del self._pairs[(name, value)]
            if self._names.get(name) == oldest:
                del self._names[name]

    def _dyn_index(self, insertion: int) -> int:
        return _STATIC_LEN + self._inserted - insertion

    def encode(self, headers: list[Header] | tuple[Header, ...]) -> bytes:
        key = tuple(headers)
        hit = self._blocks.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        gen = self.generation
        block, churn = self._encode(key)
        if gen == self.generation and not churn:  # a block with a per-call value never recurs
            if len(self._blocks) >= 512:
                self._blocks.clear()
            self._blocks[key] = (gen, block)
        return block

    def _remember(self, pair: Header, rep: bytes) -> None:
        fields = self._fields
        if len(fields) >= 1024:
            fields.clear()
        fields[pair] = (self.generation, rep)

    def literal(self, name: bytes, value: bytes) -> bytes:
        """One field as a literal without indexing: appended to any block, it leaves the table as it was.

        For values that differ on every message (the decision trailer), so the
        rest of the block stays a cache hit.
        """
        key = (name, value)
        hit = _LITERALS.get(key)
        if hit is not None:
            return hit
        name_idx = _STATIC_NAME.get(name, 0)
        out = [encode_int(name_idx, 4, 0x00)]
        if not name_idx:
            out += [encode_int(len(name), 7, 0), name]
        out += [encode_int(len(value), 7, 0), value]
        block = b"".join(out)
        if len(_LITERALS) >= 4096:
            _LITERALS.clear()
        _LITERALS[key] = block  # the same decision under steady load repeats
        return block

    def _encode(self, headers: tuple[Header, ...]) -> tuple[bytes, bool]:
        """(the block, whether it sent a field whose value keeps changing)."""
        out: list[bytes] = []
        churn = False
        if self._pending_resize is not None:
            out.append(encode_int(self._pending_resize, 5, 0x20))
            self._pending_resize = None
        fields = self._fields
        for pair in headers:
            hit = fields.get(pair)
            if hit is not None and hit[0] == self.generation:
                out.append(hit[1])
                continue
            name, value = pair
            idx = _STATIC_PAIR.get(pair)
            if idx is not None:
                rep = encode_int(idx, 7, 0x80)
                self._remember(pair, rep)
                out.append(rep)
                continue
            ins = self._pairs.get(pair)
            if ins is not None:
                rep = encode_int(self._dyn_index(ins), 7, 0x80)
                self._remember(pair, rep)
                out.append(rep)
                continue
            name_idx = _STATIC_NAME.get(name, 0)
            if not name_idx:
                nins = self._names.get(name)
                if nins is not None:
                    name_idx = self._dyn_index(nins)
            last = self._last_value.get(name)
            if last is not None and last != value:
                self._value_changes[name] = self._value_changes.get(name, 0) + 1
            self._last_value[name] = value
            size = _entry_size(name, value)
            index_it = (name not in NEVER_INDEX and self._value_changes.get(name, 0) < 2
                        and size <= self.max_size // 2)
            if index_it:
                first, bits = 0x40, 6
            elif name in NEVER_INDEX:
                first, bits = 0x10, 4
            else:
                first, bits = 0x00, 4
                churn = True
            out.append(encode_int(name_idx, bits, first))
            if not name_idx:
                out.append(encode_int(len(name), 7, 0))
                out.append(name)
            out.append(encode_int(len(value), 7, 0))
            out.append(value)
            if index_it:
                self.generation += 1
                self.entries.appendleft(pair)
                self.size += size
                self._pairs[pair] = self._inserted
                self._names[name] = self._inserted
                self._inserted += 1
                self._evict()
        return b"".join(out), churn
