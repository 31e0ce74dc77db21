"""Translated mode, requests: a judged JSON body -> the gRPC request bytes ModelServer's REST
handler would build from it (json_tensor.cc), for a gRPC upstream.

Predict needs each input's dtype, which JSON lacks: ModelServer reads it from the signature
(GetInfoMap), and so does tfgate (`signatures.py`: GetModelMetadata, cached). The checks are
ModelServer's: a plain list or value needs a signature with exactly one input; instance
objects must have exactly the signature's inputs; a named `inputs` map must have every one
(keys it does not name are ignored, as ModelServer ignores them); and every leaf must fit
the dtype (AddValueToTensor): numbers for DT_FLOAT / DT_DOUBLE, integers in range for the
integer dtypes (int8/int16/uint8 take any int32, as ModelServer lets them), booleans for
DT_BOOL, strings or b64 for DT_STRING. Other dtypes cannot come from JSON (UNIMPLEMENTED).
Values go into the dtype's `*_val` field, never `tensor_content`, as ModelServer does.
Classify and Regress send the `Input` that `examples.py` built and the facts came from.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.call import ModelTarget
from proxy.dtypes import name_of
from proxy.errors import Reason, Reject, malformed
from proxy.pb import serving_pb2, tensor_pb2
from proxy.rest import jsonvalues as jv
from proxy.rest.examples import ExamplesBody
from proxy.rest.facts import JsonTensor, PredictBody, leaves_of

METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
INT32 = (-(2**31), 2**31 - 1)
UINT32 = (0, 2**32 - 1)
# dtype -> (field, the JSON leaves it takes, integer range or None)
_FILL: dict[int, tuple[str, str, tuple[int, int] | None]] = {
    1: ("float_val", "number", None), 2: ("double_val", "number", None),
    3: ("int_val", "integer", INT32), 5: ("int_val", "integer", INT32),
    6: ("int_val", "integer", INT32), 4: ("int_val", "integer", INT32),
    9: ("int64_val", "integer", (jv.INT64_MIN, 2**63 - 1)),
    22: ("uint32_val", "integer", UINT32), 23: ("uint64_val", "integer", (0, jv.UINT64_MAX)),
    10: ("bool_val", "bool", None), 7: ("string_val", "string", None),
}


def model_spec(spec: serving_pb2.ModelSpec, target: ModelTarget, signature: str | None) -> None:
    spec.name = target.name
    if target.version is not None:
        spec.version.value = target.version
    elif target.label is not None:
        spec.version_label = target.label
    if signature is not None:
        spec.signature_name = signature


def predict_request(target: ModelTarget, body: PredictBody, dtypes: Mapping[str, int]
                    ) -> bytes:
    """`dtypes`: the signature's inputs, alias -> DataType number."""
    if not dtypes:
        raise malformed(f"Failed to get input map for signature: {body.signature}")
    request = serving_pb2.PredictRequest()
    model_spec(request.model_spec, target, body.signature)
    if not body.named:
        if len(dtypes) > 1:
            form = "instances is a plain list" if body.row else "inputs is a plain value/list"
            raise malformed(f"{form}, but expecting {'list of objects' if body.row else 'an object'}"
                            " as multiple input tensors required as per tensorinfo_map")
        (name, dtype), = dtypes.items()
        _fill(request.inputs[name], body.tensors[0], dtype, name)
        return request.SerializeToString()
    given = {t.name: t for t in body.tensors}
    if body.row and set(given) != set(dtypes):
        raise malformed("instances[0] keys must be equal to: " + ",".join(sorted(dtypes)))
    for name, dtype in dtypes.items():
        if name not in given:
            raise malformed(f"Missing named input: {name} in 'inputs' object.")
        _fill(request.inputs[name], given[name], dtype, name)
    return request.SerializeToString()


def _fill(proto: tensor_pb2.TensorProto, tensor: JsonTensor, dtype: int, name: str) -> None:
    rule = _FILL.get(dtype)
    if rule is None:
        raise Reject(Reason.MALFORMED_REQUEST,
                     f"Conversion of JSON Value to type: {name_of(dtype)} (input {name})")
    field, takes, bounds = rule
    proto.dtype = dtype  # type: ignore[assignment]  # a DataType number
    for size in tensor.shape:
        proto.tensor_shape.dim.add().size = size
    leaves = leaves_of(tensor)
    if not leaves:
        return
    if not _fits(tensor.kind, takes, leaves, bounds):
        raise malformed(f"JSON Value of input {name} ({tensor.kind} values) is not of expected "
                        f"type: {name_of(dtype)}")
    if takes == "string":
        leaves = [jv.b64_decode(x, f"input {name}") if type(x) is dict else x.encode("utf-8")
                  for x in leaves]
    getattr(proto, field).extend(leaves)


def _fits(kind: str, takes: str, leaves: list, bounds: tuple[int, int] | None) -> bool:
    if takes == "number":
        return kind in ("integer", "float")
    if takes == "integer":
        return kind == "integer" and bounds is not None and (
            bounds[0] <= min(leaves) and max(leaves) <= bounds[1])
    return kind == takes


def examples_request(target: ModelTarget, body: ExamplesBody, classify: bool) -> bytes:
    cls = serving_pb2.ClassificationRequest if classify else serving_pb2.RegressionRequest
    request = cls()
    model_spec(request.model_spec, target, body.signature)
    request.input.CopyFrom(body.input)
    return request.SerializeToString()


def metadata_request(target: ModelTarget) -> bytes:
    request = serving_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    model_spec(request.model_spec, target, None)
    return request.SerializeToString()


def status_request(target: ModelTarget) -> bytes:
    request = serving_pb2.GetModelStatusRequest()
    model_spec(request.model_spec, target, None)
    return request.SerializeToString()
