"""Tests for proxy.inspect.examples: Input sizes judged the way the server may pay them.

A tf.Example's features are a map, so duplicate entries merge (last wins) when the message
is parsed, but ModelServer may copy the list bytes exactly as sent (lazy fields read as
`bytes`). Each size is therefore the larger of the wire reading and the parsed one. The
requests here are built byte by byte, because any parsed message (ours or the
tensorflow-serving-api client's) has already merged the duplicates away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from proxy.call import Facts, ModelTarget
from proxy.config.limits import Limits
from proxy.errors import Code, Reason, Reject
from proxy.inspect import serving
from proxy.limits import Limiter, LimitState
from proxy.pb import example_pb2 as ex
from proxy.pb import serving_pb2 as pb

MiB = 1024 * 1024


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


def _entry(key: str, value: bytes) -> bytes:
    """One `Features.feature` map entry: key -> bytes_list [value], serialized."""
    feature = ex.Feature(bytes_list=ex.BytesList(value=[value]))
    return ex.Features(feature={key: feature}).SerializeToString()


def duplicate_context(entries: int = 1024, value: int = 1024) -> bytes:
    """A serialized Example whose features repeat one key: ~1 MiB on the wire, one entry
    (~1 KiB) once parsed."""
    return _ld(1, _entry("pad", b"p" * value) * entries)


def request_bytes(elwc: bytes, method: str = "Classify") -> bytes:
    """`elwc` (ExampleListWithContext bytes) as the input of a Classify/Regress/
    MultiInference request for model m."""
    head = {"Classify": pb.ClassificationRequest(model_spec=pb.ModelSpec(name="m")),
            "Regress": pb.RegressionRequest(model_spec=pb.ModelSpec(name="m")),
            "MultiInference": pb.MultiInferenceRequest(tasks=[pb.InferenceTask(
                model_spec=pb.ModelSpec(name="m", signature_name="s"),
                method_name="tensorflow/serving/classify")])}[method]
    return head.SerializeToString() + _ld(2, _ld(2, elwc))


def examples(count: int) -> bytes:
    return _ld(1, b"") * count  # `count` empty examples


PARSERS: dict[str, Callable[[bytes], Facts]] = {
    "Classify": serving.classify, "Regress": serving.regress,
    "MultiInference": serving.multi_inference}


def _limit_refusal(facts: Facts) -> Reject:
    with pytest.raises(Reject) as info:
        Limiter(Limits(), LimitState()).check(Facts(targets=(ModelTarget("m", signature="s"),),
                                      examples=facts.examples))
    return info.value


class TestContextSize:
    @pytest.mark.parametrize("method", PARSERS)
    def test_duplicate_features_count_as_sent(self, method: str) -> None:
        """A context of 1024 copies of one 1 KiB feature: ~1 MiB sent, ~1 KiB parsed.
        It is sized at its wire length, in every method that takes an Input."""
        context = duplicate_context()
        data = request_bytes(examples(100) + _ld(2, context), method)
        parsed = pb.ClassificationRequest.FromString(request_bytes(
            examples(1) + _ld(2, context))).input.example_list_with_context.context
        assert parsed.ByteSize() < 1100 < MiB < len(context)  # merged to one entry
        facts = PARSERS[method](data).examples
        assert facts is not None
        assert facts.context_bytes == len(context)
        assert facts.decoded_bytes == 100 * (24 + len(context))

    def test_refused_by_max_context_copy_bytes(self) -> None:
        """1 MiB on the wire × 100 examples = 100 MiB of copies > the 64 MiB default,
        although the parsed context (1 KiB × 100) is far below it."""
        facts = serving.classify(request_bytes(examples(100) + _ld(2, duplicate_context())))
        reject = _limit_refusal(facts)
        assert reject.code is Code.RESOURCE_EXHAUSTED
        assert reject.reason is Reason.LIMIT_EXCEEDED
        assert reject.message.endswith("(max_context_copy_bytes)")
        assert "100 examples × 1" in reject.message

    def test_context_split_over_occurrences(self) -> None:
        """`context` sent several times (which merge into one when parsed) counts every
        byte sent, and so does an ExampleListWithContext or an Input sent twice."""
        one = duplicate_context(entries=100)
        split = examples(3) + _ld(2, one) + _ld(2, one) + _ld(2, one)
        assert serving.classify(request_bytes(split)).examples.context_bytes == 3 * len(one)
        head = pb.ClassificationRequest(model_spec=pb.ModelSpec(name="m")).SerializeToString()
        two_lists = head + _ld(2, _ld(2, examples(3) + _ld(2, one)) + _ld(2, _ld(2, one)))
        assert serving.classify(two_lists).examples.context_bytes == 2 * len(one)
        two_inputs = request_bytes(examples(3) + _ld(2, one)) + _ld(2, _ld(2, _ld(2, one)))
        assert serving.classify(two_inputs).examples.context_bytes == 2 * len(one)

    def test_parsed_size_when_it_is_larger(self) -> None:
        """Map entries sent without their value are re-serialized with one: then the
        parsed size is the larger and counts."""
        keys_only = b"".join(_ld(1, _ld(1, f"k{i:04}".encode())) for i in range(200))
        context = _ld(1, keys_only)
        facts = serving.classify(request_bytes(examples(2) + _ld(2, context))).examples
        parsed = pb.ClassificationRequest.FromString(request_bytes(
            examples(2) + _ld(2, context))).input.example_list_with_context.context.ByteSize()
        assert parsed > len(context)
        assert facts.context_bytes == parsed

    def test_plain_context_unchanged(self) -> None:
        """A context without duplicates is the same size either way."""
        request = pb.ClassificationRequest(model_spec=pb.ModelSpec(name="m"))
        target = request.input.example_list_with_context
        target.context.features.feature["c"].float_list.value.extend([1.0, 2.0])
        target.examples.add()
        facts = serving.classify(request.SerializeToString()).examples
        assert facts.context_bytes == target.context.ByteSize() == len(
            target.context.SerializeToString())


class TestExampleSize:
    def test_duplicate_features_in_examples_count_as_sent(self) -> None:
        """The same rule for the examples themselves (each is copied once)."""
        example = duplicate_context(entries=50)
        data = pb.ClassificationRequest(model_spec=pb.ModelSpec(
            name="m")).SerializeToString() + _ld(2, _ld(1, _ld(1, example) * 4))
        facts = serving.classify(data).examples
        assert facts.examples == 4
        assert facts.decoded_bytes == 4 * (24 + len(example))

    def test_largest_value_counts_every_entry(self) -> None:
        """max_value_bytes sees the entry that the merge dropped (an earlier duplicate)."""
        big, small = _entry("f", b"x" * 5000), _entry("f", b"y")
        data = request_bytes(examples(1) + _ld(2, _ld(1, big + small)))
        assert serving.classify(data).examples.max_value_bytes >= 5000


@pytest.mark.tf
def test_duplicate_context_refused_end_to_end(pki: Any, signing: Any,
                                              clean_backend: Any) -> None:
    """Over mTLS to a real proxy, with tensorflow-serving-api's messages and response
    parser: the 1 MiB-on-the-wire context × 100 examples is refused (RESOURCE_EXHAUSTED,
    max_context_copy_bytes) and never arrives; the same request parsed (duplicates
    merged) and sent again is forwarded and classified. The request goes out as raw
    bytes: the stub would re-serialize a parsed request, which has merged the
    duplicates, but any client can send these bytes."""
    pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import classification_pb2

    from tests.conftest import base_config, running_proxy

    head = classification_pb2.ClassificationRequest()
    head.model_spec.name = "half_plus_two"
    head.model_spec.signature_name = "classify_x"
    elwc = examples(100) + _ld(2, duplicate_context())
    attack = head.SerializeToString() + _ld(2, _ld(2, elwc))
    merged = classification_pb2.ClassificationRequest.FromString(attack)
    assert merged.ByteSize() < 4096 < MiB < len(attack)
    with (running_proxy(base_config(pki, signing, clean_backend.address)) as proxy,
          pki.channel(proxy.address, pki.alice) as channel):
        classify = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Classify",
            request_serializer=None,
            response_deserializer=classification_pb2.ClassificationResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            classify(attack, timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_context_copy_bytes)" in info.value.details()
        assert clean_backend.records() == []
        response = classify(merged.SerializeToString(), timeout=30)
    assert len(response.result.classifications) == 100
    assert len(clean_backend.records()) == 1
