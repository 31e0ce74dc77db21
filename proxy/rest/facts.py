"""JSON predict bodies -> `PredictBody` and the `Facts` that policy and limits judge.

ModelServer builds a TensorProto per input from JSON (json_tensor.cc), with the dtype of the
signature's TensorInfo; tfgate does not know the signature at this point, so the sizes are
an upper bound of what any signature could make of the same JSON (docs/wire-facts.md):

| JSON leaves        | dtype in Facts | bytes per element, counted                     |
|--------------------|----------------|------------------------------------------------|
| strings / b64      | DT_STRING      | 24 + UTF-8 (or decoded) length: exact          |
| true / false       | DT_BOOL        | 1: exact (only DT_BOOL takes JSON booleans)    |
| numbers, some non-integral | DT_DOUBLE | 8: widest of DT_FLOAT and DT_DOUBLE         |
| integers only      | DT_INT64       | 8: widest of every numeric dtype JSON can fill |
| none (empty)       | DT_DOUBLE      | 0 elements                                     |

JSON has no broadcast, so the element count is the true count. A tensor's shape is that
of its first element at every level (GetDenseTensorShape) and every list must match it:
ragged lists, a list where a value should be, or a value where a list should be are
refused, as ModelServer refuses them. Row format (`instances`): every instance has the same
structure (the same keys when they are objects, the same shape per key); the batched
tensor is [instances] + that shape. Columnar format (`inputs`): one unnamed value or a map
of named ones. Leaves of one tensor are all numbers, all booleans or all strings/b64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy.call import DEFAULT_SIGNATURE, Facts, ModelTarget, TensorFacts
from proxy.errors import malformed
from proxy.inspect.tensors import TSTRING_BYTES, label
from proxy.rest import jsonvalues as jv

MAX_RANK = 32  # deeper nesting is refused; limits.tensors.max_dims judges below this
DT_DOUBLE, DT_STRING, DT_INT64, DT_BOOL = 2, 7, 9, 10
ROW_NAME, COLUMN_NAME = "(instances)", "(inputs)"  # shown for the one unnamed input


@dataclass(frozen=True, slots=True)
class JsonTensor:
    """One input as JSON: `value` is the nested list (or leaf) of its full shape; for the
    row format that is the list over instances. `name` is None for the unnamed input."""

    name: str | None
    value: Any
    shape: tuple[int, ...]
    kind: str  # "string" | "bool" | "float" | "integer" | "empty"
    shown: str  # the name in messages and Facts: `name`, or ROW_NAME / COLUMN_NAME


@dataclass(frozen=True, slots=True)
class PredictBody:
    signature: str          # "" already resolved to serving_default
    row: bool               # instances (row) or inputs (columnar)
    named: bool             # objects of named inputs, or one unnamed input
    tensors: tuple[JsonTensor, ...]
    payload: Any            # the instances / inputs value as judged (canonical.py sends it)


def signature_of(doc: dict[str, Any]) -> str:
    value = doc.get("signature_name", "")
    if type(value) is not str:
        raise malformed("JSON Value: 'signature_name' key must be a string value.")
    return jv.check_name(value, "signature_name") or DEFAULT_SIGNATURE


def predict_body(doc: dict[str, Any]) -> PredictBody:
    signature = signature_of(doc)
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise malformed("Not formatted correctly expecting only one of 'inputs' or "
                        "'instances' keys to exist")
    if has_rows:
        return _rows(signature, doc["instances"])
    if has_columns:
        return _columns(signature, doc["inputs"])
    raise malformed("Missing 'inputs' or 'instances' key")


def predict_facts(target: ModelTarget, body: PredictBody) -> Facts:
    """`target` from the path; the signature from the body."""
    judged = ModelTarget(target.name, target.version, target.label, body.signature)
    return Facts(targets=(judged,), tensors=tuple(map(tensor_facts, body.tensors)))


def _is_instance_object(value: Any) -> bool:
    return type(value) is dict and not jv.is_b64(value)


def _rows(signature: str, instances: Any) -> PredictBody:
    if type(instances) is not list:
        raise malformed("Expecting 'instances' to be an list/array")
    if not instances:
        raise malformed("No values in 'instances' array")
    if not _is_instance_object(instances[0]):
        if any(map(_is_instance_object, instances)):
            raise malformed("instances mixes objects and values/lists")
        tensor = measure(None, instances, ROW_NAME)
        return PredictBody(signature, True, False, (tensor,), instances)
    keys = instances[0].keys()
    if not keys:
        raise malformed("instances[0] is an object with no inputs")
    for i, item in enumerate(instances):
        if not _is_instance_object(item):
            raise malformed(f"Expecting object but got list at item {i} of input list")
        if item.keys() != keys:
            raise malformed(f"instances[{i}] has other keys than instances[0]")
    tensors = tuple(measure(jv.check_name(name, "input name"),
                            [item[name] for item in instances], name) for name in keys)
    return PredictBody(signature, True, True, tensors, instances)


def _columns(signature: str, inputs: Any) -> PredictBody:
    if type(inputs) is not dict or jv.is_b64(inputs):
        return PredictBody(signature, False, False, (measure(None, inputs, COLUMN_NAME),),
                           inputs)
    if not inputs:
        raise malformed("'inputs' is an empty object")
    tensors = tuple(measure(jv.check_name(name, "input name"), value, name)
                    for name, value in inputs.items())
    return PredictBody(signature, False, True, tensors, inputs)


def measure(name: str | None, value: Any, shown: str) -> JsonTensor:
    """Shape and leaf kind of one tensor's JSON; refuses anything ModelServer refuses."""
    shape: list[int] = []
    probe = value
    while type(probe) is list:
        if len(shape) == MAX_RANK:
            raise malformed(f"{label(shown)}: nested deeper than {MAX_RANK} lists")
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    level = [value]
    for depth, size in enumerate(shape):
        below: list[Any] = []
        for item in level:
            if type(item) is not list:
                raise malformed(f"{label(shown)}: a value at level {depth} where a list of "
                                f"{size} was expected (ragged)")
            if len(item) != size:
                raise malformed(f"{label(shown)}: a list of {len(item)} at level {depth} "
                                f"where {size} was expected (ragged)")
            below.extend(item)
        level = below
    kind = _kind(level, shown)
    if kind == "integer" and (jv.out_of_int_range(min(level)) or
                              jv.out_of_int_range(max(level))):
        value = jv.fix_integers(value) if type(value) is list else jv.fix_integers([value])[0]
        kind = "float"
    return JsonTensor(name, value, tuple(shape), kind, shown)


