"""What makes a request, response or trailer block malformed (RFC 9113 §8.2, §8.3).

An intermediary must not forward a malformed message: the connection answers
it with a stream error PROTOCOL_ERROR. Each function returns None when the
block is well formed, else a message saying what is wrong. The connection
caches verdicts per decoded header list (HPACK hands out the same list for a
repeated block), so a gRPC client's repeated metadata is checked once.
"""
from __future__ import annotations

from typing import Final

Header = tuple[bytes, bytes]

# §8.2.2: connection-specific fields; `te` is allowed with the value "trailers" only.
CONNECTION_SPECIFIC: Final = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding",
                                 b"upgrade"})
REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":path", b":authority", b":protocol"})
RESPONSE_PSEUDO: Final = frozenset({b":status"})

# §8.2.1: a name is lowercase tchar (no upper case, space, control or separators); a value has no
# NUL, CR or LF and no leading or trailing whitespace (SP / HTAB). Checked with bytes methods (one
# C scan each), not regular expressions: a field seen for the first time (a unique request id) cost
# two regex searches, ~10% of such a call's CPU.
_NAME_CHARS: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"


def _bad_name(name: bytes) -> bool:
    return bool(name.translate(None, _NAME_CHARS))  # what is left is not lowercase tchar


def _bad_value(value: bytes) -> bool:
    if not value:
        return False
    # Bytes as ints (NUL, CR, LF): `0 in value` is a memchr, where `b"\x00" in value` first tries
    # the argument as an int and builds a TypeError message before it searches.
    if 0 in value or 13 in value or 10 in value:
        return True
    first = value[0]
    last = value[-1]
    return first == 32 or first == 9 or last == 32 or last == 9


_OK: Final = ""
_verdicts: Final[dict[Header, str]] = {}  # field -> "" (fine) or what is wrong; HPACK hands out the same tuples


def _field_verdict(field: Header) -> str:
    """`_field_error` of one field, remembered: a gRPC client repeats all but one or two fields."""
    v = _verdicts.get(field)
    if v is None:
        v = _field_error(field[0], field[1]) or _OK
        if len(_verdicts) >= 8192:
            _verdicts.clear()
        _verdicts[field] = v
    return v


def _field_error(name: bytes, value: bytes) -> str | None:
    if not name:
        return "empty field name"
    if _bad_name(name):
        return f"field name {name[:40]!r} has upper-case or invalid characters (RFC 9113 §8.2.1)"
    if _bad_value(value):
        return f"field {name.decode('latin-1')} has NUL/CR/LF or leading/trailing whitespace (RFC 9113 §8.2.1)"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific field {name.decode()} (RFC 9113 §8.2.2)"
    if name == b"te" and value != b"trailers":
        return "te other than \"trailers\" (RFC 9113 §8.2.2)"
    return None


def request_error(headers: list[Header]) -> str | None:
    """§8.3.1: pseudo-headers first, each once, the request ones only; :method, :scheme, :path present."""
    seen: set[bytes] = set()
    regular = False
    method = path = scheme = None
    for field in headers:
        name, value = field
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name.decode('latin-1')} after a regular field (RFC 9113 §8.3)"
            if name not in REQUEST_PSEUDO:
                what = "response" if name in RESPONSE_PSEUDO else "unknown"
                return f"{what} pseudo-header {name[:40].decode('latin-1')} in a request (RFC 9113 §8.3)"
            if name in seen:
                return f"pseudo-header {name.decode()} repeated (RFC 9113 §8.3)"
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":scheme":
                scheme = value
            if not value and name != b":authority":
                return f"empty {name.decode()} (RFC 9113 §8.3.1)"
            if _bad_value(value):
                return f"{name.decode()} has NUL/CR/LF or surrounding whitespace (RFC 9113 §8.2.1)"
            continue
        regular = True
        err = _field_verdict(field)
        if err:
            return err
    if method is None:
        return "request without :method (RFC 9113 §8.3.1)"
    if method == b"CONNECT":
        return "CONNECT is not proxied by fastpath (gRPC only)"
    if scheme is None:
        return "request without :scheme (RFC 9113 §8.3.1)"
    if path is None:
        return "request without :path (RFC 9113 §8.3.1)"
    return None


def trailers_error(headers: list[Header]) -> str | None:
    """§8.1: trailers carry no pseudo-headers; the field rules of §8.2 apply."""
    for field in headers:
        if field[0][:1] == b":":
            return f"pseudo-header {field[0][:40].decode('latin-1')} in trailers (RFC 9113 §8.1)"
        err = _field_verdict(field)
        if err:
            return err
    return None


def response_error(headers: list[Header]) -> str | None:
    """§8.3.2: a response has exactly one :status, first, and no request pseudo-headers."""
    status = None
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular or name != b":status" or status is not None:
                return f"bad pseudo-header {name[:40].decode('latin-1')} in a response (RFC 9113 §8.3.2)"
            status = value
            continue
        regular = True
        err = _field_verdict((name, value))
        if err:
            return err
    if status is None:
        return "response without :status (RFC 9113 §8.3.2)"
    return None


def content_length(headers: list[Header]) -> int:
    """The content-length of a header list; -1 when absent. ValueError when not a number."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                raise ValueError(f"content-length {value[:20]!r} is not a number")
            return int(value)
    return -1
