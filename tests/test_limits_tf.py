"""End to end with the real tensorflow-serving-api client, real mTLS and the TF-backed
ModelServer stand-in: the default limits refuse the 4 GB broadcast Predict and the
context-amplified Classify, and the backend's record shows that nothing arrived."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import base_config, running_proxy

pytestmark = pytest.mark.tf

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture
def stub(pki, signing, clean_backend):
    with (running_proxy(base_config(pki, signing, clean_backend.address)) as proxy,
          pki.channel(proxy.address, pki.alice) as channel):
            yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def broadcast_request(elements: int) -> predict_pb2.PredictRequest:
    """dtype float, shape [elements], one float_val: TF repeats it `elements` times."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    tensor.tensor_shape.dim.add(size=elements)
    request.inputs["x"].CopyFrom(tensor)
    return request


def test_four_gigabyte_broadcast_refused(stub, clean_backend) -> None:
    """A ~30-byte request asking ModelServer for 4 GB never reaches it."""
    request = broadcast_request(10**9)
    assert request.ByteSize() < 50  # 42 bytes, 13 of them the model name
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == (
        'input "x": 1000000000 elements > max 16777216 (max_elements)')
    assert clean_backend.records() == []
    response = stub.Predict(broadcast_request(3), timeout=30)  # the same shape, small, works
    assert list(tf.make_ndarray(response.outputs["y"])) == [3.5] * 3  # v2: 0.5x + 3
    assert len(clean_backend.records()) == 1


def test_context_amplification_refused(stub, clean_backend) -> None:
    """A 512 KiB context with 10,000 empty examples (5 GB once expanded) never arrives."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x"
    target = request.input.example_list_with_context
    target.context.features.feature["pad"].bytes_list.value.append(b"p" * 512 * 1024)
    for _ in range(10_000):
        target.examples.add()
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "(max_context_copy_bytes)" in info.value.details()
    assert clean_backend.records() == []
