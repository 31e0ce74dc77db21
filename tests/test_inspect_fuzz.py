"""Property tests (hypothesis) for the inspectors and the limit stage.

- Random and mutated request bytes through every TF Serving inspector (and the default
  limits) end in Facts or a Reject, never any other exception.
- Tensors the inspector accepts are sized exactly from shape × dtype; with TensorFlow
  present (tf marker), TF's own parser accepts them too, with the same element count.
- Over a real proxy (plaintext loopback, raw recording backend): every call ends with a
  gRPC status, never INTERNAL or a hang, and accepted requests arrive byte for byte.
Example counts are bounded (deadline=None) so the suite stays fast.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.call import Facts
from proxy.config import validate_config
from proxy.config.limits import Limits
from proxy.dtypes import DTYPES
from proxy.errors import Reject
from proxy.inspect import serving
from proxy.limits import Limiter, LimitState
from proxy.pb import serving_pb2
from proxy.pb.tensor_pb2 import TensorProto
from proxy.server import RunningServer
from tests.test_limits_e2e import SERVICE, RecordingBackend, config, token
from tfgate_dev.devpki import SigningKey, write_jwks

INSPECTORS: dict[str, Callable[[bytes], Facts]] = {
    "Predict": serving.predict, "Classify": serving.classify,
    "Regress": serving.regress, "MultiInference": serving.multi_inference,
}
LIMITER = Limiter(Limits(), LimitState())
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies -------------------------------------------------------------------------

_INT32 = st.integers(-(2**31), 2**31 - 1)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float_val": st.lists(st.floats(width=32, allow_nan=False), max_size=6),
    "double_val": st.lists(st.floats(allow_nan=False), max_size=6),
    "int_val": st.lists(_INT32, max_size=6),
    "half_val": st.lists(st.integers(0, 2**16 - 1), max_size=6),
    "int64_val": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=6),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=6),
    "bool_val": st.lists(st.booleans(), max_size=6),
    "scomplex_val": st.lists(st.floats(width=32, allow_nan=False), max_size=6),
    "dcomplex_val": st.lists(st.floats(allow_nan=False), max_size=6),
    "string_val": st.lists(st.binary(max_size=40), max_size=6),
    "float8_val": st.binary(max_size=6),
    "tensor_content": st.binary(max_size=48),
}
_DTYPES = st.one_of(st.sampled_from(sorted(DTYPES)),
                    st.sampled_from([0, 20, 21, 101, 107, 9999, -1, 34]))
_DIMS = st.lists(st.one_of(st.integers(0, 4), st.integers(-2, 2**63 - 1)), max_size=5)


@st.composite
def tensors(draw: st.DrawFn, plausible: bool = False) -> TensorProto:
    """Mostly well-typed small tensors (`plausible`: only real dtypes and small dims)."""
    dtype = draw(st.sampled_from(sorted(DTYPES)) if plausible else _DTYPES)
    dims = draw(st.lists(st.integers(0, 4), max_size=3) if plausible else _DIMS)
    t = TensorProto(dtype=dtype)
    if draw(st.booleans()) or dims:
        t.tensor_shape.SetInParent()
        for size in dims:
            t.tensor_shape.dim.add(size=size)
        t.tensor_shape.unknown_rank = (not plausible) and draw(st.booleans())
    own = DTYPES[dtype].field if dtype in DTYPES else "float_val"
    fields = [own, own, "tensor_content"] if plausible else list(_VALUES)
    for name in draw(st.lists(st.sampled_from(fields), max_size=2, unique=True)):
        value = draw(_VALUES[name])
        if name == "tensor_content" and plausible and draw(st.booleans()):
            value = _content_for(dtype, dims, draw)
        if isinstance(value, bytes):
            setattr(t, name, value)
        else:
            getattr(t, name).extend(value)
    return t


def _content_for(dtype: int, dims: list[int], draw: st.DrawFn) -> bytes:
    """tensor_content of the right length (or a valid string encoding)."""
    n = math.prod(dims)
    if DTYPES[dtype].itemsize:
        byte = st.sampled_from([0, 1]) if dtype == 10 else st.integers(0, 255)
        return bytes(draw(st.lists(byte, min_size=n * DTYPES[dtype].itemsize,
                                   max_size=n * DTYPES[dtype].itemsize)))
    strings = draw(st.lists(st.binary(max_size=200), min_size=n, max_size=n))
    return b"".join(_varint(len(s)) for s in strings) + b"".join(strings)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


@st.composite
def predict_requests(draw: st.DrawFn, plausible: bool = False) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = draw(st.sampled_from(["m", "half_plus_two", ""]))
    names = draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3,
                          unique=True))
    for name in names:
        request.inputs[name].CopyFrom(draw(tensors(plausible)))
    return request.SerializeToString()


@st.composite
def example_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    method = draw(st.sampled_from(["Classify", "Regress", "MultiInference"]))
    request: Any = {"Classify": serving_pb2.ClassificationRequest,
                    "Regress": serving_pb2.RegressionRequest,
                    "MultiInference": serving_pb2.MultiInferenceRequest}[method]()
    if method == "MultiInference":
        request.tasks.add().model_spec.name = "m"
    else:
        request.model_spec.name = "m"
    kind = draw(st.sampled_from(["example_list", "example_list_with_context", None]))
    if kind is not None:
        target = getattr(request.input, kind)
        target.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            example = target.examples.add()
            for name in draw(st.lists(st.sampled_from("abc"), max_size=3, unique=True)):
                example.features.feature[name].bytes_list.value.extend(
                    draw(st.lists(st.binary(max_size=20), max_size=3)))
        if kind == "example_list_with_context" and draw(st.booleans()):
            target.context.features.feature["c"].float_list.value.extend(
                draw(st.lists(st.floats(width=32, allow_nan=False), max_size=4)))
    return method, request.SerializeToString()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few random byte edits: flips, inserts, deletes, truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and out:
            del out[at:at + draw(st.integers(1, 4))]
        elif op == "truncate":
            del out[at:]
    return bytes(out)


@st.composite
def any_request(draw: st.DrawFn) -> tuple[str, bytes]:
    """A method and bytes for it: random, valid-ish, or a mutation of a valid-ish one."""
    choice = draw(st.sampled_from(["random", "predict", "examples", "mutated"]))
    if choice == "random":
        return draw(st.sampled_from(list(INSPECTORS))), draw(st.binary(max_size=300))
    if choice == "predict":
        return "Predict", draw(predict_requests())
    if choice == "examples":
        return draw(example_requests())
    method, data = draw(st.one_of(st.tuples(st.just("Predict"), predict_requests()),
                                  example_requests()))
    return method, draw(mutated(data))


def inspect_and_limit(method: str, data: bytes) -> Facts | None:
    """Facts if accepted, None if refused; anything else escapes and fails the test."""
    try:
        facts = INSPECTORS[method](data)
        LIMITER.check(facts)
        return facts
    except Reject:
        return None


# -- pure properties --------------------------------------------------------------------

class TestInspectors:
    """The inspectors only ever return Facts or raise Reject."""

    @FUZZ
    @given(data=st.binary(max_size=400))
    def test_random_bytes(self, data: bytes) -> None:
        """Random bytes, through every inspector."""
        for method in INSPECTORS:
            inspect_and_limit(method, data)

    @FUZZ
    @given(request=any_request())
    def test_requests_and_mutations(self, request: tuple[str, bytes]) -> None:
        """Generated and mutated requests."""
        inspect_and_limit(*request)

    @FUZZ
    @given(data=predict_requests(plausible=True))
    def test_accepted_sizes(self, data: bytes) -> None:
        """Accepted tensors are sized from shape × dtype, and their values obey the policy."""
        try:
            facts = serving.predict(data)
        except Reject:
            event("refused")
            return
        event("accepted")
        request = serving_pb2.PredictRequest.FromString(data)
        for t in facts.tensors:
            proto = request.inputs[t.name]
            n = math.prod(d.size for d in proto.tensor_shape.dim)
            assert t.elements == n
            dtype = DTYPES[t.dtype]
            if dtype.itemsize:
                assert t.decoded_bytes == n * dtype.itemsize
            else:
                assert t.decoded_bytes == 24 * n + t.string_bytes
            if not proto.tensor_content:
                count = len(getattr(proto, dtype.field)) // (2 if dtype.pairs else 1)
                assert count in (0, 1, n) and count <= n


@pytest.mark.tf
class TestAgainstTensorFlow:
    """What tfgate accepts, TensorFlow's own parser (Tensor::FromProto) accepts too."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=predict_requests(plausible=True))
    def test_tf_parses_accepted(self, data: bytes) -> None:
        """tf.io.parse_tensor succeeds with the element count and string bytes tfgate saw."""
        tf = pytest.importorskip("tensorflow")
        try:
            facts = serving.predict(data)
        except Reject:
            return
        request = serving_pb2.PredictRequest.FromString(data)
        for t in facts.tensors:
            dtype = tf.dtypes.as_dtype(t.dtype)
            parsed = tf.io.parse_tensor(request.inputs[t.name].SerializeToString(), dtype)
            assert int(tf.size(parsed)) == t.elements
            if dtype == tf.string and t.elements:
                lengths = tf.strings.length(tf.reshape(parsed, [-1])).numpy()
                assert int(lengths.sum()) == t.string_bytes
                assert int(lengths.max()) == t.max_string_bytes


