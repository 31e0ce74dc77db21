"""ModelServer's REST API (usually port 8501) over the test models, for the REST front's tests.

A second, independent reading of ModelServer's REST handler (http_rest_api_handler.cc,
http_rest_api_util.cc, json_tensor.cc): it shares no code with `proxy/rest`, so a test that
compares tfgate's translation with this server's answer can fail. It follows the server,
including where tfgate refuses: a repeated key keeps its *first* value, bytes after the
first JSON value are ignored, NaN/Infinity are numbers, `Content-Encoding: gzip` is
inflated, and the model name and label are percent-decoded after matching. JSON tensors are
made with numpy and `tf.make_tensor_proto` from the signature's dtypes, then the same
`PredictionService` / `ModelService` as the gRPC port answer them.

Every request is recorded (as in server.py, flushed before it is handled) with method
`"REST <METHOD> <target>"`, the body as received and the headers as metadata, so tests can
prove that a refused request never arrived. This module imports TensorFlow.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2, predict_pb2

from .services import ServingError

_C = grpc.StatusCode
_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_POST = re.compile(r"/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)", re.I | re.A)
_GET = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?", re.I | re.A)
_HTTP = {_C.INVALID_ARGUMENT: 400, _C.FAILED_PRECONDITION: 400, _C.OUT_OF_RANGE: 400,
         _C.NOT_FOUND: 404, _C.PERMISSION_DENIED: 403, _C.UNAUTHENTICATED: 401,
         _C.RESOURCE_EXHAUSTED: 429, _C.UNIMPLEMENTED: 501, _C.UNAVAILABLE: 503,
         _C.DEADLINE_EXCEEDED: 504, _C.ALREADY_EXISTS: 409, _C.ABORTED: 409,
         _C.CANCELLED: 499}
_INT_KINDS = {tf.int32, tf.int16, tf.int8, tf.uint8, tf.int64, tf.uint32, tf.uint64}


def _bad(message: str) -> ServingError:
    return ServingError(_C.INVALID_ARGUMENT, message)


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def parse_body(body: bytes) -> dict[str, Any]:
    """rapidjson as ModelServer runs it: first duplicate wins, trailing bytes ignored."""
    if not body:
        raise _bad("JSON Parse error: The document is empty")
    try:
        doc, _ = json.JSONDecoder(object_pairs_hook=_first_wins).raw_decode(
            body.decode("utf-8", "surrogateescape").lstrip())
    except ValueError as exc:
        raise _bad(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("JSON Value: Is not object")
    return doc


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _unb64(value: dict) -> bytes:
    try:
        text = re.sub(r"\s", "", value["b64"]).rstrip("=.")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise _bad("Unable to base64 decode") from None


def _array(value: Any, dtype: tf.DType) -> np.ndarray:
    """One input's JSON -> ndarray of the signature's dtype, refusing what json_tensor does."""
    def leaf(x: Any) -> Any:
        if isinstance(x, list):
            return [leaf(y) for y in x]
        if dtype == tf.string:
            if _is_b64(x):
                return _unb64(x)
            if isinstance(x, str):
                return x.encode("utf-8", "surrogateescape")
        elif dtype == tf.bool:
            if isinstance(x, bool):
                return x
        elif isinstance(x, (int, float)) and not isinstance(x, bool):  # noqa: SIM102 - mirrors the server's own checks
            if dtype not in _INT_KINDS or (isinstance(x, int) and dtype.min <= x <= dtype.max)\
                    or (isinstance(x, int) and dtype in (tf.int8, tf.int16, tf.uint8)):
                return x
        raise _bad(f"JSON Value: {json.dumps(x)[:64]} is not of expected type: {dtype.name}")
    data = leaf(value)
    try:
        array = np.array(data, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
    except (ValueError, OverflowError) as exc:
        raise _bad(f"Encountered list at unexpected size: {exc}") from None
    if array.dtype == object and dtype != tf.string:
        raise _bad("Encountered list at unexpected size")
    return array


def _proto(array: np.ndarray, dtype: tf.DType) -> Any:
    return tf.make_tensor_proto(array, dtype=dtype, shape=array.shape)


def predict_request(doc: dict[str, Any], infos: Any) -> tuple[predict_pb2.PredictRequest, bool]:
    request = predict_pb2.PredictRequest()
    dtypes = {name: tf.dtypes.as_dtype(info.dtype) for name, info in infos.items()}
    if "instances" in doc and "inputs" in doc:
        raise _bad("Not formatted correctly expecting only one of 'inputs' or 'instances'")
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows:
            raise _bad("Expecting 'instances' to be a non-empty list/array")
        if isinstance(rows[0], dict) and not _is_b64(rows[0]):
            for row in rows:
                if not isinstance(row, dict) or set(row) != set(dtypes):
                    raise _bad("instances keys must be equal to: " + ",".join(sorted(dtypes)))
            columns = {name: [row[name] for row in rows] for name in dtypes}
        elif len(dtypes) != 1:
            raise _bad("instances is a plain list, but expecting list of objects")
        else:
            columns = {next(iter(dtypes)): rows}
        for name, value in columns.items():
            request.inputs[name].CopyFrom(_proto(_array(value, dtypes[name]), dtypes[name]))
        return request, True
    if "inputs" not in doc:
        raise _bad("Missing 'inputs' or 'instances' key")
    inputs = doc["inputs"]
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(dtypes) != 1:
            raise _bad("inputs is a plain value/list, but expecting an object")
        inputs = {next(iter(dtypes)): inputs}
    for name, dtype in dtypes.items():
        if name not in inputs:
            raise _bad(f"Missing named input: {name} in 'inputs' object.")
        request.inputs[name].CopyFrom(_proto(_array(inputs[name], dtype), dtype))
    return request, False


def _feature(values: list[Any], name: str) -> feature_pb2.Feature:
    feature = feature_pb2.Feature()
    for value in values:
        if isinstance(value, bool) or (isinstance(value, int) and -2**63 <= value < 2**63):
            kind, item = "int64_list", int(value)
        elif isinstance(value, int) and 0 < value < 2**64:
            raise _bad(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        elif isinstance(value, (int, float)):
            kind, item = "float_list", float(value)
        elif isinstance(value, str):
            kind, item = "bytes_list", value.encode("utf-8", "surrogateescape")
        elif _is_b64(value):
            kind, item = "bytes_list", _unb64(value)
        else:
            raise _bad(f"Feature: {name} has element with unexpected JSON type")
        if feature.WhichOneof("kind") not in (None, kind):
            raise _bad(f"Unexpected element type in feature: {name}")
        getattr(feature, kind).value.append(item)
    return feature


def _example(obj: Any) -> example_pb2.Example:
    if not isinstance(obj, dict):
        raise _bad("Example must be JSON object")
    example = example_pb2.Example()
    for name, content in obj.items():
        values = content if isinstance(content, list) else [content]
        example.features.feature[name].CopyFrom(_feature(values, name))
    return example


def examples_input(doc: dict[str, Any]) -> input_pb2.Input:
    value = input_pb2.Input()
    examples = doc.get("examples")
    if not isinstance(examples, list) or not examples:
        raise _bad("'examples' must be a non-empty list/array")
    if "context" in doc:
        target = value.example_list_with_context
        target.context.CopyFrom(_example(doc["context"]))
    else:
        target = value.example_list
    for item in examples:
        target.examples.add().CopyFrom(_example(item))
    return value
