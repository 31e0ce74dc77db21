"""Tests for proxy.inspect.serving: which model, version and signature each request addresses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxy.call import DEFAULT_SIGNATURE, Facts, ModelTarget
from proxy.errors import Code, Reason, Reject
from proxy.inspect import serving
from proxy.pb import example_pb2
from proxy.pb import serving_pb2 as pb

# One empty tf.Example: the smallest Input the server accepts for Classify/Regress.
ONE_EXAMPLE = example_pb2.Input(
    example_list=example_pb2.ExampleList(examples=[example_pb2.Example()]))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _vi(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return _varint(number << 3) + _varint(value)


def _spec(name: str = "mnist", **fields: object) -> pb.ModelSpec:
    spec = pb.ModelSpec(name=name)
    version = fields.pop("version", None)
    if version is not None:
        spec.version.value = version  # type: ignore[assignment]
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


def _malformed(parse: Callable[[bytes], Facts], data: bytes) -> Reject:
    with pytest.raises(Reject) as info:
        parse(data)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.reason is Reason.MALFORMED_REQUEST
    return info.value


class TestPredict:
    def test_latest_default_signature(self) -> None:
        """No version and no signature: latest version, serving_default."""
        facts = serving.predict(pb.PredictRequest(model_spec=_spec()).SerializeToString())
        assert facts.targets == (ModelTarget("mnist", None, None, DEFAULT_SIGNATURE),)

    def test_version(self) -> None:
        """A version number is read from the Int64Value wrapper."""
        msg = pb.PredictRequest(model_spec=_spec(version=3, signature_name="s"))
        data = msg.SerializeToString()
        assert serving.predict(data).targets == (ModelTarget("mnist", 3, None, "s"),)

    def test_version_zero_is_a_version(self) -> None:
        """Version 0 is present (wrapper set), not 'latest'."""
        data = pb.PredictRequest(model_spec=_spec(version=0)).SerializeToString()
        assert serving.predict(data).targets[0].version == 0

    def test_label(self) -> None:
        """A version label is kept as a label, not a version."""
        data = pb.PredictRequest(model_spec=_spec(version_label="stable")).SerializeToString()
        target = serving.predict(data).targets[0]
        assert (target.version, target.label) == (None, "stable")

    def test_known_optional_fields(self) -> None:
        """output_filter, inputs and the newer fields 5-7 are known and accepted."""
        msg = pb.PredictRequest(model_spec=_spec(), output_filter=["y"],
                                client_id=b"c", request_options=b"", predict_streamed_options=b"")
        msg.inputs["x"].dtype = 1
        assert serving.predict(msg.SerializeToString()).targets[0].name == "mnist"

    def test_missing_model_spec(self) -> None:
        """A request without model_spec is refused (the server would say 'Missing ModelSpec')."""
        assert "model_spec" in _malformed(serving.predict, b"").message

    def test_empty_name(self) -> None:
        """An empty model name is refused."""
        data = pb.PredictRequest(model_spec=_spec(name="")).SerializeToString()
        assert "name is empty" in _malformed(serving.predict, data).message

    def test_not_protobuf(self) -> None:
        """Bytes that are not a PredictRequest are refused."""
        _malformed(serving.predict, b"\xff\xff\xff\xff")

    def test_truncated(self) -> None:
        """A truncated message is refused."""
        data = pb.PredictRequest(model_spec=_spec()).SerializeToString()
        _malformed(serving.predict, data[:-2])

    def test_invalid_utf8_name(self) -> None:
        """A model name that is not UTF-8 is refused."""
        data = _ld(1, _ld(1, b"mn\xffist"))
        _malformed(serving.predict, data)

    @pytest.mark.parametrize("field", [
        _vi(99, 1),   # an unknown top-level field
        _vi(4, 1),    # the reserved field 4
        _vi(1, 7),    # model_spec sent as a varint: a known number with the wrong wire type
    ])
    def test_unknown_top_level_field(self, field: bytes) -> None:
        """Fields our schema does not know are refused: a newer server might act on them."""
        data = pb.PredictRequest(model_spec=_spec()).SerializeToString() + field
        _malformed(serving.predict, data)

    def test_unknown_model_spec_field(self) -> None:
        """An unknown field inside ModelSpec is refused."""
        data = _ld(1, _spec().SerializeToString() + _vi(9, 1))
        assert "model_spec" in _malformed(serving.predict, data).message

    def test_unknown_version_wrapper_field(self) -> None:
        """An unknown field inside the version wrapper is refused."""
        data = _ld(1, _ld(1, b"mnist") + _ld(2, _vi(1, 3) + _vi(5, 1)))
        assert "version" in _malformed(serving.predict, data).message


class TestMergedModelSpec:
    """Protobuf (and so TF Serving's C++ parser) merges repeated occurrences of a message
    field: scalars set in the later copy win, scalars it leaves unset keep their value, and
    setting a member of a oneof clears the other member."""

    def test_last_name_wins_signature_kept(self) -> None:
        """Two model_spec fields: the second's name wins, the first's signature and version stay."""
        first = _spec("allowed", version=1, signature_name="public").SerializeToString()
        second = pb.ModelSpec(name="secret").SerializeToString()
        data = _ld(1, first) + _ld(1, second)
        assert serving.predict(data).targets == (ModelTarget("secret", 1, None, "public"),)

    def test_later_signature_wins(self) -> None:
        """A later signature_name replaces the earlier one."""
        data = _ld(1, _spec(signature_name="public").SerializeToString()) + _ld(
            1, pb.ModelSpec(signature_name="admin").SerializeToString())
        assert serving.predict(data).targets[0].signature == "admin"

    def test_oneof_switches(self) -> None:
        """A label in the later copy replaces the version of the earlier one, and back."""
        to_label = _ld(1, _spec(version=1).SerializeToString()) + _ld(
            1, pb.ModelSpec(version_label="canary").SerializeToString())
        assert serving.predict(to_label).targets[0].version_text() == "label:canary"
        to_version = _ld(1, _spec(version_label="canary").SerializeToString()) + _ld(
            1, _ld(2, _vi(1, 7)))
        assert serving.predict(to_version).targets[0].version_text() == "7"

    def test_explicit_empty_name_on_wire_wins(self) -> None:
        """An empty name on the wire in the later copy replaces the earlier one, and is refused."""
        data = _ld(1, _spec("mnist").SerializeToString()) + _ld(1, _ld(1, b""))
        assert "name is empty" in _malformed(serving.predict, data).message

    def test_multi_inference_task_spec_merge(self) -> None:
        """Merging applies inside MultiInference tasks too."""
        task = _ld(1, _ld(1, b"a") + _ld(3, b"classify")) + _ld(1, _ld(1, b"b"))
        facts = serving.multi_inference(_ld(1, task) + _ld(2, ONE_EXAMPLE.SerializeToString()))
        assert facts.targets == (ModelTarget("b", None, None, "classify"),)


class TestOtherRequests:
    @pytest.mark.parametrize(("parse", "cls"), [
        (serving.classify, pb.ClassificationRequest), (serving.regress, pb.RegressionRequest)])
    def test_classify_regress(self, parse: Callable[[bytes], Facts], cls: type) -> None:
        """Classify and Regress address one model and signature, default serving_default."""
        data = cls(model_spec=_spec(version=2), input=ONE_EXAMPLE).SerializeToString()
        assert parse(data).targets == (ModelTarget("mnist", 2, None, DEFAULT_SIGNATURE),)
        assert "model_spec" in _malformed(parse, cls(input=ONE_EXAMPLE).SerializeToString()).message

    @pytest.mark.parametrize(("parse", "cls"), [
        (serving.metadata, pb.GetModelMetadataRequest), (serving.status, pb.GetModelStatusRequest)])
    def test_metadata_status_have_no_signature(self, parse: Callable[[bytes], Facts],
                                               cls: type) -> None:
        """Metadata and status requests ignore signature_name, so no signature is reported."""
        data = cls(model_spec=_spec(signature_name="secret")).SerializeToString()
        assert parse(data).targets == (ModelTarget("mnist", None, None, None),)
        _malformed(parse, cls().SerializeToString())

    def test_metadata_field(self) -> None:
        """metadata_field is a known field."""
        data = pb.GetModelMetadataRequest(model_spec=_spec(),
                                          metadata_field=["signature_def"]).SerializeToString()
        assert serving.metadata(data).targets[0].name == "mnist"

    def test_reload_and_health_have_no_targets(self) -> None:
        """Reload and health checks address no model."""
        reload = pb.ReloadConfigRequest(config=b"\x0a\x00", metric_names=["m"])
        assert serving.reload(reload.SerializeToString()) == Facts()
        assert serving.health(pb.HealthCheckRequest(service="x").SerializeToString()) == Facts()
        _malformed(serving.reload, _vi(3, 1))
        _malformed(serving.health, _vi(2, 1))


class TestMultiInference:
    @staticmethod
    def _request(*specs: pb.ModelSpec, method: str = "tensorflow/serving/classify") -> bytes:
        msg = pb.MultiInferenceRequest(input=ONE_EXAMPLE)
        for spec in specs:
            msg.tasks.add(model_spec=spec, method_name=method)
        return msg.SerializeToString()

    def test_every_task_is_a_target(self) -> None:
        """Each task's signature is reported, so the policy checks them all."""
        data = self._request(_spec(version=1, signature_name="a"),
                             _spec(version=1, signature_name=""))
        assert serving.multi_inference(data).targets == (
            ModelTarget("mnist", 1, None, "a"), ModelTarget("mnist", 1, None, DEFAULT_SIGNATURE))

    @pytest.mark.parametrize("second", [
        _spec("other", signature_name="b"),
        _spec(version=2, signature_name="b"),
        _spec(signature_name="b"),
        _spec(version_label="stable", signature_name="b"),
    ])
    def test_tasks_must_agree(self, second: pb.ModelSpec) -> None:
        """Tasks with different names, versions or labels are refused (the server uses task 0's)."""
        data = self._request(_spec(version=1, signature_name="a"), second)
        assert "tasks[1]" in _malformed(serving.multi_inference, data).message

    def test_no_tasks(self) -> None:
        """A MultiInferenceRequest without tasks is refused."""
        _malformed(serving.multi_inference, b"")

    def test_task_without_model_spec(self) -> None:
        """A task without model_spec is refused."""
        msg = pb.MultiInferenceRequest()
        msg.tasks.add(model_spec=_spec())
        msg.tasks.add(method_name="tensorflow/serving/regress")
        assert "tasks[1]" in _malformed(serving.multi_inference,
                                        msg.SerializeToString()).message

    def test_unknown_field_in_task(self) -> None:
        """An unknown field inside a task is refused."""
        data = _ld(1, _ld(1, _spec().SerializeToString()) + _vi(7, 1))
        assert "tasks[0]" in _malformed(serving.multi_inference, data).message

    def test_empty_name_in_later_task(self) -> None:
        """An empty model name in any task is refused."""
        data = self._request(_spec(signature_name="a"), _spec("", signature_name="b"))
        _malformed(serving.multi_inference, data)


class TestMultiInferenceSignatures:
    def test_repeated_signature_is_refused(self):
        """Two tasks with one signature are refused, as the server would refuse them."""
        import pytest as _pytest

        from proxy.errors import Reject
        from proxy.inspect import serving
        from proxy.pb import serving_pb2

        request = serving_pb2.MultiInferenceRequest()
        for _ in range(2):
            request.tasks.add().model_spec.name = "m"
        with _pytest.raises(Reject, match="repeat a signature"):
            serving.multi_inference(request.SerializeToString())


def test_too_many_multi_inference_tasks_are_refused():
    """More tasks than any real request holds are refused before each is checked."""
    import pytest as _pytest

    from proxy.errors import Reject
    from proxy.inspect import serving
    from proxy.pb import serving_pb2

    request = serving_pb2.MultiInferenceRequest()
    for i in range(serving.MAX_TASKS + 1):
        task = request.tasks.add()
        task.model_spec.name = "m"
        task.model_spec.signature_name = f"s{i}"
    with _pytest.raises(Reject, match="tasks > max"):
        serving.multi_inference(request.SerializeToString())