# -- over a real proxy ------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[grpc.Channel, Any,
                                                                     RecordingBackend]]:
    recorder = RecordingBackend()
    backend = grpc.server(futures.ThreadPoolExecutor(8), handlers=[recorder],
                          options=[("grpc.max_receive_message_length", -1)])
    port = backend.add_insecure_port("127.0.0.1:0")
    backend.start()
    root = tmp_path_factory.mktemp("fuzz")
    signing = SigningKey.generate("fuzz-1")
    jwks = write_jwks(root / "jwks.json", [signing])
    cfg = validate_config(config(f"127.0.0.1:{port}", jwks, pathlib.Path(root / "audit.log")))
    proxy = RunningServer(cfg).start()
    channel = grpc.insecure_channel(proxy.address)
    yield channel, token(signing), recorder
    channel.close()
    proxy.stop(0)
    backend.stop(0)


class TestLiveProxy:
    """Random, generated and mutated requests over real sockets."""

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(request=any_request())
    def test_every_call_ends_with_a_status(self, live: Any, request: tuple[str, bytes]) -> None:
        """Each call ends with a deliberate status; accepted bytes arrive unchanged."""
        channel, metadata, recorder = live
        method, data = request
        before = len(recorder.calls)
        try:
            channel.unary_unary(SERVICE + method)(data, timeout=10, metadata=metadata)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
        event(code.name)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.RESOURCE_EXHAUSTED)
        expected = inspect_and_limit(method, data) is not None
        assert (code is grpc.StatusCode.OK) == expected
        if code is grpc.StatusCode.OK:
            assert len(recorder.calls) == before + 1
            assert recorder.calls[-1].request == data
            assert recorder.calls[-1].method == SERVICE + method
        else:
            assert len(recorder.calls) == before