def _kind(leaves: list[Any], shown: str) -> str:
    if not leaves:
        return "empty"
    types = set(map(type, leaves))
    if types <= {int, float}:
        return "integer" if float not in types else "float"
    if types == {bool}:
        return "bool"
    if types <= {str, dict}:
        if dict in types and not all(jv.is_b64(x) for x in leaves if type(x) is dict):
            raise malformed(f"{label(shown)}: an object that is not {{\"b64\": \"...\"}} "
                            "where a value was expected")
        return "string"
    if list in types:
        raise malformed(f"{label(shown)}: a list where a value was expected (ragged)")
    raise malformed(f"{label(shown)}: values must be all numbers, all booleans or all "
                    "strings (found " + ", ".join(sorted(_JSON_KIND[t] for t in types)) + ")")


_JSON_KIND = {int: "number", float: "number", bool: "boolean", str: "string",
              dict: "object", list: "list", type(None): "null"}


def leaves_of(tensor: JsonTensor) -> list[Any]:
    """The leaves in row-major order (what translate.py packs)."""
    level = [tensor.value]
    for _ in tensor.shape:
        below: list[Any] = []
        for item in level:
            below.extend(item)
        level = below
    return level


def tensor_facts(tensor: JsonTensor) -> TensorFacts:
    shown = tensor.shown
    elements = math.prod(tensor.shape)
    if tensor.kind == "string":
        lengths = _string_lengths(leaves_of(tensor), shown)
        total = sum(lengths)
        return TensorFacts(shown, DT_STRING, tensor.shape, elements,
                           TSTRING_BYTES * elements + total, max(lengths, default=0), total)
    dtype, itemsize = {"bool": (DT_BOOL, 1), "integer": (DT_INT64, 8)}.get(
        tensor.kind, (DT_DOUBLE, 8))
    return TensorFacts(shown, dtype, tensor.shape, elements, elements * itemsize)


def _string_lengths(leaves: Iterable[Any], shown: str) -> list[int]:
    where = label(shown)
    return [jv.utf8_length(x, where) if type(x) is str else jv.b64_length(x, where)
            for x in leaves]
