"""End to end over real sockets: a plaintext loopback tfgate in front of a raw-bytes
recording backend (no TensorFlow). Every request pattern of docs/wire-facts.md §3 that can
reach Predict/Classify/Regress/MultiInference is refused, audited and counted, and the
backend receives nothing; accepted requests arrive byte for byte; the message cap holds
for gzip-compressed messages; rate and concurrency limits hold for real concurrent
clients (counts, not timings); deadlines are capped."""

from __future__ import annotations

import contextlib
import gzip
import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from proxy.config import validate_config
from proxy.errors import Reason
from proxy.pb import serving_pb2
from proxy.pb.tensor_pb2 import TensorProto
from proxy.runtime import Runtime
from proxy.server import RunningServer
from proxy.state import Shared, build_state
from tfgate_dev.devpki import SigningKey, mint_claims, write_jwks

ISSUER, AUDIENCE = "https://issuer.limits.test", "tfgate"
SERVICE = "/tensorflow.serving.PredictionService/"
FLOAT, STRING, COMPLEX64, INT64, BOOL, RESOURCE, VARIANT = 1, 7, 8, 9, 10, 20, 21
MiB = 2**20


class Recorded(NamedTuple):
    method: str
    request: bytes
    metadata: dict[str, Any]
    time_remaining: float | None


class RecordingBackend(grpc.GenericRpcHandler):
    """Answers every unary method with b"" after recording the exact bytes. While `gate`
    is set to an unset Event, calls wait on it; `entered` counts calls that arrived."""

    def __init__(self) -> None:
        self.calls: list[Recorded] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            remaining = context.time_remaining()
            with self._lock:
                self.calls.append(Recorded(method, request, dict(context.invocation_metadata()),
                                           remaining if remaining < 1e6 else None))
            self.entered.release()
            gate = self.gate
            if gate is not None:
                gate.wait(30)
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, RecordingBackend]]:
    recorder = RecordingBackend()
    server = grpc.server(futures.ThreadPoolExecutor(32), handlers=[recorder],
                         options=[("grpc.max_receive_message_length", -1)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", recorder
    server.stop(0)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigningKey, pathlib.Path]:
    signing = SigningKey.generate("limits-1")
    return signing, write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json", [signing])


def token(signing: SigningKey, subject: str = "alice") -> tuple[tuple[str, str], ...]:
    claims = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject=subject)
    return (("authorization", f"Bearer {signing.token(claims)}"),)


def config(address: str, jwks: pathlib.Path, audit: pathlib.Path, **overrides: Any) -> dict:
    cfg = {
        "listen": {"address": "127.0.0.1:0", "plaintext": True},
        "upstreams": {"u": {"address": address}},
        "authn": {"jwt": {"issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE],
                                       "algorithms": ["ES256"], "jwks_file": str(jwks)}]}},
        "policy": {"rules": [{"name": "all", "principals": {"iss": [ISSUER]},
                              "methods": ["Predict", "Classify", "Regress", "MultiInference"],
                              "models": ["*"]}]},
        "audit": {"output": str(audit)},
        "limits": {"models": [{"models": ["float_only"],
                               "tensors": {"allowed_dtypes": ["DT_FLOAT"]}}]},
    }
    for key_, value in overrides.items():
        section, _, name = key_.partition("__")
        if name:
            cfg[section] = {**cfg.get(section, {}), name: value}
        else:
            cfg[section] = value
    return cfg


