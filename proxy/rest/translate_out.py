"""Translated mode, responses: a gRPC upstream's answer -> ModelServer's REST JSON.

- Predict (MakeJsonFromTensors): row requests get `{"predictions": [...]}`, one item per
  batch row (every output needs a batch dimension, all the same size; with several outputs
  each item is an object by alias); columnar requests get `{"outputs": ...}`, the tensor
  itself or an object by alias. DT_STRING outputs whose alias ends in `_bytes` are written as
  `{"b64": ...}`; other strings as text (bytes that are not UTF-8 are replaced, where
  ModelServer would write invalid JSON).
- Classify: `{"results": [[[label, score], ...], ...]}`; Regress: `{"results": [v, ...]}`
  (the key is "results" in json_tensor.cc, whatever g3doc/api_rest.md says).
- Numbers as ModelServer's WriteDecimal writes them: six significant digits when that reads
  back as the same float32/double, else 9/17 digits, ".0" added to whole numbers, NaN and
  (-)Infinity as tokens. Only the whitespace differs from ModelServer's pretty printer.
- GetModelStatus and GetModelMetadata: protobuf JSON as ModelServer prints it (status with
  its json_names, metadata with proto field names and the SignatureDefMap unpacked).
"""

from __future__ import annotations

import array
import base64
import json
import math
import struct
import sys
from typing import Any

from google.protobuf import json_format

from proxy.dtypes import name_of
from proxy.errors import malformed
from proxy.pb import serving_responses_pb2 as pb
from proxy.pb.tensor_pb2 import TensorProto

_ARRAY = {1: "f", 2: "d", 3: "i", 5: "h", 6: "b", 4: "B", 9: "q", 22: "I", 23: "Q", 10: "B"}
_FIELD = {1: "float_val", 2: "double_val", 3: "int_val", 5: "int_val", 6: "int_val",
          4: "int_val", 9: "int64_val", 22: "uint32_val", 23: "uint64_val", 10: "bool_val",
          7: "string_val"}
_F32 = struct.Struct("f")
# A response's short value list is repeated to fill its shape; the upstream is trusted,
# but a few bytes must not become gigabytes of JSON in tfgate.
MAX_FILLED_ELEMENTS = 1 << 24


def decimal(value: float, single: bool) -> str:
    """WriteDecimal: the shortest of %g (6 digits) that reads back exactly, else 9 / 17."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text)
    try:
        same = (_F32.unpack(_F32.pack(back))[0] if single else back) == value
    except OverflowError:
        same = False
    if not same:
        text = ("%.9g" if single else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def tensor_values(name: str, t: TensorProto) -> list[str]:
    """Every element as JSON text, row-major, with TF's fill rule for short value lists."""
    count = math.prod(d.size for d in t.tensor_shape.dim)
    field = _FIELD.get(t.dtype)
    if field is None:
        raise malformed(f"Failed to write JSON value for tensor type: {name_of(t.dtype)}")
    values: list[Any]
    if t.tensor_content:
        if t.dtype == 7:
            raise malformed(f"output {name}: DT_STRING tensor_content is not supported")
        packed = array.array(_ARRAY[t.dtype])
        packed.frombytes(t.tensor_content)
        if sys.byteorder == "big":
            packed.byteswap()
        values = packed.tolist()
    else:
        values = list(getattr(t, field))
    if len(values) > count:
        raise malformed(f"output {name}: {len(values)} values for {count} elements")
    if count - len(values) > MAX_FILLED_ELEMENTS:
        raise malformed(f"output {name}: {len(values)} values fill {count} elements "
                        f"(> {MAX_FILLED_ELEMENTS} repeated: not written as JSON)")
    if len(values) < count:
        fill = values[-1] if values else (b"" if t.dtype == 7 else 0)
        values += [fill] * (count - len(values))
    return _texts(name, t.dtype, values)


