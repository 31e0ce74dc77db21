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


def _dumps(doc: dict[str, Any]) -> bytes:
    text = json.dumps(doc, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the facts did not meet
        raise malformed("JSON string holds a lone surrogate (not UTF-8)") from None
