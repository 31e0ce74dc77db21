"""PredictionService and ModelService over the test models, answering like ModelServer.

Servable lookup, default signature, error codes and messages follow tensorflow/serving
(``predict_util.cc``, ``classifier.cc``, ``regressor.cc``, ``multi_inference.cc``,
``get_model_metadata_impl.cc``, ``get_model_status_impl.cc``); see
docs/wire-facts.md §1. Predict outputs are built with ``tf.make_tensor_proto``.
Errors are raised as ``ServingError`` and turned into a status by the wrapper in ``server.py``.

This module imports TensorFlow: only the backend subprocess may import it.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from .models import CLASSIFY, REGRESS, Model, Servable

DEFAULT_SIGNATURE = "serving_default"
_Code = grpc.StatusCode


class ServingError(Exception):
    """A ModelServer-style failure: status code plus details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _invalid(details: str) -> ServingError:
    return ServingError(_Code.INVALID_ARGUMENT, details)


class Registry:
    """Model lookup by ModelSpec (name + version / label / latest)."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models

    def servable(self, spec: model_pb2.ModelSpec) -> Servable:
        model = self.models.get(spec.name)
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            if model is None or spec.version_label not in model.labels:
                raise ServingError(
                    _Code.NOT_FOUND, f"Unrecognized servable version label: {spec.version_label}"
                )
            version = model.labels[spec.version_label]
        elif choice == "version":
            version = spec.version.value
        else:
            if model is None:
                raise ServingError(
                    _Code.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
                )
            return model.latest
        if model is None or version not in model.versions:
            raise ServingError(
                _Code.NOT_FOUND, f"Servable not found for request: Specific({spec.name}, {version})"
            )
        return model.versions[version]


def _signature(servable: Servable, spec: model_pb2.ModelSpec) -> tuple[str, Any, Any]:
    """Resolve the signature name (empty means serving_default): (name, function, SignatureDef)."""
    name = spec.signature_name or DEFAULT_SIGNATURE
    if name not in servable.functions:
        raise _invalid(f'Serving signature name: "{name}" not found in signature def')
    return name, servable.functions[name], servable.signature_defs.signature_def[name]


def _fill_spec(out: model_pb2.ModelSpec, servable: Servable, signature: str | None) -> None:
    out.name = servable.name
    out.version.value = servable.version
    if signature is not None:
        out.signature_name = signature


def _call(function: Any, **inputs: Any) -> dict[str, np.ndarray]:
    try:
        outputs = function(**inputs)
    except (TypeError, ValueError, tf.errors.OpError) as exc:
        raise _invalid(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return {key: value.numpy() for key, value in outputs.items()}


def serialized_examples(request_input: Any) -> list[bytes]:
    """Input -> one serialized tf.Example per element, as ModelServer builds its string tensor.

    With ``example_list_with_context`` the serialized context is prepended to every example, so
    the example's own features win where both set the same key (protobuf merge semantics).
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = request_input.example_list_with_context.context.SerializeToString()
        examples = [
            ctx + e.SerializeToString() for e in request_input.example_list_with_context.examples
        ]
    else:
        examples = []
    if not examples:
        raise _invalid("Input is empty.")
    return examples


def _check_method(sigdef: Any, expected: str, kind: str) -> None:
    if sigdef.method_name != expected:
        raise _invalid(
            f"Expected {kind} signature method_name to be {expected}. Was: {sigdef.method_name}"
        )


def _classify(function: Any, examples: list[bytes]) -> classification_pb2.ClassificationResult:
    out = _call(function, inputs=tf.constant(examples, dtype=tf.string))
    scores, classes = out.get("scores"), out.get("classes")
    rows = len(scores if scores is not None else classes)
    result = classification_pb2.ClassificationResult()
    for i in range(rows):
        row = result.classifications.add()
        for j in range(len(scores[i] if scores is not None else classes[i])):
            entry = row.classes.add()
            if classes is not None:
                entry.label = classes[i][j].decode()
            if scores is not None:
                entry.score = float(scores[i][j])
    return result