def _texts(name: str, dtype: int, values: list) -> list[str]:
    if dtype in (1, 2):
        single = dtype == 1
        return [decimal(v, single) for v in values]
    if dtype == 10:
        return ["true" if v else "false" for v in values]
    if dtype == 7:
        if name.endswith("_bytes"):
            return ['{{"b64":"{}"}}'.format(base64.b64encode(v).decode("ascii")) for v in values]
        return [json.dumps(v.decode("utf-8", "replace"), ensure_ascii=False) for v in values]
    return list(map(str, values))


def _rows(texts: list[str], shape: tuple[int, ...]) -> list[str]:
    """Leaf texts of `shape` -> one JSON text per element of axis 0."""
    level = texts
    for k in range(len(shape) - 1, 0, -1):
        size = shape[k]
        if size == 0:
            level = ["[]"] * math.prod(shape[:k])
        else:
            level = ["[" + ",".join(level[i:i + size]) + "]"
                     for i in range(0, len(level), size)]
    return level


def _whole(texts: list[str], shape: tuple[int, ...]) -> str:
    return texts[0] if not shape else "[" + ",".join(_rows(texts, shape)) + "]"


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def predict_json(data: bytes, row: bool) -> bytes:
    outputs = pb.PredictResponse.FromString(data).outputs
    if not outputs:
        raise malformed("Cannot convert empty tensor map to JSON")
    tensors = {name: (tuple(d.size for d in t.tensor_shape.dim), tensor_values(name, t))
               for name, t in sorted(outputs.items())}
    if not row:
        if len(tensors) == 1:
            (shape, texts), = tensors.values()
            body = _whole(texts, shape)
        else:
            body = "{" + ",".join(f"{_key(n)}:{_whole(t, s)}" for n, (s, t) in tensors.items()) + "}"
        return ('{"outputs":' + body + "}").encode("utf-8")
    batch = None
    items: dict[str, list[str]] = {}
    for name, (shape, texts) in tensors.items():
        if not shape:
            raise malformed(f"Tensor name: {name} has no shape information ")
        if batch is not None and shape[0] != batch:
            raise malformed(f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                            f"expecting: {batch}")
        batch = shape[0]
        items[name] = _rows(texts, shape)
    if len(items) == 1:
        rows = next(iter(items.values()))
    else:
        rows = ["{" + ",".join(f"{_key(n)}:{v[i]}" for n, v in items.items()) + "}"
                for i in range(batch or 0)]
    return ('{"predictions":[' + ",".join(rows) + "]}").encode("utf-8")


def classify_json(data: bytes) -> bytes:
    result = pb.ClassificationResponse.FromString(data).result
    if not result.classifications:
        raise malformed("Cannot convert empty ClassificationResults to JSON")
    rows = ["[" + ",".join(f"[{_key(c.label)},{decimal(c.score, True)}]" for c in row.classes)
            + "]" for row in result.classifications]
    return ('{"results":[' + ",".join(rows) + "]}").encode("utf-8")


def regress_json(data: bytes) -> bytes:
    result = pb.RegressionResponse.FromString(data).result
    if not result.regressions:
        raise malformed("Cannot convert empty RegressionResults to JSON")
    values = ",".join(decimal(r.value, True) for r in result.regressions)
    return ('{"results":[' + values + "]}").encode("utf-8")


def status_json(data: bytes) -> bytes:
    response = pb.GetModelStatusResponse.FromString(data)
    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True,
                                     indent=1).encode("utf-8")


def metadata_json(data: bytes) -> bytes:
    response = pb.GetModelMetadataResponse.FromString(data)
    packed = response.metadata.get("signature_def")
    if packed is None or not packed.type_url.endswith("/tensorflow.serving.SignatureDefMap"):
        raise malformed("Failed to find 'signature_def' key in the GetModelMetadataResponse "
                        "metadata map.")
    defs = pb.SignatureDefMap.FromString(packed.value)
    options = {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True}
    spec = json_format.MessageToDict(response.model_spec, **options)
    sigs = json_format.MessageToDict(defs, **options)
    doc = {"model_spec": spec, "metadata": {"signature_def": sigs}}
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")
