"""The TensorFlow Serving stand-in (tfgate_dev.testbackend), driven with the real serving stubs."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

pytestmark = pytest.mark.tf

tf = pytest.importorskip("tensorflow")
apis = pytest.importorskip("tensorflow_serving.apis")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfgate_dev.testbackend import BackendProcess, start_backend  # noqa: E402

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


@pytest.fixture(scope="module")
def backend():
    proc = start_backend(record=True)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(backend: BackendProcess):
    with grpc.insecure_channel(backend.address) as ch:
        yield ch


@pytest.fixture
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model="half_plus_two", values=(1.0, 2.0), signature="", version=None,
                    label=None, alias="x") -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    req.inputs[alias].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.float32))
    return req


def example(**features: float):
    ex = tf.train.Example()
    for key, value in features.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def example_input(*xs: float) -> input_pb2.Input:
    inp = input_pb2.Input()
    for x in xs:
        inp.example_list.examples.append(example(x=x))
    return inp


def y(response, alias="y") -> list[float]:
    return tf.make_ndarray(response.outputs[alias]).tolist()


class TestImport:
    def test_package_import_does_not_load_tensorflow(self):
        """Importing tfgate_dev.testbackend leaves TensorFlow unloaded."""
        code = "import tfgate_dev.testbackend, sys; assert 'tensorflow' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)


class TestPredict:
    def test_latest_is_version_two(self, predict_stub):
        """Without a version the latest (2) answers, with the resolved spec echoed back."""
        resp = predict_stub.Predict(predict_request(), timeout=10)
        assert y(resp) == [3.5, 4.0]
        assert resp.model_spec.name == "half_plus_two"
        assert resp.model_spec.version.value == 2
        assert resp.model_spec.signature_name == "serving_default"

    @pytest.mark.parametrize("version, label, expected", [
        (1, None, [2.5, 3.0]), (2, None, [3.5, 4.0]),
        (None, "stable", [2.5, 3.0]), (None, "canary", [3.5, 4.0]),
    ])
    def test_versions_and_labels(self, predict_stub, version, label, expected):
        """Versions and labels select the right SavedModel."""
        resp = predict_stub.Predict(predict_request(version=version, label=label), timeout=10)
        assert y(resp) == expected
        assert resp.model_spec.version.value == (version or {"stable": 1, "canary": 2}[label])

    def test_times_three_and_other_model(self, predict_stub):
        """Named signatures and a second model work."""
        resp = predict_stub.Predict(predict_request(signature="times_three"), timeout=10)
        assert y(resp) == [3.0, 6.0]
        assert resp.model_spec.signature_name == "times_three"
        assert y(predict_stub.Predict(predict_request("other_model"), timeout=10)) == [2.0, 3.0]

    def test_predict_can_call_regress_signature(self, predict_stub):
        """Predict runs a regress signature when given its string input, as ModelServer does."""
        req = predict_pb2.PredictRequest()
        req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "regress_x"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(
            [example(x=2.0).SerializeToString()], dtype=tf.string))
        assert y(predict_stub.Predict(req, timeout=10), "outputs") == [3.0]

    def test_output_filter(self, predict_stub):
        """An unknown output alias is INVALID_ARGUMENT; a known one is returned."""
        req = predict_request()
        req.output_filter.append("y")
        assert list(predict_stub.Predict(req, timeout=10).outputs) == ["y"]
        req.output_filter[:] = ["nope"]
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    @pytest.mark.parametrize("req, code, details", [
        (predict_request("nope"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (predict_request(version=7), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(half_plus_two, 7)"),
        (predict_request(label="beta"), grpc.StatusCode.NOT_FOUND,
         "Unrecognized servable version label: beta"),
        (predict_request(signature="foo"), grpc.StatusCode.INVALID_ARGUMENT,
         'Serving signature name: "foo" not found in signature def'),
        (predict_request(alias="z"), grpc.StatusCode.INVALID_ARGUMENT, None),
    ])
    def test_errors_like_modelserver(self, predict_stub, req, code, details):
        """Unknown model, version, label, signature or input fail like ModelServer."""
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(req, timeout=10)
        assert err.value.code() == code
        if details:
            assert err.value.details() == details

    def test_wrong_dtype(self, predict_stub):
        """A string tensor for a float input is INVALID_ARGUMENT."""
        req = predict_request()
        req.inputs["x"].CopyFrom(tf.make_tensor_proto([b"a"], dtype=tf.string))
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestClassifyRegress:
    def test_regress(self, predict_stub):
        """Regress parses feature x (default 0) from each Example."""
        req = regression_pb2.RegressionRequest(input=example_input(2.0, 4.0))
        req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "regress_x"
        req.input.example_list.examples.append(tf.train.Example())
        resp = predict_stub.Regress(req, timeout=10)
        assert [r.value for r in resp.result.regressions] == [3.0, 4.0, 2.0]
        assert resp.model_spec.signature_name == "regress_x"

    def test_regress_with_context(self, predict_stub):
        """Context features are merged into every example; the example's own value wins."""
        req = regression_pb2.RegressionRequest()
        req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "regress_x"
        ctx = req.input.example_list_with_context
        ctx.context.CopyFrom(example(x=10.0))
        ctx.examples.extend([example(), example(x=2.0)])
        resp = predict_stub.Regress(req, timeout=10)
        assert [r.value for r in resp.result.regressions] == [7.0, 3.0]

    def test_classify(self, predict_stub):
        """Classify returns neg/pos labels with sigmoid scores."""
        req = classification_pb2.ClassificationRequest(input=example_input(0.0, 50.0))
        req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "classify_x"
        resp = predict_stub.Classify(req, timeout=10)
        rows = [[(c.label, round(c.score, 3)) for c in row.classes]
                for row in resp.result.classifications]
        assert rows == [[("neg", 0.5), ("pos", 0.5)], [("neg", 0.0), ("pos", 1.0)]]

    def test_method_mismatch_and_empty_input(self, predict_stub):
        """Classify on a predict signature, or with no examples, is INVALID_ARGUMENT."""
        req = classification_pb2.ClassificationRequest(input=example_input(1.0))
        req.model_spec.name = "half_plus_two"
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Classify(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tensorflow/serving/classify" in err.value.details()
        req = regression_pb2.RegressionRequest()
        req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "regress_x"
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Regress(req, timeout=10)
        assert err.value.details() == "Input is empty."

    def test_multi_inference(self, predict_stub):
        """Each task runs on the shared input; the version comes from the first task."""
        req = inference_pb2.MultiInferenceRequest(input=example_input(2.0))
        for sig, method in [("regress_x", "tensorflow/serving/regress"),
                            ("classify_x", "tensorflow/serving/classify")]:
            task = req.tasks.add(method_name=method)
            task.model_spec.name, task.model_spec.signature_name = "half_plus_two", sig
        req.tasks[0].model_spec.version.value = 1
        resp = predict_stub.MultiInference(req, timeout=10)
        assert resp.results[0].regression_result.regressions[0].value == 3.0
        assert resp.results[1].classification_result.classifications[0].classes[1].label == "pos"
        assert [r.model_spec.version.value for r in resp.results] == [1, 1]
        assert [r.model_spec.signature_name for r in resp.results] == ["regress_x", "classify_x"]


class TestMetadataAndStatus:
    def test_metadata(self, predict_stub):
        """GetModelMetadata packs every SignatureDef of the SavedModel."""
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = "half_plus_two"
        resp = predict_stub.GetModelMetadata(req, timeout=10)
        assert resp.model_spec.version.value == 2
        any_ = resp.metadata["signature_def"]
        assert any_.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        defs = get_model_metadata_pb2.SignatureDefMap()
        assert any_.Unpack(defs)
        sigs = defs.signature_def
        assert {"serving_default", "times_three", "regress_x", "classify_x"} <= set(sigs)
        assert sigs["classify_x"].method_name == "tensorflow/serving/classify"
        assert sigs["regress_x"].method_name == "tensorflow/serving/regress"
        assert sigs["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
        assert sigs["classify_x"].outputs["classes"].dtype == tf.string.as_datatype_enum

    def test_metadata_rejects_other_fields(self, predict_stub):
        """Only the signature_def metadata field is accepted."""
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
        req.model_spec.name = "half_plus_two"
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.GetModelMetadata(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def test_status(self, model_stub):
        """GetModelStatus lists every version as AVAILABLE, or just the requested one."""
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "half_plus_two"
        resp = model_stub.GetModelStatus(req, timeout=10)
        assert [(s.version, s.state) for s in resp.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
            (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
        req.model_spec.version_label = "stable"
        assert [s.version for s in model_stub.GetModelStatus(req).model_version_status] == [1]
        req.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as err:
            model_stub.GetModelStatus(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    def test_reload_is_answered_not_applied(self, model_stub, predict_stub):
        """HandleReloadConfigRequest answers OK and changes nothing."""
        req = model_management_pb2.ReloadConfigRequest()
        cfg = req.config.model_config_list.config.add(name="evil", base_path="/tmp/evil")
        assert cfg.name == "evil"
        assert model_stub.HandleReloadConfigRequest(req, timeout=10).status.error_code == 0
        assert y(predict_stub.Predict(predict_request(), timeout=10)) == [3.5, 4.0]


class TestHealth:
    def test_check_and_watch(self, channel):
        """Check answers SERVING; Watch streams SERVING x-test-watch-count times then ends."""
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        call = watch(b"", timeout=10, metadata=[("x-test-watch-count", "5")])
        assert list(call) == [b"\x08\x01"] * 5
        assert call.code() == grpc.StatusCode.OK


class TestHooks:
    def test_success_metadata(self, predict_stub):
        """Successful calls carry x-backend-initial and the x-backend trailer."""
        _, call = predict_stub.Predict.with_call(predict_request(), timeout=10)
        assert ("x-backend-initial", "1") in call.initial_metadata()
        assert ("x-backend", "tfgate-testbackend") in call.trailing_metadata()

    def test_fail_with_trailers(self, predict_stub):
        """x-test-fail aborts with that code and the test trailers, text and binary."""
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(predict_request(), timeout=10,
                                 metadata=[("x-test-fail", "FAILED_PRECONDITION")])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == "test failure requested"
        trailers = dict(err.value.trailing_metadata())
        assert trailers["x-test-trailer"] == "trailer-value"
        assert trailers["x-test-trailer-bin"] == b"\x00\x01binary"

    def test_sleep_past_deadline(self, predict_stub, backend):
        """x-test-sleep-ms past the deadline gives DEADLINE_EXCEEDED; the backend lives on."""
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            predict_stub.Predict(predict_request(), timeout=0.3,
                                 metadata=[("x-test-sleep-ms", "5000")])
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 3
        assert backend.process.poll() is None


class TestRecording:
    def test_exact_bytes_and_metadata(self, channel, backend):
        """The record holds the exact bytes sent (unknown fields kept), metadata and deadline."""
        raw = predict_request().SerializeToString() + b"\xa0\x06\x01"  # unknown field 100
        backend.clear_records()
        send = channel.unary_unary(PREDICT_PATH)
        send(raw, timeout=30, metadata=[("x-id", "abc"), ("x-blob-bin", b"\xff\x00")])
        (rec,) = backend.records()
        assert rec["method"] == PREDICT_PATH
        assert rec["request"] == raw
        assert ("x-id", "abc") in rec["metadata"]
        assert ("x-blob-bin", b"\xff\x00") in rec["metadata"]
        assert 20 < rec["time_remaining"] < 31  # clocks differ slightly
        assert rec["peer"].startswith("ipv4:127.0.0.1:")

    def test_recorded_before_processing(self, channel, backend):
        """Failed and unknown-method calls are recorded too; no deadline records null."""
        backend.clear_records()
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(PREDICT_PATH)(b"", metadata=[("x-test-fail", "ABORTED")])
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/tensorflow.ProfilerService/Profile")(b"\x08\x01", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        first, second = backend.records()
        assert (first["method"], first["request"], first["time_remaining"]) == (
            PREDICT_PATH, b"", None)
        assert (second["method"], second["request"]) == (
            "/tensorflow.ProfilerService/Profile", b"\x08\x01")
