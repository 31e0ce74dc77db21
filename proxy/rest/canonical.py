"""The exact bytes tfgate forwards to a REST upstream: re-serialized from what was judged.

Never the client's bytes: the body is rebuilt from the parsed values that `facts.py` /
`examples.py` measured, so nothing the proxy did not see can reach the server (a second
"signature_name", bytes after the first value, keys ModelServer ignores, odd base64).
- `signature_name` is always written, already resolved ("" -> "serving_default").
- Only the keys ModelServer reads are written: instances | inputs, or context? + examples.
- Numbers: ints as ints, floats as Python's shortest round-trip repr, NaN / Infinity /
  -Infinity as tokens rapidjson reads (kParseNanAndInfFlag); a float stays a float
  ("1.0"), so ModelServer picks the same float/int64 feature list the facts assumed.
- Strings as UTF-8, b64 in standard padded form (rewritten in place by jsonvalues.py).
- Compact separators: the server does not care, and it is the smallest body.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import malformed
from proxy.rest.examples import ExamplesBody
from proxy.rest.facts import PredictBody

CONTENT_TYPE = "application/json"


def predict_json(body: PredictBody) -> bytes:
    key = "instances" if body.row else "inputs"
    return _dumps({"signature_name": body.signature, key: body.payload})


def examples_json(body: ExamplesBody) -> bytes:
    doc: dict[str, Any] = {"signature_name": body.signature}
    if body.context is not None:
        doc["context"] = body.context
    doc["examples"] = body.examples
    return _dumps(doc)


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode
# Most leaves one C encoder call writes: json's encoder holds the GIL for a whole call (a
# 4 MiB tensor is ~470 ms of floats), so a big payload is written in pieces, between
# which a parse thread lets the event loop run (pool.py). 8192 floats take ~8 ms.
LEAVES_PER_CALL = 8192


def _dumps(doc: dict[str, Any]) -> bytes:
    pieces: list[str] = []
    _write(doc, pieces)
    try:
        return "".join(pieces).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the facts did not meet
        raise malformed("JSON string holds a lone surrogate (not UTF-8)") from None


def _leaves(value: Any) -> int:
    """About how many leaves `value` holds: its first element's count times its length
    (judged tensors are rectangular; anything else only makes pieces uneven)."""
    if type(value) is list:
        return len(value) * _leaves(value[0]) if value else 1
    if type(value) is dict:
        return sum(map(_leaves, value.values())) or 1
    return 1


def _write(value: Any, out: list[str]) -> None:
    size = _leaves(value)
    if size <= LEAVES_PER_CALL:
        out.append(_ENCODE(value))
    elif type(value) is dict:
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("," if i else "") + _ENCODE(key) + ":")
            _write(item, out)
        out.append("}")
    else:  # a list: slices of whole elements, or each element in pieces
        per = LEAVES_PER_CALL // (size // len(value))
        out.append("[")
        if per > 1:
            out.append(",".join(_ENCODE(value[i:i + per])[1:-1]
                                for i in range(0, len(value), per)))
        else:
            for i, item in enumerate(value):
                if i:
                    out.append(",")
                _write(item, out)
        out.append("]")
