"""What a request asks of the router, read from its gRPC metadata and first bytes.

The fast path calls these once per request, before any backend is chosen, so
they work on raw HTTP/2 header bytes and on the undecoded start of the gRPC
body: one pass over the headers, table lookups instead of regular expressions,
and a protobuf tag walk instead of a decode.
"""
from __future__ import annotations

from typing import Final

import math
from collections.abc import Callable, Iterable

MODEL: Final = b"x-fastpath-model"
REGION: Final = b"x-fastpath-region"
SESSION: Final = b"x-fastpath-session"
POLICY: Final = b"x-fastpath-policy"
SLO_TTFT_MS: Final = b"x-fastpath-slo-ttft-ms"
MAX_COST: Final = b"x-fastpath-max-cost"
ALLOW_REGIONS: Final = b"x-fastpath-allow-regions"
ALLOW_SUBSTITUTE: Final = b"x-fastpath-allow-substitute"

MAX_NAME_LEN: Final = 256  # model names and session ids
MAX_TOKEN_LEN: Final = 64  # regions and policy names
MAX_NUMBER_LEN: Final = 32
MAX_ALLOW_REGIONS: Final = 32

# bytes.translate(None, delete=...) leaves only the bytes that are NOT allowed:
# a C-speed character-class check without a regular expression.
_TOKEN_BYTES: Final = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_VISIBLE_BYTES: Final = bytes(range(0x21, 0x7F))


class RequestFeatures:
    """The routing inputs of one request.

    A plain class with its own __init__, not a dataclass: a dataclass's generated __init__ runs as
    interpreted Python even when this module is compiled, and a call with unique metadata makes one.
    """

    __slots__ = ("model", "region", "session", "policy", "slo_ttft_ms", "max_cost", "allow_regions",
                 "prompt_blocks", "allow_substitute")

    def __init__(self, model: str = "", region: str = "", session: str = "", policy: str = "",
                 slo_ttft_ms: float = 0.0, max_cost: float = 0.0, allow_regions: tuple[str, ...] = (),
                 prompt_blocks: tuple[int, ...] = (), allow_substitute: bool = False) -> None:
        self.model = model  # "" = not known yet
        self.region = region  # client region
        self.session = session
        self.policy = policy  # "" = the config's default policy
        self.slo_ttft_ms = slo_ttft_ms  # 0 = no SLO
        self.max_cost = max_cost  # max cost per 1k tokens, 0 = no limit
        self.allow_regions = allow_regions  # data-sovereignty allow-list of site regions, () = any
        self.prompt_blocks = prompt_blocks  # chain hashes of the prompt's blocks (fastpath.router.prefix)
        self.allow_substitute = allow_substitute  # a model of the requested model's group may serve it

    def _fields(self) -> tuple:
        return (self.model, self.region, self.session, self.policy, self.slo_ttft_ms, self.max_cost,
                self.allow_regions, self.prompt_blocks, self.allow_substitute)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestFeatures):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return ("RequestFeatures(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.__slots__, self._fields())) + ")")


class MetadataError(ValueError):
    """Request metadata fastpath cannot route on; the message names the header,
    what was wrong with it and what is accepted (the proxy returns it to the
    client as INVALID_ARGUMENT)."""


def _show(value: bytes) -> str:
    text = value[:40].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(value) > 40 else ""))


def _visible(name: bytes, value: bytes, limit: int, what: str) -> str:
    value = value.strip()
    if len(value) > limit:
        raise MetadataError(
            f"{name.decode()}: value is {len(value)} bytes long; {what} must be at most {limit} bytes"
        )
    if value.translate(None, _VISIBLE_BYTES):
        raise MetadataError(
            f"{name.decode()}: {_show(value)} contains spaces, control or non-ASCII bytes; "
            f"{what} must be visible ASCII"
        )
    return value.decode("ascii")


def _token(name: bytes, value: bytes, what: str) -> str:
    value = value.strip()
    if len(value) > MAX_TOKEN_LEN:
        raise MetadataError(
            f"{name.decode()}: value is {len(value)} bytes long; {what} must be at most {MAX_TOKEN_LEN} bytes"
        )
    if value.translate(None, _TOKEN_BYTES):
        raise MetadataError(
            f"{name.decode()}: {_show(value)} is not a valid {what}; use letters, digits, '.', '_' and '-'"
        )
    return value.decode("ascii")


def _number(name: bytes, value: bytes, unit: str, example: str) -> float:
    value = value.strip()
    accepted = f"send a non-negative number of {unit}, e.g. {example}"
    if not value:
        raise MetadataError(f"{name.decode()}: empty value; {accepted}")
    if len(value) > MAX_NUMBER_LEN:
        raise MetadataError(f"{name.decode()}: value is {len(value)} bytes long; {accepted}")
    try:
        number = float(value)
    except ValueError:
        raise MetadataError(f"{name.decode()}: {_show(value)} is not a number; {accepted}") from None
    if not math.isfinite(number):
        raise MetadataError(f"{name.decode()}: {_show(value)} is not a finite number; {accepted}")
    if number < 0:
        raise MetadataError(f"{name.decode()}: {_show(value)} is negative; {accepted}")
    return number


