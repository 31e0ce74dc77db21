"""The request body: read under caps, decompressed under a cap, parsed as strict JSON.

Caps (`BodyLimits`): `max_wire_bytes` counts bytes as received (a Content-Length above it
is refused before a byte is read); `max_body_bytes` counts bytes after gzip/deflate, and
decompression is incremental with a bounded output per step, so a 1 KiB gzip bomb costs at
most `max_body_bytes` of memory and the time to inflate that much, never more. ModelServer
inflates `Content-Encoding: gzip` itself (up to 100 MB); tfgate inflates here and forwards
the canonical body uncompressed.

JSON (`parse_json`), where ModelServer's rapidjson and Python's json would disagree, tfgate
refuses (docs/wire-facts.md, "REST API"):
- invalid UTF-8, and escapes that decode to a lone surrogate (rapidjson refuses those too);
- a key twice in one object (rapidjson's lookup takes the first, Python's dict the last);
- a number that overflows a double (rapidjson: "Number too big", Python: inf);
- anything after the first value (rapidjson ignores it, Python refuses it);
- nesting, strings and numbers past `JsonBounds` (jsonbounds.py, before the parse).
`NaN`, `Infinity` and `-Infinity` are accepted, as ModelServer accepts them.

Parser choice (bench/rest_json.py): stdlib json with object_pairs_hook costs about as much
as without it, and the same as python-rapidjson with a pairs hook; orjson is 3x faster raw
but refuses NaN/Infinity and keeps the last duplicate, and a key-counting pre-scan makes it
slower than stdlib. So: stdlib, no new dependency.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

from proxy.errors import Reason, malformed
from proxy.rest import jsonbounds
from proxy.rest.errors import RestReject, too_large
from proxy.rest.jsonbounds import JsonBounds

MiB = 1 << 20
_DEFAULT_BOUNDS = JsonBounds()
_STEP = 1 * MiB  # most output one inflate step may produce
# Only a body with a 3-digit exponent or a run of 309+ digits can hold a float literal
# that overflows a double; only such bodies pay for the checking float parser. (Both tests
# run at C speed: a regex that looks for the digit run directly costs 40 ms per MiB.)
_EXPONENT = re.compile(r"[eE][+-]?[0-9]{3}")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 309


def _may_overflow(data: bytes, text: str) -> bool:
    if _EXPONENT.search(text):
        return True
    return len(data) >= len(_LONG_RUN) and _LONG_RUN in data.translate(_DIGITS_AS_ZERO)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Caps on one request body. The JSON a body parses to costs Python about 4-5 times
    its size in memory (bench/rest_json.py), so `max_body_bytes` bounds that too."""

    max_wire_bytes: int = 16 * MiB
    max_body_bytes: int = 16 * MiB


def encoding_of(values: list[str]) -> str:
    """The one Content-Encoding tfgate inflates: '' (none), 'gzip' or 'deflate'; 415 else."""
    if not values:
        return ""
    if len(values) == 1:
        value = values[0].strip().lower()
        if value in ("", "identity"):
            return ""
        if value in ("gzip", "x-gzip"):
            return "gzip"
        if value == "deflate":
            return "deflate"
    raise RestReject(415, Reason.MALFORMED_REQUEST,
                     "Content-Encoding must be one of identity, gzip, deflate")


class BodyReader:
    """Feed it the body as it arrives; `finish()` returns the (inflated) bytes or raises."""

    def __init__(self, encoding: str, content_length: int | None, limits: BodyLimits) -> None:
        if content_length is not None and content_length > limits.max_wire_bytes:
            raise too_large(f"body of {content_length} bytes > max {limits.max_wire_bytes} "
                            "(max_wire_bytes)")
        self._limits = limits
        self._wire = 0
        self._out = bytearray()
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
        self._inflate = zlib.decompressobj(wbits) if wbits else None

    def feed(self, chunk: bytes) -> None:
        self._wire += len(chunk)
        if self._wire > self._limits.max_wire_bytes:
            raise too_large(f"body > max {self._limits.max_wire_bytes} bytes (max_wire_bytes)")
        if self._inflate is None:
            self._append(chunk)
            return
        if self._inflate.eof:
            if chunk:
                raise malformed("body continues after the end of its compressed stream")
            return
        data = chunk
        while data and not self._inflate.eof:
            room = self._limits.max_body_bytes - len(self._out) + 1
            try:
                out = self._inflate.decompress(data, min(room, _STEP))
            except zlib.error:
                raise malformed("body is not valid compressed data") from None
            self._append(out)
            data = self._inflate.unconsumed_tail
        if self._inflate.unused_data:
            raise malformed("body continues after the end of its compressed stream")

    def _append(self, data: bytes) -> None:
        if len(self._out) + len(data) > self._limits.max_body_bytes:
            raise too_large(f"body > max {self._limits.max_body_bytes} bytes decoded "
                            "(max_body_bytes)")
        self._out += data

    def finish(self) -> bytes:
        if self._inflate is not None and not self._inflate.eof:
            raise malformed("compressed body ends early")
        return bytes(self._out)


class _Duplicate(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: an object, or `ValueError` for a key given twice (readers
    differ on which copy wins; the REST answers' filter, visible.py, refuses them too)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Duplicate(dup)
    return obj


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise OverflowError(text)
    return value


def parse_json(data: bytes, bounds: JsonBounds = _DEFAULT_BOUNDS, *,
               interruptible: bool = False) -> dict[str, Any]:
    """The body as a JSON object, or a Reject (INVALID_ARGUMENT) saying why not.

    `interruptible` (for a body parsed off the event loop): every number goes through a
    Python hook, so the parsing thread hands the GIL back to the loop every switch
    interval instead of holding it for the whole array scan (an 4 MiB array of floats is
    one C call of ~160 ms); it costs about 1.8 times the parse (bench/rest_parse.py)."""
    if not data:
        raise malformed("JSON Parse error: The document is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"body is not valid UTF-8 (at byte {exc.start})") from None
    hooks: dict[str, Any] = {"object_pairs_hook": unique_keys}
    if jsonbounds.check(data, bounds) or interruptible:
        hooks.update(jsonbounds.number_hooks(bounds, _finite))
    elif _may_overflow(data, text):
        hooks["parse_float"] = _finite
    try:
        doc = json.loads(text, **hooks)
    except _Duplicate as dup:
        raise malformed(f"JSON object has the key {_short(str(dup))} more than once") from None
    except OverflowError as big:
        raise malformed(f"JSON number {_short(str(big))} is too big for a double") from None
    except RecursionError:
        raise malformed("JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints over Python's 4300-digit limit
        raise malformed(f"JSON Parse error: {_short(str(exc), 160)}") from None
    if not isinstance(doc, dict):
        raise malformed("JSON Value: the body is not a JSON object")
    return doc


def _short(text: str, limit: int = 64) -> str:
    return json.dumps(text[:limit] + ("..." if len(text) > limit else ""), ensure_ascii=True)
