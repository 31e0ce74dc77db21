"""REST front: JSON -> Facts judged by the real limits, canonical bodies, translation to gRPC
bytes checked by the gRPC front's own inspection (no sockets, no TensorFlow)."""

from __future__ import annotations

import base64
import json

import pytest

from proxy.call import ModelTarget
from proxy.config.limits import Limits
from proxy.errors import Code, Reason, Reject
from proxy.inspect import serving
from proxy.limits import Limiter, LimitState
from proxy.rest import body, canonical, errors, examples, facts, translate_in
from proxy.rest.paths import route

TARGET = route("POST", "/v1/models/m/versions/2:predict").target
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BOOL = 1, 2, 3, 7, 9, 10


def predict(doc: dict):
    parsed = facts.predict_body(body.parse_json(json.dumps(doc).encode()))
    return parsed, facts.predict_facts(TARGET, parsed)


def refused(doc: dict) -> Reject:
    with pytest.raises(Reject) as info:
        predict(doc)
    return info.value


class TestPredictFacts:
    def test_row_unnamed(self) -> None:
        _, f = predict({"instances": [[1.0, 2.0], [3.0, 4.5]]})
        (t,) = f.tensors
        assert (t.shape, t.dtype, t.elements, t.decoded_bytes) == ((2, 2), DT_DOUBLE, 4, 32)
        assert f.targets == (ModelTarget("m", 2, None, "serving_default"),)

    def test_row_named_batches_every_key(self) -> None:
        _, f = predict({"signature_name": "sig", "instances": [
            {"a": [1, 2], "s": "héllo", "b": True}, {"a": [3, 4], "s": {"b64": "AAEC"}, "b": False}]})
        by = {t.name: t for t in f.tensors}
        assert by["a"].shape == (2, 2) and by["a"].dtype == DT_INT64
        assert by["b"].shape == (2,) and (by["b"].dtype, by["b"].decoded_bytes) == (DT_BOOL, 2)
        assert by["s"].dtype == DT_STRING and by["s"].string_bytes == 6 + 3
        assert by["s"].decoded_bytes == 2 * 24 + 9 and by["s"].max_string_bytes == 6
        assert f.targets[0].signature == "sig"

    def test_columnar(self) -> None:
        _, f = predict({"inputs": {"x": [[1], [2], [3]], "y": 5}})
        assert {t.name: t.shape for t in f.tensors} == {"x": (3, 1), "y": ()}
        _, f = predict({"inputs": [1.5, 2.5]})
        assert f.tensors[0].shape == (2,) and f.tensors[0].name == facts.COLUMN_NAME
        _, f = predict({"inputs": {"b64": "AAAA"}})  # a lone b64 object is a value
        assert f.tensors[0].shape == () and f.tensors[0].string_bytes == 3

    def test_empty_tensor_is_judged_by_limits(self) -> None:
        _, f = predict({"instances": [[], []]})
        assert f.tensors[0].shape == (2, 0) and f.tensors[0].elements == 0

    @pytest.mark.parametrize("doc, problem", [
        ({"instances": [[1], [2, 3]]}, "ragged"), ({"instances": [[1, [2]]]}, "ragged"),
        ({"instances": [1, [2]]}, "ragged"), ({"instances": [[[1]], [2]]}, "ragged"),
        ({"instances": [{"a": 1}, {"b": 1}]}, "other keys"),
        ({"instances": [{"a": [1]}, {"a": [1, 2]}]}, "ragged"),
        ({"instances": [{"a": 1}, 2]}, "Expecting object"), ({"instances": [1, {"a": 1}]}, "mixes"),
        ({"instances": []}, "No values"), ({"instances": {"a": 1}}, "list/array"),
        ({"instances": [1], "inputs": [1]}, "only one of"), ({"signature_name": "x"}, "Missing"),
        ({"instances": [1, "a"]}, "all numbers"), ({"instances": [1, True]}, "all numbers"),
        ({"instances": [None]}, "null"), ({"instances": [{"b64": "!!"}]}, "base64"),
        ({"instances": [{"b64": "QQ="}]}, "base64"), ({"instances": [[{"x": 1}]]}, "b64"),
        ({"signature_name": 3, "instances": [1]}, "signature_name"),
        ({"inputs": {}}, "empty"), ({"instances": [{}]}, "no inputs"),
        ({"inputs": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
         "deeper"),
        ({"instances": ["\ud800"]}, "surrogate"),
        ({"instances": [1], "signature_name": "s" * 2000}, "longer"),
    ])
    def test_refused(self, doc, problem) -> None:
        reject = refused(doc)
        assert problem in reject.message and errors.http_status(reject) == 400

    def test_base64_as_absl_accepts_it(self) -> None:
        parsed, f = predict({"instances": [{"b64": "QUJD\nREVG"}, {"b64": "QQ"}]})
        assert f.tensors[0].string_bytes == 6 + 1
        assert parsed.payload == [{"b64": "QUJDREVG"}, {"b64": "QQ=="}]  # rewritten

    def test_integers_beyond_uint64_are_doubles(self) -> None:
        parsed, f = predict({"instances": [2**64, 1]})
        assert f.tensors[0].dtype == DT_DOUBLE
        assert parsed.tensors[0].value == [float(2**64), 1]


def limiter(**tensors) -> Limiter:
    return Limiter(Limits.model_validate({"tensors": tensors} if tensors else {}), LimitState())


class TestLimitsJudgeRestFacts:
    """The gRPC limits, unchanged, on Facts from JSON."""

    def test_defaults_allow_a_normal_request(self) -> None:
        _, f = predict({"instances": [[0.5] * 100] * 100})
        limiter().check(f)

    def test_huge_base64_element(self) -> None:
        blob = base64.b64encode(b"\0" * (2 << 20)).decode()  # 2 MiB > 1 MiB default
        _, f = predict({"instances": [{"b64": blob}]})
        with pytest.raises(Reject) as info:
            limiter().check(f)
        assert "max_string_element_bytes" in info.value.message
        assert errors.http_status(info.value) == 413

    def test_elements_and_batch(self) -> None:
        _, f = predict({"instances": [[1.0] * 10] * 11})
        with pytest.raises(Reject, match="max_elements"):
            limiter(max_elements=100).check(f)
        with pytest.raises(Reject, match="max_batch"):
            limiter(max_batch=10).check(f)

    def test_numbers_are_counted_at_8_bytes(self) -> None:
        _, f = predict({"instances": [[1.0] * 64] * 2})  # float32 would be 512 bytes
        with pytest.raises(Reject, match="max_tensor_bytes"):
            limiter(max_tensor_bytes=1000).check(f)

    def test_empty_refused_by_default(self) -> None:
        _, f = predict({"instances": [[]]})
        with pytest.raises(Reject) as info:
            limiter().check(f)
        assert info.value.reason is Reason.INPUT_NOT_ALLOWED


class TestCanonical:
    def test_only_what_was_judged_is_sent(self) -> None:
        raw = (b'{"instances": [1.0, 2], "signature_name": "", "extra": {"x": NaN},'
               b' "inputs_typo": 1}')
        parsed = facts.predict_body(body.parse_json(raw))
        facts.predict_facts(TARGET, parsed)
        out = canonical.predict_json(parsed)
        assert out == b'{"signature_name":"serving_default","instances":[1.0,2]}'

    def test_round_trip_keeps_facts(self) -> None:
        doc = {"signature_name": "s", "instances": [
            {"a": [1.5, float("nan")], "s": "é\u2028", "t": {"b64": "QQ"}},
            {"a": [float("inf"), 1e-320], "s": "", "t": {"b64": "QUI="}}]}
        parsed, f = predict(doc)
        again = facts.predict_body(body.parse_json(canonical.predict_json(parsed)))
        assert facts.predict_facts(TARGET, again) == f

    def test_examples_round_trip(self) -> None:
        doc = {"context": {"c": [1, 2]}, "examples": [{"x": 1.0, "s": {"b64": "QQ"}}, {}]}
        parsed = examples.examples_body(body.parse_json(json.dumps(doc).encode()))
        again = examples.examples_body(body.parse_json(canonical.examples_json(parsed)))
        assert again.input == parsed.input and again.signature == "serving_default"


class TestExamples:
    def test_built_like_modelserver(self) -> None:
        doc = {"examples": [{"f": 1.0, "i": [1, True, -2], "s": ["a", {"b64": "QQ=="}],
                              "e": [], "big": 2**70}]}
        parsed = examples.examples_body(body.parse_json(json.dumps(doc).encode()))
        (ex,) = parsed.input.example_list.examples
        feature = ex.features.feature
        assert list(feature["f"].float_list.value) == [1.0]
        assert list(feature["i"].int64_list.value) == [1, 1, -2]
        assert list(feature["s"].bytes_list.value) == [b"a", b"A"]
        assert feature["e"].WhichOneof("kind") is None
        assert list(feature["big"].float_list.value) == [pytest.approx(2.0**70)]

    @pytest.mark.parametrize("doc, problem", [
        ({"examples": [{"f": [1, 1.5]}]}, "expecting type"), ({"examples": [{"f": None}]}, "Null"),
        ({"examples": [{"f": [[1]]}]}, "Array"), ({"examples": [{"f": 2**63}]}, "uint64"),
        ({"examples": [1]}, "JSON object"), ({"examples": []}, "empty"),
        ({"context": [], "examples": [{}]}, "JSON object"), ({}, "not found"),
        ({"examples": [{"f": {"x": 1}}]}, "Object"),
    ])
    def test_refused(self, doc, problem) -> None:
        with pytest.raises(Reject, match=problem):
            examples.examples_body(body.parse_json(json.dumps(doc).encode()))

    def test_same_facts_as_the_grpc_front(self) -> None:
        """The Input a REST classify builds, sent as gRPC, gives the gRPC front's facts."""
        doc = {"signature_name": "classify_x", "context": {"c": "x" * 100},
               "examples": [{"x": float(i), "tag": ["a", "b"]} for i in range(50)]}
        parsed = examples.examples_body(body.parse_json(json.dumps(doc).encode()))
        rest_facts = examples.examples_facts(TARGET, parsed)
        grpc_facts = serving.classify(translate_in.examples_request(TARGET, parsed, True))
        assert rest_facts == grpc_facts

    def test_context_copies_are_limited(self) -> None:
        doc = {"context": {"c": "x" * 100_000}, "examples": [{}] * 1000}
        parsed = examples.examples_body(body.parse_json(json.dumps(doc).encode()))
        with pytest.raises(Reject, match="max_context_copy_bytes"):
            limiter().check(examples.examples_facts(TARGET, parsed))


class TestTranslateToGrpc:
    @pytest.mark.parametrize("doc, dtypes", [
        ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"x": DT_FLOAT}),
        ({"instances": [{"a": [1, 2], "s": "z"}, {"a": [3, 4], "s": {"b64": "QUJD"}}]},
         {"a": DT_INT32, "s": DT_STRING}),
        ({"inputs": {"a": [[1]], "b": [True], "unused": [9] * 50}}, {"a": DT_INT64, "b": DT_BOOL}),
        ({"inputs": 2.5}, {"x": DT_DOUBLE}),
    ])
    def test_rest_facts_never_undercount_the_grpc_facts(self, doc, dtypes) -> None:
        parsed, rest_facts = predict(doc)
        data = translate_in.predict_request(TARGET, parsed, dtypes)
        grpc_facts = serving.predict(data)  # the gRPC front's own inspection
        assert grpc_facts.targets == rest_facts.targets
        rest_by = {t.name: t for t in rest_facts.tensors}
        for t in grpc_facts.tensors:
            mine = rest_by.get(t.name) or next(iter(rest_by.values()))
            assert (t.dtype, t.shape) == (dtypes[t.name], mine.shape)
            assert t.decoded_bytes <= mine.decoded_bytes
            assert t.string_bytes == mine.string_bytes

    @pytest.mark.parametrize("doc, dtypes, code", [
        ({"instances": [1.5]}, {"x": DT_INT32}, Code.INVALID_ARGUMENT),
        ({"instances": [2**31]}, {"x": DT_INT32}, Code.INVALID_ARGUMENT),
        ({"instances": [-1]}, {"x": 22}, Code.INVALID_ARGUMENT),
        ({"instances": ["a"]}, {"x": DT_FLOAT}, Code.INVALID_ARGUMENT),
        ({"instances": [1]}, {"x": DT_FLOAT, "y": DT_FLOAT}, Code.INVALID_ARGUMENT),
        ({"inputs": {"x": [1]}}, {"x": DT_FLOAT, "y": DT_FLOAT}, Code.INVALID_ARGUMENT),
        ({"instances": [{"x": 1, "z": 2}]}, {"x": DT_FLOAT}, Code.INVALID_ARGUMENT),
        ({"instances": [1.0]}, {"x": 19}, Code.INVALID_ARGUMENT),  # DT_HALF (ModelServer: UNIMPLEMENTED)
    ])
    def test_refused_as_modelserver(self, doc, dtypes, code) -> None:
        parsed, _ = predict(doc)
        with pytest.raises(Reject) as info:
            translate_in.predict_request(TARGET, parsed, dtypes)
        assert info.value.code is code
