"""JSON classify/regress bodies -> the tf.Example `Input` ModelServer would build, and Facts.

`{"signature_name"?, "context"?: {feature: value | [values]}, "examples": [{...}, ...]}`
becomes an ExampleListWithContext when "context" is present, else an ExampleList
(json_tensor.cc). Each feature's values pick its list: JSON booleans and integers (within
int64) -> int64_list (true is 1), non-integral numbers -> float_list (rounded to float32),
strings and `{"b64": ...}` -> bytes_list; one feature must not mix lists, and null, nested
lists, other objects and integers in (2^63, 2^64) are refused, all as ModelServer refuses them.
`[]` is a feature with no list set. The Input is built with tfgate's own protobuf classes,
so `proxy.inspect.examples.inspect_input` computes exactly the `ExampleFacts` the gRPC front
would for the same Input, and `translate.py` sends this very Input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.call import Facts, ModelTarget
from proxy.errors import Reason, Reject, malformed
from proxy.inspect.examples import MAX_EXAMPLES, inspect_input
from proxy.pb.example_pb2 import Example, Feature, Input
from proxy.rest import jsonvalues as jv
from proxy.rest.facts import signature_of

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ExamplesBody:
    signature: str
    context: dict[str, Any] | None
    examples: list[Any]
    input: Input  # what ModelServer builds from the JSON


def examples_body(doc: dict[str, Any]) -> ExamplesBody:
    signature = signature_of(doc)
    context = doc.get("context")
    has_context = "context" in doc
    examples = doc.get("examples")
    if examples is None and "examples" not in doc:
        raise malformed("When method is classify, key 'examples' is expected and was not found")
    if type(examples) is not list:
        raise malformed("Expecting 'examples' value to be an list/array")
    if not examples:
        raise malformed("'examples' value is an empty array")
    if len(examples) > MAX_EXAMPLES:
        raise Reject(Reason.LIMIT_EXCEEDED,
                     f"input: {len(examples)} examples > max {MAX_EXAMPLES} (hard limit)")
    value = Input()
    if has_context:
        target = value.example_list_with_context
        _fill(target.context, context, "context")
    else:
        target = value.example_list
    for i, item in enumerate(examples):
        _fill(target.examples.add(), item, f"examples[{i}]")
    return ExamplesBody(signature, context if has_context else None, examples, value)


def examples_facts(target: ModelTarget, body: ExamplesBody) -> Facts:
    judged = ModelTarget(target.name, target.version, target.label, body.signature)
    # The Input tfgate builds is what it forwards (canonical), so its wire and parsed
    # readings agree; inspect_input takes it as the `input` field of a request.
    wire = _INPUT_FIELD + _varint(body.input.ByteSize()) + body.input.SerializeToString()
    return Facts(targets=(judged,), examples=inspect_input(body.input, wire))


_INPUT_FIELD = b"\x12"  # field 2 (input), wire type 2, in Classify/Regress/MultiInference


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fill(example: Example, obj: Any, where: str) -> None:
    if type(obj) is not dict:
        raise malformed(f"{where}: Example must be JSON object but got JSON "
                        f"{_json_kind(obj)}")
    features = example.features.feature
    for name, content in obj.items():
        jv.check_name(name, f"{where}: feature name")
        _feature(features[name], name, content if type(content) is list else [content])


def _feature(feature: Feature, name: str, values: list[Any]) -> None:
    if not values:
        return
    types = set(map(type, values))
    if types == {float}:
        feature.float_list.value.extend(values)
    elif types <= {int, bool} and max(values) <= INT64_MAX and min(values) >= jv.INT64_MIN:
        feature.int64_list.value.extend(map(int, values) if bool in types else values)
    elif types == {str}:
        feature.bytes_list.value.extend(_utf8(v, name) for v in values)
    else:
        _mixed(feature, name, values)


def _mixed(feature: Feature, name: str, values: list[Any]) -> None:
    """One value at a time, as ModelServer's AddValueToFeature does."""
    kind = None
    for value in values:
        own, item = _classify(value, name)
        if kind is not None and own != kind:
            raise malformed(f"Unexpected element type in feature: {name} expecting type: "
                            f"{kind}")
        kind = own
        getattr(feature, f"{own}_list").value.append(item)


def _classify(value: Any, name: str) -> tuple[str, Any]:
    t = type(value)
    if t is bool:
        return "int64", int(value)
    if t is int:
        if jv.INT64_MIN <= value <= INT64_MAX:
            return "int64", value
        if value <= jv.UINT64_MAX and value > 0:
            raise malformed(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        return "float", jv.fix_integers([value])[0]
    if t is float:
        return "float", value
    if t is str:
        return "bytes", _utf8(value, name)
    if jv.is_b64(value):
        return "bytes", jv.b64_decode(value, f"feature {name}")
    raise malformed(f"Feature: {name} has element with unexpected JSON type: "
                    f"{_json_kind(value)}")


def _utf8(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise malformed(f"feature {name}: string holds a lone surrogate (not UTF-8)") from None


def _json_kind(value: Any) -> str:
    return {dict: "Object", list: "Array", str: "String", bool: "True/False",
            type(None): "Null"}.get(type(value), "Number")