def _set_model(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.model = _visible(name, value, MAX_NAME_LEN, "a model name")


def _set_session(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.session = _visible(name, value, MAX_NAME_LEN, "a session id")


def _set_region(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.region = _token(name, value, "region name")


def _set_policy(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.policy = _token(name, value, "policy name")


def _set_slo(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.slo_ttft_ms = _number(name, value, "milliseconds (0 = no SLO)", "250")


def _set_max_cost(f: RequestFeatures, name: bytes, value: bytes) -> None:
    f.max_cost = _number(name, value, "cost units per 1k tokens (0 = no limit)", "0.5")


def _set_allow_regions(f: RequestFeatures, name: bytes, value: bytes) -> None:
    accepted = "send a comma-separated list of site regions, e.g. eu-west,eu-central"
    parts = [p for p in value.split(b",") if p.strip()]
    if not parts:
        raise MetadataError(f"{name.decode()}: no region given; {accepted} (omit the header to allow any)")
    if len(parts) > MAX_ALLOW_REGIONS:
        raise MetadataError(f"{name.decode()}: {len(parts)} regions given; at most {MAX_ALLOW_REGIONS}")
    regions = tuple(_token(name, p, "region name") for p in parts)
    # Canonical order so equal allow-lists share the router's per-list caches.
    f.allow_regions = tuple(sorted(set(regions)))


_YES: Final = frozenset({b"true", b"1", b"yes"})
_NO: Final = frozenset({b"false", b"0", b"no"})


def _set_allow_substitute(f: RequestFeatures, name: bytes, value: bytes) -> None:
    v = value.strip().lower()
    if v in _YES:
        f.allow_substitute = True
    elif v in _NO:
        f.allow_substitute = False
    else:
        raise MetadataError(f"{name.decode()}: {_show(value)} is not a boolean; send true to let a substitute "
                            "model of the requested model's group serve the call, or false (the default)")


_HANDLERS: Final[dict[bytes, Callable[[RequestFeatures, bytes, bytes], None]]] = {
    MODEL: _set_model,
    REGION: _set_region,
    SESSION: _set_session,
    POLICY: _set_policy,
    SLO_TTFT_MS: _set_slo,
    MAX_COST: _set_max_cost,
    ALLOW_REGIONS: _set_allow_regions,
    ALLOW_SUBSTITUTE: _set_allow_substitute,
}

# An empty string header means "not given"; for these an empty value is a
# client bug worth reporting (an empty allow-list must not silently mean "any").
_EMPTY_IS_ERROR: Final = frozenset({SLO_TTFT_MS, MAX_COST, ALLOW_REGIONS, ALLOW_SUBSTITUTE})


def features_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> RequestFeatures:
    """The routing inputs carried in a request's metadata.

    Header names arrive lower-case (HTTP/2). Unknown x-fastpath-* headers are
    ignored; a repeated header keeps its last value; an empty string header
    counts as absent. Bad values raise MetadataError.
    """
    f = RequestFeatures()
    get = _HANDLERS.get
    for name, value in headers:
        handler = get(name)
        if handler is not None and (value or name in _EMPTY_IS_ERROR):
            handler(f, name, value)
    return f


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); next position -1 when truncated or over 10 bytes."""
    result = 0
    shift = 0
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    return 0, -1


def model_from_infer_request(message: bytes) -> str | None:
    """model_name (field 1) of a gRPC-framed KServe ModelInferRequest, or None.

    `message` is the start of a request body: the 5-byte gRPC prefix then the
    protobuf message, possibly truncated. The message is not decoded: tags are
    walked and other fields skipped by wire type. Like a protobuf parser, the
    last model_name wins; a message truncated after a model_name returns the
    last one seen. None when absent or empty, compressed, malformed, not UTF-8,
    or truncated before it. Never raises.
    """
    try:
        n = len(message)
        if n < 6 or message[0] != 0:
            return None
        end = min(n, 5 + int.from_bytes(message[1:5], "big"))
        pos = 5
        found: bytes | None = None
        while pos < end:
            tag = message[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _varint(message, pos, end)
                if pos < 0:
                    break
            wire = tag & 7
            field = tag >> 3
            if field == 0 or (field == 1 and wire != 2):
                return None  # field 0 does not exist; model_name must be length-delimited
            if wire == 2:
                length = message[pos] if pos < end else 0x80
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = _varint(message, pos, end)
                    if pos < 0:
                        break
                stop = pos + length
                if tag == 0x0A:  # field 1, length-delimited
                    if stop > end:
                        break
                    found = message[pos:stop]
                pos = stop
            elif wire == 0:
                _, pos = _varint(message, pos, end)
                if pos < 0:
                    break
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:  # groups (3, 4) do not occur in this message; 6, 7 are invalid
                return None
        if not found:
            return None
        return found.decode("utf-8")
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return None


def model_from_path(path: bytes) -> str:
    """The gRPC service of a request path ("/pkg.Service/Method" -> "pkg.Service").

    A last resort for routing when neither metadata nor body name a model;
    "" when the path has no service part.
    """
    p = path.split(b"?", 1)[0].strip(b"/")
    service = p.rsplit(b"/", 1)[0] if b"/" in p else b""
    return service.decode("utf-8", "replace")


PROMPT_INPUT: Final = b"text_input"  # the BYTES input that carries the prompt (configurable per call)
MAX_PROMPT_BYTES: Final = 16 * 1024  # prompt bytes read from a request, at most
_MAX_FIELDS: Final = 256  # length-delimited fields looked at per message level before giving up


def _ld_fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, bool]] | None:
    """(field number, start, stop, cut) of the length-delimited fields in buf[pos:end].

    Other wire types are skipped. A field cut off by `end` (a message that has
    not fully arrived) is kept with stop = end and cut = True and ends the walk.
    None when the bytes cannot be a protobuf message (field 0, groups, wire
    types 6 and 7).
    """
    out: list[tuple[int, int, int, bool]] = []
    while pos < end and len(out) < _MAX_FIELDS:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(buf, pos, end)
            if pos < 0:
                return out
        wire = tag & 7
        field = tag >> 3
        if field == 0:
            return None
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos < 0:
                return out
            stop = pos + length
            if stop > end:
                out.append((field, pos, end, True))
                return out
            out.append((field, pos, stop, False))
            pos = stop
        else:
            pos = skip_scalar(buf, pos, end, wire)
            if pos == -2:
                return None
            if pos < 0:
                return out
    return out


def skip_scalar(buf: bytes, pos: int, end: int, wire: int) -> int:
    """Position after a varint, fixed64 or fixed32 value at pos (it may lie past `end`: the
    caller checks); -1 for a truncated varint, -2 for a wire type a message cannot hold here."""
    if wire == 0:
        return _varint(buf, pos, end)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    return -2


def prompt_from_infer_request(message: bytes, input_name: bytes = PROMPT_INPUT,
                              max_bytes: int = MAX_PROMPT_BYTES) -> bytes | None:
    """The first element of the BYTES input `input_name` of a gRPC-framed ModelInferRequest.

    The same message opens every ModelStreamInfer call. Read from the input's
    `contents.bytes_contents`, else from its `raw_input_contents` entry (a
    4-byte little-endian length, then the bytes); at most max_bytes of it.
    `message` may be the start of the body only: a prompt cut off by the end
    of `message` is returned as far as it goes (a prefix of the prompt is what
    prefix affinity needs). None when there is no such input, the message is
    compressed or malformed. Never raises; nothing is decoded but the walk.
    """
    try:
        n = len(message)
        if n < 6 or message[0] != 0:
            return None
        end = min(n, 5 + int.from_bytes(message[1:5], "big"))
        top = _ld_fields(message, 5, end)
        if top is None:
            return None
        target = -1
        inputs = 0
        prompt: bytes | None = None
        raw: list[tuple[int, int]] = []
        for field, start, stop, _ in top:
            if field == 5:  # inputs: InferInputTensor
                sub = _ld_fields(message, start, stop)
                if sub is None:
                    return None
                name = b""
                contents: tuple[int, int] | None = None
                for f2, s2, e2, cut in sub:
                    if f2 == 1:
                        name = b"" if cut else message[s2:e2]  # a cut name could match a longer one
                    elif f2 == 5 and contents is None:
                        contents = (s2, e2)
                if name == input_name and target < 0:
                    target = inputs
                    if contents is not None:
                        inner = _ld_fields(message, contents[0], contents[1])
                        if inner is None:
                            return None
                        for f3, s3, e3, _ in inner:
                            if f3 == 8:  # bytes_contents: the first element is the prompt
                                prompt = message[s3:min(e3, s3 + max_bytes)]
                                break
                inputs += 1
            elif field == 7:  # raw_input_contents, one entry per input in order
                raw.append((start, stop))
        if prompt is not None:
            return prompt
        if 0 <= target < len(raw):
            start, stop = raw[target]
            if stop - start < 4:
                return None
            size = int.from_bytes(message[start:start + 4], "little")
            start += 4
            return message[start:min(stop, start + size, start + max_bytes)]
        return None
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return None
