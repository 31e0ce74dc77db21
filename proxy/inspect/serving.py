"""Parsers for TF Serving requests: which model, version and signature each addresses."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import message as _message
from google.protobuf.descriptor import Descriptor

from proxy.call import DEFAULT_SIGNATURE, Facts, ModelTarget
from proxy.errors import malformed
from proxy.inspect import examples, tensors
from proxy.inspect.wire import check_field_count, reject_unknown_fields
from proxy.pb import serving_pb2

# Model, label and signature names are short in every real deployment; the cap keeps
# caller-chosen names out of memos, messages and audit lines at any length.
MAX_NAME_CHARS = 1024
# Tasks must name distinct signatures of one model, so real requests hold a handful;
# the cap bounds the per-task checks an attacker can ask for.
MAX_TASKS = 64


# A message class's parse function, descriptor and name, looked up once: each is an
# attribute of upb's message metaclass, whose lookup searches the descriptor first.
_PARSERS: dict[type[_message.Message], tuple[Callable[[bytes], _message.Message], Descriptor, str]] = {}


def _parse(cls: type[_message.Message], data: bytes) -> _message.Message:
    found = _PARSERS.get(cls)
    if found is None:
        found = _PARSERS[cls] = cls.FromString, cls.DESCRIPTOR, cls.__name__
    from_string, descriptor, name = found
    check_field_count(data, descriptor)
    try:
        msg = from_string(data)
    except _message.DecodeError:
        raise malformed(f"request is not a valid {name}") from None
    reject_unknown_fields(msg, name)
    return msg


def _target(spec: serving_pb2.ModelSpec, where: str, *, signature: bool) -> ModelTarget:
    reject_unknown_fields(spec, where)
    # Each field read once: every attribute access on a message is a lookup by name.
    name, label_text, signature_name = spec.name, spec.version_label, spec.signature_name
    if not name:
        raise malformed(f"{where}.name is empty")
    for key, text in (("name", name), ("version_label", label_text),
                      ("signature_name", signature_name)):
        if len(text) > MAX_NAME_CHARS:
            raise malformed(f"{where}.{key} is longer than {MAX_NAME_CHARS} characters")
    choice = spec.WhichOneof("version_choice")
    version = label = None
    if choice == "version":
        wrapper = spec.version
        reject_unknown_fields(wrapper, lambda: f"{where}.version")
        version = wrapper.value
    elif choice == "version_label":
        label = label_text
    return ModelTarget(name, version, label,
                       (signature_name or DEFAULT_SIGNATURE) if signature else None)


def _spec_target(msg: _message.Message, *, signature: bool) -> ModelTarget:
    if not msg.HasField("model_spec"):
        raise malformed("missing model_spec")
    return _target(msg.model_spec, "model_spec", signature=signature)


def predict(data: bytes) -> Facts:
    msg = _parse(serving_pb2.PredictRequest, data)
    target = _spec_target(msg, signature=True)
    return Facts(targets=(target,), tensors=tensors.inspect_inputs(msg.inputs))


def classify(data: bytes) -> Facts:
    msg = _parse(serving_pb2.ClassificationRequest, data)
    return Facts(targets=(_spec_target(msg, signature=True),),
                 examples=examples.inspect_input(msg.input if msg.HasField("input") else None, data))


def regress(data: bytes) -> Facts:
    msg = _parse(serving_pb2.RegressionRequest, data)
    return Facts(targets=(_spec_target(msg, signature=True),),
                 examples=examples.inspect_input(msg.input if msg.HasField("input") else None, data))


def multi_inference(data: bytes) -> Facts:
    """Every task is a target. The server takes the servable (name and version) from
    task 0 and ignores the others' versions, so all tasks must agree on both."""
    msg = _parse(serving_pb2.MultiInferenceRequest, data)
    if not msg.tasks:
        raise malformed("MultiInferenceRequest has no tasks")
    if len(msg.tasks) > MAX_TASKS:
        raise malformed(f"MultiInferenceRequest has {len(msg.tasks)} tasks > max {MAX_TASKS}")
    targets = []
    for i, task in enumerate(msg.tasks):
        reject_unknown_fields(task, f"tasks[{i}]")
        if not task.HasField("model_spec"):
            raise malformed(f"tasks[{i}] has no model_spec")
        targets.append(_target(task.model_spec, f"tasks[{i}].model_spec", signature=True))
    first = targets[0]
    for i, t in enumerate(targets[1:], 1):
        if (t.name, t.version, t.label) != (first.name, first.version, first.label):
            raise malformed(f"tasks[{i}] addresses a different model or version than tasks[0]")
    signatures = [t.signature for t in targets]
    if len(set(signatures)) != len(signatures):
        raise malformed("MultiInference tasks repeat a signature")
    return Facts(targets=tuple(targets),
                 examples=examples.inspect_input(msg.input if msg.HasField("input") else None, data))


def metadata(data: bytes) -> Facts:
    # GetModelMetadata ignores signature_name and returns every signature.
    msg = _parse(serving_pb2.GetModelMetadataRequest, data)
    return Facts(targets=(_spec_target(msg, signature=False),))


def status(data: bytes) -> Facts:
    msg = _parse(serving_pb2.GetModelStatusRequest, data)
    return Facts(targets=(_spec_target(msg, signature=False),))


def reload(data: bytes) -> Facts:
    _parse(serving_pb2.ReloadConfigRequest, data)
    return Facts()


def health(data: bytes) -> Facts:
    _parse(serving_pb2.HealthCheckRequest, data)
    return Facts()