@dataclass
class Proxy:
    server: RunningServer
    channel: grpc.Channel
    recorder: RecordingBackend
    signing: SigningKey
    audit: pathlib.Path

    def call(self, method: str, request: bytes, subject: str = "alice",
             timeout: float | None = 20.0, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
        try:
            self.channel.unary_unary(SERVICE + method)(
                request, timeout=timeout, metadata=token(self.signing, subject), **kwargs)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            return err.code(), err.details()  # type: ignore[attr-defined]

    def audit_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    @property
    def shared(self) -> Shared:
        return self.server.runtime.shared


@pytest.fixture
def make_proxy(upstream: tuple[str, RecordingBackend], key: tuple[SigningKey, pathlib.Path],
               tmp_path: pathlib.Path) -> Iterator[Callable[..., Proxy]]:
    address, recorder = upstream
    signing, jwks = key
    recorder.calls.clear()
    recorder.gate = None
    recorder.entered = threading.Semaphore(0)
    made = iter(range(100))
    with contextlib.ExitStack() as stack:
        def make(clock: Callable[[], float] | None = None, **overrides: Any) -> Proxy:
            audit = tmp_path / f"audit-{next(made)}.log"
            cfg = validate_config(config(address, jwks, audit, **overrides))
            state = build_state(cfg, clock=clock) if clock else build_state(cfg)
            server = RunningServer(cfg, Runtime(state)).start()
            stack.callback(server.stop, 0)
            channel = grpc.insecure_channel(server.address, options=[
                ("grpc.max_send_message_length", -1)])
            stack.callback(channel.close)
            return Proxy(server, channel, recorder, signing, audit)
        yield make
        recorder.gate = None


@pytest.fixture
def proxy(make_proxy: Callable[..., Proxy]) -> Proxy:
    return make_proxy()


# -- request builders -------------------------------------------------------------------

def tensor(dtype: int, dims: list[int] | None = None, **fields: Any) -> TensorProto:
    t = TensorProto(dtype=dtype, **fields)
    if dims is not None:
        t.tensor_shape.SetInParent()
        for size in dims:
            t.tensor_shape.dim.add(size=size)
    return t


def predict(t: TensorProto | None = None, model: str = "m", raw_tensor: bytes | None = None,
            **inputs: TensorProto) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in ({"x": t} if t is not None else inputs).items():
        request.inputs[name].CopyFrom(value)
    data = request.SerializeToString()
    if raw_tensor is not None:  # an input whose TensorProto bytes we write ourselves
        entry = b"\x0a\x01x\x12" + _VarintBytes(len(raw_tensor)) + raw_tensor
        data += b"\x12" + _VarintBytes(len(entry)) + entry
    return data


def unknown_rank(dims: list[int]) -> TensorProto:
    t = tensor(FLOAT, dims)
    t.tensor_shape.unknown_rank = True
    return t


def nested_variant(depth: int) -> TensorProto:
    inner = b""
    for _ in range(depth):
        t = TensorProto(dtype=VARIANT, variant_val=[inner]).SerializeToString()
        inner = b"\x1a" + _VarintBytes(len(t)) + t
    return tensor(VARIANT, [1], variant_val=[inner])


def context_input(message: Any, examples: int = 10_000, context: int = MiB // 2) -> Any:
    target = message.input.example_list_with_context
    target.context.features.feature["c"].bytes_list.value.append(b"x" * context)
    for _ in range(examples):
        target.examples.add()
    return message


def classify_amplified() -> bytes:
    request = serving_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    return context_input(request).SerializeToString()


def regress_amplified() -> bytes:
    request = serving_pb2.RegressionRequest()
    request.model_spec.name = "m"
    return context_input(request).SerializeToString()


def multi_inference(names: tuple[str, ...] = ("m",), versions: tuple[int | None, ...] = (None,),
                    amplified: bool = False) -> bytes:
    request = serving_pb2.MultiInferenceRequest()
    for i, (name, version) in enumerate(zip(names, versions, strict=True)):
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = f"sig{i}"  # the server refuses repeated signatures
        task.method_name = "tensorflow/serving/classify"
        if version is not None:
            task.model_spec.version.value = version
    if amplified:
        context_input(request)
    else:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    return request.SerializeToString()


INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
MALFORMED, LIMIT, NOT_ALLOWED = (Reason.MALFORMED_REQUEST, Reason.LIMIT_EXCEEDED,
                                 Reason.INPUT_NOT_ALLOWED)

# (id, method, request, status, reason, text in the message). Every §7 entry that can
# arrive as a Predict/Classify/Regress/MultiInference request; the graph, REST, profiler
# and distributed-runtime entries cannot reach these methods (see docs/limits.md).
CORPUS: list[tuple[str, str, Callable[[], bytes], grpc.StatusCode, Reason, str]] = [
    ("cve-2022-23571-dtype-9999-dim-0", "Predict", lambda: predict(tensor(9999, [0])),
     INVALID, MALFORMED, 'input "x": unknown dtype 9999'),
    ("cve-2022-23571-dtype-0", "Predict", lambda: predict(TensorProto()),
     INVALID, MALFORMED, "DT_INVALID is never accepted"),
    ("cve-2022-23571-dim-minus-5", "Predict", lambda: predict(tensor(FLOAT, [-5])),
     INVALID, MALFORMED, "negative dimension -5"),
    ("cve-2022-23564-resource", "Predict",
     lambda: predict(tensor(RESOURCE, [1], resource_handle_val=[b"\x0a\x03dev"])),
     INVALID, MALFORMED, "DT_RESOURCE is never accepted"),
    ("cve-2022-23588-ref-dtype-101", "Predict", lambda: predict(tensor(101, [1])),
     INVALID, MALFORMED, "DT_FLOAT_REF is never accepted"),
    ("cve-2022-23583-int64-into-float", "Predict",
     lambda: predict(tensor(INT64, [2], int64_val=[1, 2]), model="float_only"),
     INVALID, NOT_ALLOWED, "dtype DT_INT64 is not allowed"),
    ("cve-2021-29513-string-into-float", "Predict",
     lambda: predict(tensor(STRING, [1], string_val=[b"a"]), model="float_only"),
     INVALID, NOT_ALLOWED, "dtype DT_STRING is not allowed"),
    ("cve-2021-29513-variant", "Predict", lambda: predict(tensor(VARIANT, [1])),
     INVALID, MALFORMED, "DT_VARIANT is never accepted"),
    ("cve-2021-41197-2^32x2^32", "Predict", lambda: predict(tensor(FLOAT, [2**32, 2**32])),
     INVALID, MALFORMED, "element count overflows int64"),
    ("cve-2021-41197-2^62x4", "Predict", lambda: predict(tensor(FLOAT, [2**62, 4])),
     INVALID, MALFORMED, "element count overflows int64"),
    ("cve-2021-41198-tile-1e8-cubed", "Predict",
     lambda: predict(tensor(FLOAT, [10**8, 10**8, 10**8])),
     INVALID, MALFORMED, "element count overflows int64"),
    ("zero-dim-hides-overflow", "Predict", lambda: predict(tensor(FLOAT, [0, 2**62, 4])),
     INVALID, MALFORMED, "element count overflows int64"),
    ("cve-2021-29521-negative-shape", "Predict", lambda: predict(tensor(INT64, [-1])),
     INVALID, MALFORMED, "negative dimension -1"),
    ("cve-2021-41209-empty-tensor", "Predict", lambda: predict(tensor(FLOAT, [0, 3])),
     INVALID, NOT_ALLOWED, "empty tensor"),
    ("cve-2021-29516-ragged-variant", "Predict", lambda: predict(nested_variant(3)),
     INVALID, MALFORMED, "DT_VARIANT is never accepted"),
    ("scalar-broadcast-4GB", "Predict", lambda: predict(tensor(FLOAT, [10**9], float_val=[1])),
     EXHAUSTED, LIMIT, "1000000000 elements > max 16777216 (max_elements)"),
    ("string-broadcast-1e5x1MiB", "Predict",
     lambda: predict(tensor(STRING, [10**5], string_val=[b"s" * MiB])),
     EXHAUSTED, LIMIT, "(max_tensor_bytes)"),
    ("string-content-1-byte-1e9", "Predict",
     lambda: predict(tensor(STRING, [10**9], tensor_content=b"\x01")),
     INVALID, MALFORMED, "cannot hold 1000000000 string lengths"),
    ("content-length-mismatch", "Predict",
     lambda: predict(tensor(FLOAT, [4], tensor_content=b"\0" * 15)),
     INVALID, MALFORMED, "tensor_content has 15 bytes, expected 4 elements × 4 = 16"),
    ("content-and-float-val", "Predict",
     lambda: predict(tensor(FLOAT, [1], tensor_content=b"\0" * 4, float_val=[1])),
     INVALID, MALFORMED, "tensor_content and float_val are both set"),
    ("float-with-int64-val", "Predict", lambda: predict(tensor(FLOAT, [1], int64_val=[1])),
     INVALID, MALFORMED, "int64_val does not belong to dtype DT_FLOAT"),
    ("count-greater-than-n", "Predict", lambda: predict(tensor(FLOAT, [2], float_val=[1, 2, 3])),
     INVALID, MALFORMED, "3 values > 2 elements"),
    ("odd-scomplex-val", "Predict",
     lambda: predict(tensor(COMPLEX64, [1], scomplex_val=[1, 2, 3])),
     INVALID, MALFORMED, "odd number of values"),
    ("unknown-rank-no-dims", "Predict", lambda: predict(unknown_rank([])),
     INVALID, MALFORMED, "unknown_rank"),
    ("unknown-rank-with-dims", "Predict", lambda: predict(unknown_rank([2, 2])),
     INVALID, MALFORMED, "unknown_rank"),
    ("rank-255", "Predict", lambda: predict(tensor(FLOAT, [1] * 255)),
     INVALID, MALFORMED, "rank 255 > 254"),
    ("dim-minus-1", "Predict", lambda: predict(tensor(FLOAT, [-1])),
     INVALID, MALFORMED, "negative dimension -1"),
    ("variant-nested-1000", "Predict", lambda: predict(nested_variant(1000)),
     INVALID, MALFORMED, "DT_VARIANT is never accepted"),
    ("bool-content-not-0-1", "Predict",
     lambda: predict(tensor(BOOL, [2], tensor_content=b"\x01\x07")),
     INVALID, MALFORMED, "bool tensor_content holds bytes other than 0 and 1"),
    ("unknown-field-in-tensor", "Predict",
     lambda: predict(raw_tensor=tensor(FLOAT, [1]).SerializeToString() + b"\xa0\x01\x01"),
     INVALID, MALFORMED, "unknown field number 20"),
    ("context-amplification-classify", "Classify", classify_amplified,
     EXHAUSTED, LIMIT, "input: 10000 examples × "),
    ("context-amplification-regress", "Regress", regress_amplified,
     EXHAUSTED, LIMIT, "(max_context_copy_bytes)"),
    ("context-amplification-multi", "MultiInference", lambda: multi_inference(amplified=True),
     EXHAUSTED, LIMIT, "(max_context_copy_bytes)"),
    ("multi-inference-different-names", "MultiInference",
     lambda: multi_inference(("m", "other"), (None, None)),
     INVALID, MALFORMED, "tasks[1] addresses a different model or version"),
    ("multi-inference-different-versions", "MultiInference",
     lambda: multi_inference(("m", "m"), (1, 2)),
     INVALID, MALFORMED, "tasks[1] addresses a different model or version"),
    ("empty-classify-input", "Classify",
     lambda: serving_pb2.ClassificationRequest(model_spec={"name": "m"}).SerializeToString(),
     INVALID, MALFORMED, "input is empty"),
]


class TestCorpus:
    """docs/wire-facts.md §3: every pattern is refused before it reaches the backend."""

    @pytest.mark.parametrize("method, build, code, reason, text",
                             [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
    def test_refused(self, proxy: Proxy, method: str, build: Callable[[], bytes],
                     code: grpc.StatusCode, reason: Reason, text: str) -> None:
        """Refused with the right status and message, audited, counted; nothing upstream."""
        got_code, details = proxy.call(method, build())
        assert (got_code, text in details) == (code, True), details
        assert proxy.recorder.calls == []
        events = proxy.audit_events()
        assert [(e["decision"], e["reason"], e["status"]) for e in events] == [
            ("deny", reason.value, code.name)]
        assert proxy.shared.outcomes.snapshot() == {reason.value: 1}


class TestAccepted:
    """What passes arrives upstream byte for byte."""

    @pytest.mark.parametrize("method, request_bytes", [
        ("Predict", predict(tensor(FLOAT, [2, 3], float_val=[1.5]))),
        ("Predict", predict(a=tensor(STRING, [2], string_val=[b"x", b"yz"]),
                            b=tensor(BOOL, [3], tensor_content=b"\1\0\1"),
                            c=tensor(INT64, [16 * MiB // 8], tensor_content=b"\0" * 16 * MiB))),
        ("Predict", predict(tensor(FLOAT, [16 * MiB], float_val=[2.0]))),  # exactly max_elements
        ("Classify", serving_pb2.ClassificationRequest(
            model_spec={"name": "m"}, input={"example_list": {"examples": [{}, {}]}}
        ).SerializeToString()),
        ("MultiInference", multi_inference(("m", "m"), (3, 3))),
    ], ids=["broadcast", "mixed", "at-max-elements", "classify", "multi"])
    def test_forwarded_unchanged(self, proxy: Proxy, method: str, request_bytes: bytes) -> None:
        """OK, and the backend saw exactly the bytes sent."""
        assert proxy.call(method, request_bytes) == (grpc.StatusCode.OK, "")
        assert [(c.method, c.request) for c in proxy.recorder.calls] == [
            (SERVICE + method, request_bytes)]

    def test_one_over_max_elements(self, proxy: Proxy) -> None:
        """One element over the default max_elements is refused."""
        code, details = proxy.call("Predict", predict(tensor(FLOAT, [16 * MiB + 1], float_val=[2])))
        assert code is EXHAUSTED and "16777217 elements > max 16777216" in details
        assert proxy.recorder.calls == []


def _predict_of_size(size: int) -> bytes:
    """A valid PredictRequest of exactly `size` bytes (uint8 tensor_content)."""
    for content in range(size - 40, size):
        data = predict(tensor(4, [content], tensor_content=b"\0" * content))
        if len(data) == size:
            return data
    raise AssertionError(f"no request of exactly {size} bytes")


class TestMessageCap:
    """listen.max_message_bytes: exactly at it passes; over it is RESOURCE_EXHAUSTED,
    also when gzip hides the size (grpcio checks the decompressed size)."""

    CAP = MiB

    def test_boundary(self, make_proxy: Callable[..., Proxy]) -> None:
        """CAP bytes pass; CAP + 1 bytes are refused by gRPC and never forwarded."""
        proxy = make_proxy(listen={"address": "127.0.0.1:0", "plaintext": True,
                                   "max_message_bytes": self.CAP})
        assert proxy.call("Predict", _predict_of_size(self.CAP))[0] is grpc.StatusCode.OK
        code, details = proxy.call("Predict", _predict_of_size(self.CAP + 1))
        assert code is EXHAUSTED and "larger than max" in details
        assert len(proxy.recorder.calls) == 1
        # What docs/limits.md says of it: tfgate's handler saw the headers, then the call
        # ended without its message, so the audit names malformed-request (not gRPC's code).
        refused = proxy.audit_events()[-1]
        assert (refused["reason"], refused["messages_in"]) == ("malformed-request", 0)

    @pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
    def test_compressed(self, make_proxy: Callable[..., Proxy],
                        compression: grpc.Compression) -> None:
        """§7: a 16 MiB message that compresses to ~16 KiB (far below the 1 MiB cap) is
        refused on its decompressed size. (A 1 GiB one was checked by hand: the server's
        peak memory did not grow; grpcio stops inflating at the cap.)"""
        proxy = make_proxy(listen={"address": "127.0.0.1:0", "plaintext": True,
                                   "max_message_bytes": self.CAP})
        request = predict(tensor(4, [16 * MiB], tensor_content=bytes(16 * MiB)))
        assert len(gzip.compress(request)) < self.CAP // 16  # it really is small on the wire
        code, details = proxy.call("Predict", request, compression=compression)
        assert (code, details) == (EXHAUSTED, "Decompressed message larger than max")
        assert proxy.recorder.calls == []

    def test_compressed_within_cap_passes(self, make_proxy: Callable[..., Proxy]) -> None:
        """Compression itself is fine: the decompressed bytes go upstream unchanged."""
        proxy = make_proxy()
        request = predict(tensor(4, [MiB], tensor_content=bytes(MiB)))
        assert proxy.call("Predict", request, compression=grpc.Compression.Gzip)[0] is (
            grpc.StatusCode.OK)
        assert proxy.recorder.calls[0].request == request


def _concurrently(count: int, fn: Callable[[int], Any]) -> list[Any]:
    with futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(fn, range(count)))


class TestRate:
    """Token bucket per principal, with real concurrent clients and a frozen clock."""

    def test_burst(self, make_proxy: Callable[..., Proxy]) -> None:
        """With burst 3 and no time passing, exactly 3 of 8 concurrent calls pass."""
        proxy = make_proxy(clock=lambda: 1000.0, limits={"rate": {"rate": 1, "burst": 3}})
        request = predict(tensor(FLOAT, [1]))
        codes = _concurrently(8, lambda _: proxy.call("Predict", request)[0])
        assert sorted(c.name for c in codes) == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 5
        assert len(proxy.recorder.calls) == 3
        assert proxy.shared.limits.hits.snapshot() == {"rate": 5}
        assert proxy.shared.outcomes.snapshot() == {"allowed": 3, "rate-limited": 5}
        assert proxy.call("Predict", request, subject="bob")[0] is grpc.StatusCode.OK

    def test_refill(self, make_proxy: Callable[..., Proxy]) -> None:
        """After 1/rate seconds of the injected clock one more call passes."""
        now = [0.0]
        proxy = make_proxy(clock=lambda: now[0], limits={"rate": {"rate": 2, "burst": 1}})
        request = predict(tensor(FLOAT, [1]))
        assert proxy.call("Predict", request)[0] is grpc.StatusCode.OK
        assert proxy.call("Predict", request)[0] is EXHAUSTED
        now[0] += 0.5
        assert proxy.call("Predict", request)[0] is grpc.StatusCode.OK


class TestConcurrency:
    """Slots per principal and in total, held while the backend works, freed at the end."""

    def test_limits(self, make_proxy: Callable[..., Proxy]) -> None:
        """alice gets 2 slots, the total is 3; excess is refused at once, not queued."""
        proxy = make_proxy(limits={"concurrency": {"per_principal": 2, "total": 3}})
        gate = threading.Event()
        proxy.recorder.gate = gate
        request = predict(tensor(FLOAT, [1]))
        with futures.ThreadPoolExecutor(4) as pool:
            held = [pool.submit(proxy.call, "Predict", request) for _ in range(2)]
            for _ in range(2):
                assert proxy.recorder.entered.acquire(timeout=10)
            code, details = proxy.call("Predict", request)  # gate still shut: no queueing
            assert code is EXHAUSTED and "2 calls in flight for this principal" in details
            bob = pool.submit(proxy.call, "Predict", request, "bob")
            assert proxy.recorder.entered.acquire(timeout=10)
            code, details = proxy.call("Predict", request, subject="carol")
            assert code is EXHAUSTED and "3 calls in flight (total)" in details
            assert proxy.shared.limits.snapshot()[0] == 3
            gate.set()
            assert [f.result()[0] for f in (*held, bob)] == [grpc.StatusCode.OK] * 3
        assert proxy.shared.limits.snapshot() == (0, {})
        assert proxy.shared.limits.hits.snapshot() == {"concurrency.per_principal": 1,
                                                "concurrency.total": 1}
        assert proxy.call("Predict", request)[0] is grpc.StatusCode.OK
        assert len(proxy.recorder.calls) == 4

    def test_slot_freed_after_refusal_and_error(self, make_proxy: Callable[..., Proxy]) -> None:
        """Refused calls and finished calls leave no slot behind."""
        proxy = make_proxy(limits={"concurrency": {"per_principal": 1}})
        for _ in range(3):
            assert proxy.call("Predict", predict(tensor(FLOAT, [-1])))[0] is INVALID
            assert proxy.call("Predict", predict(tensor(FLOAT, [1])))[0] is grpc.StatusCode.OK
        assert proxy.shared.limits.snapshot() == (0, {})


class TestDeadline:
    """Client deadlines above max_s are lowered; calls without one get default_s."""

    def test_default_and_cap(self, make_proxy: Callable[..., Proxy]) -> None:
        """Upstream sees <= default_s without a deadline and <= max_s for a long one."""
        proxy = make_proxy(limits={"deadline": {"max_s": 20, "default_s": 10}})
        request = predict(tensor(FLOAT, [1]))
        assert proxy.call("Predict", request, timeout=None)[0] is grpc.StatusCode.OK
        assert proxy.call("Predict", request, timeout=3600)[0] is grpc.StatusCode.OK
        assert proxy.call("Predict", request, timeout=5)[0] is grpc.StatusCode.OK
        first, second, third = (c.time_remaining for c in proxy.recorder.calls)
        # gRPC encodes timeouts coarsely (grpc-timeout rounds up), hence the +0.5 s
        assert first is not None and 5 < first <= 10.5
        assert second is not None and 15 < second <= 20.5
        assert third is not None and third <= 5.5