def _regress(function: Any, examples: list[bytes]) -> regression_pb2.RegressionResult:
    out = _call(function, inputs=tf.constant(examples, dtype=tf.string))
    result = regression_pb2.RegressionResult()
    for value in np.asarray(out["outputs"]).reshape(len(examples), -1)[:, 0]:
        result.regressions.add().value = float(value)
    return result


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over the test models."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def Predict(self, request: Any, context: Any) -> predict_pb2.PredictResponse:
        servable = self.registry.servable(request.model_spec)
        name, function, sigdef = _signature(servable, request.model_spec)
        sent, wanted = set(request.inputs), set(sigdef.inputs)
        if sent != wanted:
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"Sent extra: {sorted(sent - wanted)}. Missing but required: {sorted(wanted - sent)}."
            )
        inputs = {}
        for alias, proto in request.inputs.items():
            if proto.dtype != sigdef.inputs[alias].dtype:
                expected = tf.dtypes.as_dtype(sigdef.inputs[alias].dtype).name
                got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
                raise _invalid(f"Expected input {alias} to be {expected} but received {got}")
            try:
                inputs[alias] = tf.constant(tf.make_ndarray(proto))
            except Exception as exc:  # malformed TensorProto
                raise _invalid(f"tensor parsing error: {alias}") from exc
        aliases = list(request.output_filter) or list(sigdef.outputs)
        for alias in aliases:
            if alias not in sigdef.outputs:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{','.join(sorted(sigdef.outputs))}}}."
                )
        if len(set(aliases)) != len(aliases):
            raise _invalid("duplicate output tensor alias in output_filter")
        outputs = _call(function, **inputs)
        response = predict_pb2.PredictResponse()
        for alias in aliases:
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
        _fill_spec(response.model_spec, servable, name)
        return response

    def Classify(self, request: Any, context: Any) -> classification_pb2.ClassificationResponse:
        servable = self.registry.servable(request.model_spec)
        name, function, sigdef = _signature(servable, request.model_spec)
        _check_method(sigdef, CLASSIFY, "classification")
        response = classification_pb2.ClassificationResponse()
        response.result.CopyFrom(_classify(function, serialized_examples(request.input)))
        _fill_spec(response.model_spec, servable, name)
        return response

    def Regress(self, request: Any, context: Any) -> regression_pb2.RegressionResponse:
        servable = self.registry.servable(request.model_spec)
        name, function, sigdef = _signature(servable, request.model_spec)
        _check_method(sigdef, REGRESS, "regression")
        response = regression_pb2.RegressionResponse()
        response.result.CopyFrom(_regress(function, serialized_examples(request.input)))
        _fill_spec(response.model_spec, servable, name)
        return response

    def MultiInference(self, request: Any, context: Any) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise _invalid("MultiInferenceRequest must contain at least one task.")
        # The servable (version / label included) comes from the first task only.
        servable = self.registry.servable(request.tasks[0].model_spec)
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        seen: set[str] = set()
        for task in request.tasks:
            if task.model_spec.name != servable.name:
                raise _invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            name, function, sigdef = _signature(servable, task.model_spec)
            if name in seen:
                raise _invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if task.method_name not in (CLASSIFY, REGRESS):
                raise _invalid(f"Unsupported signature method_name: {task.method_name}")
            if sigdef.method_name != task.method_name:
                raise _invalid(
                    f"Task method_name {task.method_name} does not match signature "
                    f"{name} method_name {sigdef.method_name}"
                )
            result = response.results.add()
            _fill_spec(result.model_spec, servable, name)
            if task.method_name == CLASSIFY:
                result.classification_result.CopyFrom(_classify(function, examples))
            else:
                result.regression_result.CopyFrom(_regress(function, examples))
        return response

    def GetModelMetadata(
        self, request: Any, context: Any
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field_name in request.metadata_field:
            if field_name != "signature_def":
                raise _invalid(f"Metadata field {field_name} is not supported")
        servable = self.registry.servable(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, servable, None)
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: status of the test models; reloads are only recorded."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.reload_requests: list[Any] = []

    def GetModelStatus(
        self, request: Any, context: Any
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = request.model_spec
        model = self.registry.models.get(spec.name)
        if model is None:
            raise ServingError(_Code.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        choice = spec.WhichOneof("version_choice")
        if choice is None:
            versions = sorted(model.versions)
        elif choice == "version" and spec.version.value not in model.versions:
            raise ServingError(
                _Code.NOT_FOUND,
                f"Could not find version {spec.version.value} of model {spec.name}",
            )
        else:
            versions = [self.registry.servable(spec).version]
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            entry = response.model_version_status.add()
            entry.version = version
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.error_code = 0  # tensorflow.error.OK
        return response

    def HandleReloadConfigRequest(
        self, request: Any, context: Any
    ) -> model_management_pb2.ReloadConfigResponse:
        # Never applied: a proxy test only needs to know whether the request got through.
        self.reload_requests.append(request)
        print(
            f"testbackend: reload config request #{len(self.reload_requests)} recorded, "
            "not applied",
            file=sys.stderr,
            flush=True,
        )
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response
