"""Tests for protos/ and proxy/pb: generated code is current and matches TensorFlow's wire."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

import pytest
from google.protobuf import unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from proxy.call import DEFAULT_SIGNATURE, ModelTarget
from proxy.inspect import serving
from proxy.pb import example_pb2, serving_pb2, tensor_pb2

REPO = pathlib.Path(__file__).resolve().parent.parent


class TestGeneratedCode:
    def test_not_stale(self, tmp_path: pathlib.Path) -> None:
        """Regenerating from protos/ gives byte-identical proxy/pb/*_pb2.py and .pyi files."""
        # protoc runs in its own process: grpc_tools' protoc segfaults in a process that has
        # imported TensorFlow (two libprotobufs), and the tf-marked tests import it.
        subprocess.run([sys.executable, str(REPO / "protos" / "generate.py"), "--out",
                        str(tmp_path)], check=True, capture_output=True, timeout=120)
        written = sorted((tmp_path / "proxy" / "pb").glob("*_pb2.py*"))
        committed = sorted((REPO / "proxy" / "pb").glob("*_pb2.py*"))
        assert [p.name for p in written] == [p.name for p in committed]
        stale = [p.name for p, q in zip(written, committed, strict=True) if p.read_bytes() != q.read_bytes()]
        assert stale == [], "stale generated code; run `python protos/generate.py`"

    def test_own_package(self) -> None:
        """Our messages live under tfgate.*, so they never collide with TensorFlow's."""
        for module in (serving_pb2, tensor_pb2, example_pb2):
            assert module.DESCRIPTOR.package.startswith("tfgate.")

    def test_health_request(self) -> None:
        """HealthCheckRequest matches grpc/health/v1/health.proto: string service = 1."""
        (field,) = serving_pb2.HealthCheckRequest.DESCRIPTOR.fields
        assert (field.name, field.number, field.type) == ("service", 1, FieldDescriptor.TYPE_STRING)


# --- against the real TensorFlow and TF Serving descriptors ---------------------------------

_LENGTH_DELIMITED = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_STRING,
                     FieldDescriptor.TYPE_BYTES}


def _compatible(ours: FieldDescriptor, theirs: FieldDescriptor) -> bool:
    """Same type, or our opaque `bytes` standing for their message or string."""
    if ours.type == theirs.type:
        return True
    return ours.type == FieldDescriptor.TYPE_BYTES and theirs.type in _LENGTH_DELIMITED


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _real_oneof(field: FieldDescriptor) -> Any:
    """The field's oneof, unless it is the synthetic one of a proto3 `optional` field."""
    oneof = field.containing_oneof
    synthetic = oneof is not None and len(oneof.fields) == 1 and oneof.name == f"_{field.name}"
    return None if synthetic else oneof


def _compare(ours: Descriptor, theirs: Descriptor, where: str, seen: set[str],
             problems: list[str]) -> None:
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    for field in ours.fields:
        other = theirs.fields_by_number.get(field.number)
        at = f"{where}.{field.name} (#{field.number})"
        if other is None:
            problems.append(f"{at}: no such field in {theirs.full_name}")
            continue
        if not _compatible(field, other) or _repeated(field) != _repeated(other):
            problems.append(f"{at}: type {field.type} repeated={_repeated(field)} vs "
                            f"{other.type} repeated={_repeated(other)}")
            continue
        ours_oneof, other_oneof = _real_oneof(field), _real_oneof(other)
        if ours_oneof is not None:
            # Members of one oneof clear each other when parsed: the same set must be one oneof.
            mine = {f.number for f in ours_oneof.fields}
            if other_oneof is None or not mine <= {f.number for f in other_oneof.fields}:
                problems.append(f"{at}: oneof {ours_oneof.name} differs")
        elif other_oneof is not None and len(other_oneof.fields) > 1:
            problems.append(f"{at}: is in oneof {other_oneof.name} in {theirs.full_name}")
        if FieldDescriptor.TYPE_MESSAGE == field.type == other.type:
            _compare(field.message_type, other.message_type, at, seen, problems)
        if field.type == FieldDescriptor.TYPE_ENUM:
            theirs_values = {v.number: v.name for v in other.enum_type.values}
            for value in field.enum_type.values:
                if theirs_values.get(value.number) != value.name:
                    problems.append(f"{at}: enum value {value.name}={value.number} differs")


@pytest.fixture(scope="module")
def tf_apis() -> dict[str, Any]:
    """The real generated modules (importing them imports TensorFlow)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_serving.apis")
    from tensorflow.core.example import example_pb2 as tf_example
    from tensorflow.core.example import feature_pb2 as tf_feature
    from tensorflow.core.framework import tensor_pb2 as tf_tensor
    from tensorflow.core.framework import tensor_shape_pb2 as tf_shape
    from tensorflow.core.framework import types_pb2 as tf_types
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        input_pb2,
        model_management_pb2,
        model_pb2,
        predict_pb2,
        regression_pb2,
    )
    return {
        "ModelSpec": model_pb2.ModelSpec,
        "PredictRequest": predict_pb2.PredictRequest,
        "ClassificationRequest": classification_pb2.ClassificationRequest,
        "RegressionRequest": regression_pb2.RegressionRequest,
        "InferenceTask": inference_pb2.InferenceTask,
        "MultiInferenceRequest": inference_pb2.MultiInferenceRequest,
        "GetModelMetadataRequest": get_model_metadata_pb2.GetModelMetadataRequest,
        "GetModelStatusRequest": get_model_status_pb2.GetModelStatusRequest,
        "ReloadConfigRequest": model_management_pb2.ReloadConfigRequest,
        "TensorProto": tf_tensor.TensorProto,
        "TensorShapeProto": tf_shape.TensorShapeProto,
        "DataType": tf_types.DataType,
        "Example": tf_example.Example,
        "Features": tf_feature.Features,
        "Feature": tf_feature.Feature,
        "Input": input_pb2.Input,
        "ExampleList": input_pb2.ExampleList,
        "ExampleListWithContext": input_pb2.ExampleListWithContext,
        "ModelServerConfig": __import__(
            "tensorflow_serving.config.model_server_config_pb2",
            fromlist=["ModelServerConfig"]).ModelServerConfig,
    }


_OURS = {
    "ModelSpec": serving_pb2.ModelSpec,
    "PredictRequest": serving_pb2.PredictRequest,
    "ClassificationRequest": serving_pb2.ClassificationRequest,
    "RegressionRequest": serving_pb2.RegressionRequest,
    "InferenceTask": serving_pb2.InferenceTask,
    "MultiInferenceRequest": serving_pb2.MultiInferenceRequest,
    "GetModelMetadataRequest": serving_pb2.GetModelMetadataRequest,
    "GetModelStatusRequest": serving_pb2.GetModelStatusRequest,
    "ReloadConfigRequest": serving_pb2.ReloadConfigRequest,
    "TensorProto": tensor_pb2.TensorProto,
    "TensorShapeProto": tensor_pb2.TensorShapeProto,
    "Example": example_pb2.Example,
    "Features": example_pb2.Features,
    "Feature": example_pb2.Feature,
    "Input": example_pb2.Input,
    "ExampleList": example_pb2.ExampleList,
    "ExampleListWithContext": example_pb2.ExampleListWithContext,
}
# Messages the proxy refuses unknown fields in: every field the real message has must be
# declared by ours, or legitimate requests would be refused.
_COMPLETE = ["ModelSpec", "PredictRequest", "ClassificationRequest", "RegressionRequest",
             "InferenceTask", "MultiInferenceRequest", "GetModelMetadataRequest",
             "GetModelStatusRequest", "ReloadConfigRequest", "TensorProto", "TensorShapeProto",
             "Input", "ExampleList", "ExampleListWithContext", "Example", "Features", "Feature"]


def _no_unknown_fields(msg: Any) -> list[str]:
    """Every field of ours, recursively, read something (nothing landed in unknown fields)."""
    found = []
    if len(unknown_fields.UnknownFieldSet(msg)):
        found.append(type(msg).DESCRIPTOR.full_name)
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        items = value.values() if field.message_type.GetOptions().map_entry else (
            value if _repeated(field) else [value])
        for item in items:
            if hasattr(item, "ListFields"):
                found += _no_unknown_fields(item)
    return found


@pytest.mark.tf
class TestAgainstTensorFlow:
    @pytest.mark.parametrize("name", sorted(_OURS))
    def test_fields_match(self, tf_apis: dict[str, Any], name: str) -> None:
        """Each field we declare has the real number and a compatible wire type, recursively."""
        problems: list[str] = []
        _compare(_OURS[name].DESCRIPTOR, tf_apis[name].DESCRIPTOR, name, set(), problems)
        assert problems == []

    @pytest.mark.parametrize("name", _COMPLETE)
    def test_no_real_field_missing(self, tf_apis: dict[str, Any], name: str) -> None:
        """Every field of the real message is declared by ours (unknown fields are refused)."""
        ours = {f.number for f in _OURS[name].DESCRIPTOR.fields}
        missing = [f"{f.name}={f.number}" for f in tf_apis[name].DESCRIPTOR.fields
                   if f.number not in ours]
        assert missing == []

    def test_data_types(self, tf_apis: dict[str, Any]) -> None:
        """Our DataType values carry TensorFlow's numbers and names (reference types excepted)."""
        theirs = {v.number: v.name for v in tf_apis["DataType"].DESCRIPTOR.values}
        ours = {v.number: v.name for v in tensor_pb2.DataType.DESCRIPTOR.values}
        assert {n: theirs.get(n) for n in ours} == ours
        assert {n: name for n, name in theirs.items() if n < 100} == ours

    def test_predict_round_trip(self, tf_apis: dict[str, Any]) -> None:
        """A real PredictRequest parses with ours and re-serializes to the same bytes."""
        real = tf_apis["PredictRequest"]()
        real.model_spec.name = "half_plus_two"
        real.model_spec.version.value = 0
        real.model_spec.signature_name = "serving_default"
        tensor = real.inputs["x"]
        tensor.dtype = 1
        tensor.tensor_shape.dim.add(size=3, name="batch")
        tensor.float_val.extend([1.0, 2.0, 5.0])
        strings = real.inputs["s"]
        strings.dtype = 7
        strings.tensor_shape.dim.add(size=2)
        strings.string_val.extend([b"a", b"\xff"])
        real.inputs["raw"].dtype = 9
        real.inputs["raw"].tensor_shape.dim.add(size=2)
        real.inputs["raw"].tensor_content = b"\x00" * 16
        real.output_filter.append("y")
        data = real.SerializeToString(deterministic=True)
        ours = serving_pb2.PredictRequest.FromString(data)
        assert _no_unknown_fields(ours) == []
        assert ours.SerializeToString(deterministic=True) == data
        assert serving.predict(data).targets == (
            ModelTarget("half_plus_two", 0, None, "serving_default"),)

    def test_classify_round_trip(self, tf_apis: dict[str, Any]) -> None:
        """A ClassificationRequest with context examples round-trips through ours."""
        real = tf_apis["ClassificationRequest"]()
        real.model_spec.name = "iris"
        real.model_spec.version_label = "stable"
        ctx = real.input.example_list_with_context
        ctx.context.features.feature["country"].bytes_list.value.append(b"nl")
        for value in (1.5, 2.5):
            example = ctx.examples.add()
            example.features.feature["x"].float_list.value.append(value)
            example.features.feature["n"].int64_list.value.extend([1, -2])
        data = real.SerializeToString(deterministic=True)
        ours = serving_pb2.ClassificationRequest.FromString(data)
        assert _no_unknown_fields(ours) == []
        assert ours.SerializeToString(deterministic=True) == data
        assert serving.classify(data).targets == (
            ModelTarget("iris", None, "stable", DEFAULT_SIGNATURE),)

    def test_multi_inference_round_trip(self, tf_apis: dict[str, Any]) -> None:
        """A MultiInferenceRequest round-trips and every task becomes a target."""
        real = tf_apis["MultiInferenceRequest"]()
        for signature, method in (("classify", "tensorflow/serving/classify"),
                                  ("regress", "tensorflow/serving/regress")):
            task = real.tasks.add()
            task.model_spec.name = "m"
            task.model_spec.version.value = 4
            task.model_spec.signature_name = signature
            task.method_name = method
        real.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
        data = real.SerializeToString(deterministic=True)
        ours = serving_pb2.MultiInferenceRequest.FromString(data)
        assert _no_unknown_fields(ours) == []
        assert ours.SerializeToString(deterministic=True) == data
        assert [t.signature for t in serving.multi_inference(data).targets] == [
            "classify", "regress"]

    def test_metadata_status_reload_round_trip(self, tf_apis: dict[str, Any]) -> None:
        """Metadata, status and reload requests from the real classes round-trip through ours."""
        meta = tf_apis["GetModelMetadataRequest"]()
        meta.model_spec.name = "m"
        meta.metadata_field.append("signature_def")
        status = tf_apis["GetModelStatusRequest"]()
        status.model_spec.name = "m"
        status.model_spec.version.value = 2
        reload = tf_apis["ReloadConfigRequest"]()
        model = reload.config.model_config_list.config.add()
        model.name, model.base_path, model.model_platform = "m", "/models/m", "tensorflow"
        reload.metric_names.append("m")
        for real, cls in ((meta, serving_pb2.GetModelMetadataRequest),
                          (status, serving_pb2.GetModelStatusRequest),
                          (reload, serving_pb2.ReloadConfigRequest)):
            data = real.SerializeToString(deterministic=True)
            ours = cls.FromString(data)
            assert _no_unknown_fields(ours) == [], cls
            assert ours.SerializeToString(deterministic=True) == data, cls

    def test_predict_newer_fields_round_trip(self, tf_apis: dict[str, Any]) -> None:
        """PredictRequest fields 5-7 (kept opaque by us) survive byte for byte."""
        real = tf_apis["PredictRequest"]()
        real.model_spec.name = "m"
        names = {f.name for f in real.DESCRIPTOR.fields}
        if "client_id" in names:
            real.client_id = b"client"  # type: ignore[assignment]
        if "request_options" in names:
            real.request_options.SetInParent()
        data = real.SerializeToString(deterministic=True)
        ours = serving_pb2.PredictRequest.FromString(data)
        assert _no_unknown_fields(ours) == []
        assert ours.SerializeToString(deterministic=True) == data
