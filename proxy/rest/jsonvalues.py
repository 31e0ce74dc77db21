"""Leaf values of REST JSON, read as ModelServer's json_tensor.cc reads them.

- Numbers: Python gives int or float. rapidjson keeps an integer literal an integer only
  within [-2^63, 2^64-1]; beyond, it is a double. `fix_integers` turns such ints into
  floats, so the canonical body and the translation see what ModelServer would.
- Strings count as their UTF-8 bytes; a string holding a lone surrogate (from a `\\ud800`
  escape) cannot be encoded and is refused, as rapidjson refuses it.
- `{"b64": "..."}` (exactly one key) is binary data. ModelServer decodes it with absl's
  Base64Unescape, which also skips ASCII whitespace and accepts missing padding; tfgate
  accepts the same, refuses what absl would refuse (and '.' padding, an absl oddity), and
  rewrites the text in standard padded form in place, so the server decodes the same bytes.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from proxy.errors import malformed

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
MAX_NAME_BYTES = 1024     # an input, feature or signature name
_SPACE = re.compile(r"[ \t\n\v\f\r]")


def is_b64(value: Any) -> bool:
    """ModelServer's IsValBase64Object: an object whose only key is "b64", a string."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64_length(obj: dict[str, str], where: str) -> int:
    """Decoded length of a b64 object; its text is rewritten in canonical form."""
    return len(b64_decode(obj, where))


def b64_decode(obj: dict[str, str], where: str) -> bytes:
    """The bytes of a b64 object; its text is rewritten in canonical form."""
    text = obj["b64"]
    clean = _SPACE.sub("", text)
    if len(clean) % 4:
        if "=" in clean or len(clean) % 4 == 1:
            raise malformed(f"{where}: Unable to base64 decode")
        clean += "=" * (-len(clean) % 4)
    try:
        data = binascii.a2b_base64(clean.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise malformed(f"{where}: Unable to base64 decode") from None
    if clean != text:
        obj["b64"] = clean
    return data


def utf8_length(text: str, where: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise malformed(f"{where}: string holds a lone surrogate (not UTF-8)") from None


def check_name(name: str, what: str) -> str:
    if utf8_length(name, what) > MAX_NAME_BYTES:
        raise malformed(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return name


def out_of_int_range(value: int) -> bool:
    return value < INT64_MIN or value > UINT64_MAX


def fix_integers(value: Any) -> Any:
    """`value` (a nested list or a leaf) with every out-of-range int made a float."""
    if type(value) is list:
        for i, item in enumerate(value):
            value[i] = fix_integers(item)
        return value
    if type(value) is int and out_of_int_range(value):
        try:
            return float(value)
        except OverflowError:
            raise malformed("JSON number is too big for a double") from None
    return value
