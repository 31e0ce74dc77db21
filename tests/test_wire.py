"""The pre-parse field count: requests that would make the parser allocate per element
are refused from the wire bytes, before any object is built."""

from __future__ import annotations

import pytest

from proxy.errors import Code, Reject
from proxy.inspect import serving
from proxy.inspect.wire import MAX_FIELDS, check_field_count
from proxy.pb import serving_pb2


def predict_with_inputs(count: int) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = "m"
    body = request.SerializeToString()
    return body + b"\x12\x00" * count  # `count` empty map entries


class TestFieldCount:
    def test_many_tiny_map_entries_are_refused_before_parsing(self):
        """32 MiB of empty `inputs` entries is refused as too many fields."""
        with pytest.raises(Reject) as info:
            serving.predict(predict_with_inputs(16 * 1024 * 1024))
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert f"more than {MAX_FIELDS} protobuf fields" in info.value.message

    def test_limit_is_exact(self):
        """A request with exactly the limit passes the count; one more field does not."""
        head = serving_pb2.PredictRequest(model_spec=serving_pb2.ModelSpec(name="m"))
        fields_in_head = 2  # model_spec and its name
        at_limit = head.SerializeToString() + b"\x12\x00" * (10 - fields_in_head)
        check_field_count(at_limit, serving_pb2.PredictRequest.DESCRIPTOR, limit=10)
        with pytest.raises(Reject):
            check_field_count(at_limit + b"\x12\x00", serving_pb2.PredictRequest.DESCRIPTOR,
                              limit=10)

    def test_large_packed_tensor_is_a_handful_of_fields(self):
        """A 4 MiB tensor_content counts as one field, not millions."""
        request = serving_pb2.PredictRequest()
        request.model_spec.name = "m"
        tensor = request.inputs["x"]
        tensor.dtype = 1
        tensor.tensor_shape.dim.add(size=1024 * 1024)
        tensor.tensor_content = b"\x00" * (4 * 1024 * 1024)
        check_field_count(request.SerializeToString(), serving_pb2.PredictRequest.DESCRIPTOR,
                          limit=12)

    @pytest.mark.parametrize("data", [b"\x12\x05ab", b"\x0b", b"\x08\xff\xff"],
                             ids=["truncated-length", "group", "truncated-varint"])
    def test_malformed_wire_is_invalid_argument(self, data):
        """Bytes that are not protobuf are refused as malformed while counting."""
        with pytest.raises(Reject) as info:
            check_field_count(data, serving_pb2.PredictRequest.DESCRIPTOR, limit=10)
        assert info.value.code == Code.INVALID_ARGUMENT
