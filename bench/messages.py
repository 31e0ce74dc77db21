"""Wire messages the benchmark sends and the bench backend answers with.

Built with tfgate's own generated protos (never TensorFlow), so a request here is the
exact `tensorflow.serving.PredictRequest` wire format TF Serving would receive.
"""

from __future__ import annotations

import struct

from proxy.pb import distributed_eager_pb2, serving_pb2, tensor_pb2

MODEL = "bench"
DT_FLOAT = 1


def _tensor(values: int | None = None, content: bytes | None = None) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=DT_FLOAT)
    if content is not None:
        t.tensor_shape.dim.add(size=len(content) // 4)
        t.tensor_content = content
    else:
        t.tensor_shape.dim.add(size=values or 0)
        t.float_val.extend(float(i) / 7.0 for i in range(values or 0))
    return t


def predict_request(*, floats: int = 36, content_bytes: int | None = None) -> bytes:
    """A PredictRequest for model `bench`: 36 floats (~210 B) or `content_bytes` of tensor_content."""
    req = serving_pb2.PredictRequest()
    req.model_spec.name = MODEL
    req.model_spec.signature_name = "serving_default"
    tensor = (_tensor(content=b"\x01" * content_bytes) if content_bytes is not None
              else _tensor(floats))
    req.inputs["x"].CopyFrom(tensor)
    return req.SerializeToString()


def request_near(total: int) -> bytes:
    """A PredictRequest of about `total` bytes (a float tensor in tensor_content)."""
    overhead = len(predict_request(content_bytes=4)) - 4
    return predict_request(content_bytes=(total - overhead) // 4 * 4)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def predict_response(floats: int = 36) -> bytes:
    """A PredictResponse{outputs: {"y": float tensor}, model_spec: {name: bench}} (~224 B)."""
    entry = _len_field(1, b"y") + _len_field(2, _tensor(floats).SerializeToString())
    spec = serving_pb2.ModelSpec(name=MODEL, signature_name="serving_default")
    return _len_field(1, entry) + _len_field(2, spec.SerializeToString())


# The context the bench's StreamingEnqueue messages run in (created through tfgate
# first: the cluster guard refuses a context its caller did not create).
CONTEXT_ID = 0x7F6A_11D5_9C3E_0B21


def create_context() -> bytes:
    """CreateContextRequest for CONTEXT_ID (no cluster: the backend is no TF server)."""
    return distributed_eager_pb2.CreateContextRequest(
        context_id=CONTEXT_ID, keep_alive_secs=600).SerializeToString()


def stream_message() -> bytes:
    """One EnqueueRequest as a TF client sends them for an eager op on a worker (176 B):
    `Mul` of two remote tensors with its dtype attr, inspected by tfgate per message."""
    req = distributed_eager_pb2.EnqueueRequest(context_id=CONTEXT_ID)
    op = req.queue.add().operation
    op.id, op.name, op.device = 42, "Mul", "/job:worker/replica:0/task:0/device:CPU:0"
    for op_id in (40, 41):
        handle = op.op_inputs.add().remote_handle
        handle.op_id, handle.device = op_id, op.device
        handle.dtype = DT_FLOAT
    op.attrs["T"].type = DT_FLOAT
    return req.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """The gRPC length-prefixed framing h2load sends as the HTTP/2 body."""
    return struct.pack(">BI", 0, len(message)) + message


def metadata_response() -> bytes:
    """A GetModelMetadataResponse for model `bench`: signature serving_default with one
    DT_FLOAT input `x` and output `y`, as the REST front's translation asks for it."""
    from proxy.pb import serving_responses_pb2 as pb

    sigs = pb.SignatureDefMap()
    sig = sigs.signature_def["serving_default"]
    sig.inputs["x"].dtype = DT_FLOAT
    sig.outputs["y"].dtype = DT_FLOAT
    response = pb.GetModelMetadataResponse()
    response.model_spec.name = MODEL
    packed = response.metadata["signature_def"]
    packed.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    packed.value = sigs.SerializeToString()
    return response.SerializeToString()


def rest_predict_body(floats: int = 36) -> bytes:
    """The REST twin of `predict_request()`: the same 36 floats as JSON instances."""
    import json

    return json.dumps({"signature_name": "serving_default",
                       "instances": [float(i) / 7.0 for i in range(floats)]}).encode()
