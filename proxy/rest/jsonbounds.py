"""Bounds on a JSON document, checked on its bytes before it becomes Python objects.

A request body under the size caps can still be shaped to cost more than its size:
thousands of nested arrays (Python's parser recurses once per level), one string of many
megabytes in a key the server ignores, or a number literal of thousands of digits (Python
converts integers in quadratic time). `check` refuses such bodies; every scan is a few
passes of C code over the bytes (about a millisecond per MiB), never a Python loop:

- escapes (`\\x`) are first overwritten with two inert bytes, so in a valid document every
  remaining `"` opens or closes a string (an invalid one is refused by the parser anyway);
- strings: one anchored regex with possessive repeats walks string after string and
  matches only where a string runs longer than the cap (no backtracking: linear);
- depth: everything but brackets outside strings is deleted and `[]` pairs are removed
  level by level, at most `max_depth` passes;
- numbers: a run longer than the cap of the characters a number is made of marks the body
  as suspect; only a suspect body is parsed with hooks that measure every number
  (`number_hooks`), so ordinary bodies keep the parser's C number conversion.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import Reject, malformed

MiB = 1 << 20
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_KEEP = b'"[]{}'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _KEEP)
_CURLY_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NUMBER_AS_ZERO = bytes.maketrans(b"123456789.eE+-", b"0" * 14)


@dataclass(frozen=True, slots=True)
class JsonBounds:
    max_depth: int = 48
    max_string_bytes: int = 4 * MiB
    max_number_chars: int = 400


@functools.lru_cache(maxsize=8)
def _long_string(limit: int) -> re.Pattern[bytes]:
    """Matches from the start when some string holds more than `limit` bytes."""
    return re.compile(rb'(?:[^"]*+"[^"]{0,%d}+")*+[^"]*+"[^"]{%d}' % (limit, limit + 1))


def check(data: bytes, bounds: JsonBounds) -> bool:
    """Refuse a body past a bound; True when its numbers must be measured as it parses."""
    plain = _ESCAPE.sub(b"__", data) if b"\\" in data else data
    if len(plain) > bounds.max_string_bytes and _long_string(bounds.max_string_bytes).match(plain):
        raise malformed(f"JSON string longer than {bounds.max_string_bytes} bytes "
                        "(rest.json_bounds.max_string_bytes)")
    _check_depth(plain, bounds.max_depth)
    run = b"0" * (bounds.max_number_chars + 1)
    return len(data) > len(run) and run in data.translate(_NUMBER_AS_ZERO)


def _check_depth(plain: bytes, max_depth: int) -> None:
    structure = plain.translate(None, _NOT_STRUCTURE)
    if b'"' in structure:  # strings: drop them, and any bracket inside one
        structure = structure.replace(b'""', b"")
        if b'"' in structure:
            structure = re.sub(rb'"[^"]*"', b"", structure)
    levels = structure.translate(_CURLY_AS_SQUARE)
    for _ in range(max_depth):
        if not levels:
            return
        inner = levels.replace(b"[]", b"")
        if len(inner) == len(levels):
            return  # unbalanced: the parser refuses it
        levels = inner
    if levels and b"[]" in levels:
        raise malformed(f"JSON nested deeper than {max_depth} levels "
                        "(rest.json_bounds.max_depth)")


def number_hooks(bounds: JsonBounds, finite: Callable[[str], float]) -> dict[str, Any]:
    """json.loads hooks that refuse a number literal longer than the bound."""
    limit = bounds.max_number_chars

    def too_long(text: str) -> Reject:
        return malformed(f"JSON number of {len(text)} characters > max {limit} "
                         "(rest.json_bounds.max_number_chars)")

    def parse_int(text: str) -> int:
        if len(text) > limit:
            raise too_long(text)
        return int(text)

    def parse_float(text: str) -> float:
        if len(text) > limit:
            raise too_long(text)
        return finite(text)

    return {"parse_int": parse_int, "parse_float": parse_float}
