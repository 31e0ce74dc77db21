"""End to end: the real tensorflow-serving-api client → tfgate (real TLS) → a backend
serving real TensorFlow SavedModels, which records every request it receives."""

from __future__ import annotations

import copy
import socket
import time

import grpc
import pytest

from tests.conftest import AUDIENCE, ISSUER, OPS, base_config, running_proxy
from tfgate_dev.devpki import mint_claims

pytestmark = pytest.mark.tf

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def predict_request(model="half_plus_two", values=(1.0, 2.0, 3.0), *, version=None,
                    label=None, signature=""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.float32))
    return request


def outputs(response) -> list[float]:
    return [round(float(v), 4) for v in tf.make_ndarray(response.outputs["y"])]


def examples_input(message, xs=(1.0, 4.0)):
    for x in xs:
        example = message.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)
    return message


@pytest.fixture(scope="module")
def proxy(pki, signing, backend):
    config = base_config(pki, signing, backend.address)
    config["policy"]["rules"].append(
        {"name": "ops-health", "principals": {"spiffe": [OPS]},
         "methods": ["/grpc.health.v1.Health/*"]})
    config["policy"]["rules"].append(
        {"name": "batch-dns", "principals": {"dns": ["*.tfgate.test"]},
         "methods": ["GetModelStatus"], "models": ["other_model"]})
    with running_proxy(config) as server:
        yield server


@pytest.fixture
def stub(pki, proxy):
    def make(client=pki.alice, service=prediction_service_pb2_grpc.PredictionServiceStub):
        return service(pki.channel(proxy.address, client))
    return make


def token(signing, **extra):
    claims = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc-1", scope="predict")
    claims.update(extra)
    return signing.key.token(claims)


def assert_refused(call, code, backend, fragment=""):
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert fragment in (info.value.details() or "")
    assert backend.records() == [], "a refused request reached the upstream"
    return info.value


class TestAllowed:
    def test_predict_returns_the_models_real_output(self, stub, clean_backend):
        """An allowed Predict reaches the model and returns its computed result."""
        request = predict_request()
        response = stub().Predict(request, timeout=10)
        assert outputs(response) == [3.5, 4.0, 4.5]  # latest is v2: 0.5x + 3
        (record,) = clean_backend.records()
        assert record["method"] == PREDICT
        assert record["request"] == request.SerializeToString()

    @pytest.mark.parametrize(("version", "label", "expected"), [
        (1, None, [2.5, 3.0, 3.5]), (2, None, [3.5, 4.0, 4.5]), (None, "stable", [2.5, 3.0, 3.5])])
    def test_versions_and_labels_reach_the_chosen_version(self, stub, backend, version, label,
                                                          expected):
        """Explicit versions and labels are forwarded and honoured upstream."""
        response = stub().Predict(predict_request(version=version, label=label), timeout=10)
        assert outputs(response) == expected

    def test_classify_and_regress(self, stub, backend):
        """Classify and Regress with tf.Example inputs work through the proxy."""
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "half_plus_two"
        regress.model_spec.signature_name = "regress_x"
        result = stub().Regress(examples_input(regress), timeout=10)
        assert [round(r.value, 3) for r in result.result.regressions] == [2.5, 4.0]
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "half_plus_two"
        classify.model_spec.signature_name = "classify_x"
        result = stub().Classify(examples_input(classify), timeout=10)
        assert [c.label for c in result.result.classifications[0].classes] == ["neg", "pos"]

    def test_metadata_and_status(self, stub, backend):
        """Read-only model methods are forwarded when granted."""
        meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta.model_spec.name = "half_plus_two"
        assert "signature_def" in stub().GetModelMetadata(meta, timeout=10).metadata
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "half_plus_two"
        models = stub(service=model_service_pb2_grpc.ModelServiceStub)
        assert models.GetModelStatus(status, timeout=10).model_version_status

    def test_dns_identity_rule(self, pki, stub, backend):
        """A certificate's DNS SAN can be what a rule matches."""
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "other_model"
        models = stub(pki.dns_client, model_service_pb2_grpc.ModelServiceStub)
        assert models.GetModelStatus(status, timeout=10).model_version_status

    def test_health_watch_is_answered_by_tfgate(self, pki, stub, backend):
        """Health is tfgate's own (proxy/health.py), not forwarded: Watch first answers
        SERVING (the backend is reachable) and stays open, where the backend would have
        sent three answers and ended (its x-test-watch-count hook is never reached)."""
        watch = stub(pki.ops, service=lambda ch: ch).unary_stream("/grpc.health.v1.Health/Watch")
        stream = watch(b"", timeout=10, metadata=[("x-test-watch-count", "3")])
        assert next(stream) == b"\x08\x01"
        stream.cancel()


class TestAuthentication:
    @pytest.mark.parametrize("client", [None, "mallory", "expired"])
    def test_bad_or_missing_client_certificate_fails_the_handshake(self, pki, proxy,
                                                                   clean_backend, client):
        """Without a certificate from our CA (or with an expired one) no call gets through."""
        channel = pki.channel(proxy.address, getattr(pki, client) if client else None)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert_refused(lambda: stub.Predict(predict_request(), timeout=5),
                       grpc.StatusCode.UNAVAILABLE, clean_backend)

    @pytest.mark.parametrize("bad", ["garbage", "expired", "wrong_aud", "rogue_key", "alg_none",
                                     "unknown_issuer"])
    def test_bad_tokens_are_unauthenticated(self, pki, signing, stub, clean_backend, bad):
        """A bad token fails the call even when the client certificate alone would pass."""
        now = time.time()
        tokens = {
            "garbage": "not.a.jwt",
            # {"exp": now - 3600, ...}
            "expired": token(signing, exp=int(now - 3600), iat=int(now - 7200),
                             nbf=int(now - 7200)),
            # {"aud": "someone-else", ...}
            "wrong_aud": token(signing, aud="someone-else"),
            # valid claims, signed by a key with our kid that is not in the JWKS
            "rogue_key": signing.rogue.token(mint_claims(issuer=ISSUER, audience=AUDIENCE,
                                                         subject="svc-1")),
            # header {"alg": "none"}, no signature
            "alg_none": _unsigned(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="x")),
            # {"iss": "https://evil.example", ...}
            "unknown_issuer": token(signing, iss="https://evil.example"),
        }
        metadata = [("authorization", f"Bearer {tokens[bad]}")]
        assert_refused(lambda: stub().Predict(predict_request(), metadata=metadata, timeout=5),
                       grpc.StatusCode.UNAUTHENTICATED, clean_backend)

    def test_two_authorization_headers_are_refused(self, signing, stub, clean_backend):
        """An ambiguous pair of tokens is refused rather than guessed at."""
        metadata = [("authorization", f"Bearer {token(signing)}"),
                    ("authorization", f"Bearer {token(signing)}")]
        assert_refused(lambda: stub().Predict(predict_request(), metadata=metadata, timeout=5),
                       grpc.StatusCode.UNAUTHENTICATED, clean_backend)

    def test_token_only_listener(self, pki, signing, backend):
        """With client_auth: none, a token is required and is enough."""
        config = base_config(pki, signing, backend.address)
        config["listen"]["tls"]["client_auth"] = "none"
        config["policy"]["rules"] = [r for r in config["policy"]["rules"]
                                     if r["name"] == "token-callers"]
        with running_proxy(config) as server:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(pki.channel(server.address))
            backend.clear_records()
            assert_refused(lambda: stub.Predict(predict_request(version=1), timeout=5),
                           grpc.StatusCode.UNAUTHENTICATED, backend)
            metadata = [("authorization", f"Bearer {token(signing)}")]
            response = stub.Predict(predict_request(version=1), metadata=metadata, timeout=10)
            assert outputs(response) == [2.5, 3.0, 3.5]


def _unsigned(claims) -> str:
    import base64
    import json

    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class TestAuthorization:
    def test_model_not_granted(self, pki, stub, clean_backend):
        """Bob may call other_model only."""
        assert_refused(lambda: stub(pki.bob).Predict(predict_request(), timeout=5),
                       grpc.StatusCode.PERMISSION_DENIED, clean_backend, "half_plus_two")

    def test_method_not_granted(self, pki, stub, clean_backend):
        """Bob may Predict but not read metadata."""
        meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        meta.model_spec.name = "other_model"
        assert_refused(lambda: stub(pki.bob).GetModelMetadata(meta, timeout=5),
                       grpc.StatusCode.PERMISSION_DENIED, clean_backend, "GetModelMetadata")

    def test_signature_not_granted(self, stub, clean_backend):
        """times_three is not among team A's signatures."""
        assert_refused(lambda: stub().Predict(predict_request(signature="times_three"),
                                              timeout=5),
                       grpc.StatusCode.PERMISSION_DENIED, clean_backend, "times_three")

    def test_empty_signature_means_serving_default(self, pki, stub, clean_backend):
        """An empty signature_name is checked as serving_default (granted to team A)."""
        stub().Predict(predict_request(signature=""), timeout=10)
        stub().Predict(predict_request(signature="serving_default"), timeout=10)
        assert len(clean_backend.records()) == 2

    def test_version_not_granted(self, pki, signing, stub, clean_backend):
        """The token rule grants version 1 only: version 2, labels and latest are refused."""
        metadata = [("authorization", f"Bearer {token(signing)}")]
        legacy = stub(pki.cn_client)
        for request in (predict_request(version=2), predict_request(label="canary"),
                        predict_request()):
            assert_refused(lambda r=request: legacy.Predict(r, metadata=metadata, timeout=5),
                           grpc.StatusCode.PERMISSION_DENIED, clean_backend, "version")
        assert outputs(legacy.Predict(predict_request(version=1), metadata=metadata,
                                      timeout=10)) == [2.5, 3.0, 3.5]

    def test_multi_inference_checks_every_task(self, stub, clean_backend):
        """One forbidden task refuses the whole MultiInference call."""
        request = examples_input(inference_pb2.MultiInferenceRequest())
        for signature in ("regress_x", "times_three"):
            task = request.tasks.add(method_name="tensorflow/serving/regress")
            task.model_spec.name = "half_plus_two"
            task.model_spec.signature_name = signature
        assert_refused(lambda: stub().MultiInference(request, timeout=5),
                       grpc.StatusCode.PERMISSION_DENIED, clean_backend, "times_three")
        del request.tasks[1]
        assert stub().MultiInference(request, timeout=10).results

    def test_reload_denied_unless_named(self, pki, stub, clean_backend):
        """HandleReloadConfigRequest is refused to team A and allowed to the ops identity."""
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.config.add(name="evil", base_path="/etc")
        assert_refused(
            lambda: stub(pki.alice, model_service_pb2_grpc.ModelServiceStub)
            .HandleReloadConfigRequest(request, timeout=5),
            grpc.StatusCode.PERMISSION_DENIED, clean_backend)
        stub(pki.ops, model_service_pb2_grpc.ModelServiceStub).HandleReloadConfigRequest(
            request, timeout=10)
        assert [r["method"] for r in clean_backend.records()] == [
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest"]

    @pytest.mark.parametrize(("path", "code"), [
        ("/tensorflow.ProfilerService/Profile", grpc.StatusCode.PERMISSION_DENIED),
        ("/tensorflow.serving.SessionService/SessionRun", grpc.StatusCode.PERMISSION_DENIED),
        ("/tensorflow.serving.PredictionService/predict", grpc.StatusCode.UNIMPLEMENTED),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
         grpc.StatusCode.UNIMPLEMENTED),
    ])
    def test_profiler_sessions_and_unknown_methods(self, pki, proxy, clean_backend, path, code):
        """Never-allowed and unknown methods are refused even for the admin identity."""
        channel = pki.channel(proxy.address, pki.ops)
        assert_refused(lambda: channel.unary_unary(path)(b"", timeout=5), code, clean_backend)


class TestForwarding:
    def test_token_stripped_and_identity_forwarded(self, pki, signing, stub, clean_backend):
        """The upstream never sees the token; it sees tfgate's identity header, not the
        client's forged copy, and other client metadata unchanged."""
        metadata = [("authorization", f"Bearer {token(signing)}"),
                    ("x-tfgate-principal", "spiffe://forged"), ("x-request-id", "abc-123"),
                    ("cookie", "session=secret")]
        stub(pki.cn_client).Predict(predict_request(version=1), metadata=metadata, timeout=10)
        (record,) = clean_backend.records()
        seen = dict(record["metadata"])
        assert "authorization" not in seen and "cookie" not in seen
        assert seen["x-request-id"] == "abc-123"
        assert seen["x-tfgate-principal"] == f"cn:legacy-client jwt:{ISSUER}#svc-1"
        assert [k for k, _ in record["metadata"]].count("x-tfgate-principal") == 1

    def test_upstream_status_details_and_trailers_pass_through(self, stub, clean_backend):
        """An upstream error keeps its code, details and trailing metadata."""
        with pytest.raises(grpc.RpcError) as info:
            stub().Predict(predict_request(), timeout=10,
                           metadata=[("x-test-fail", "FAILED_PRECONDITION")])
        err = info.value
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == "test failure requested"
        trailers = dict(err.trailing_metadata())
        assert trailers["x-test-trailer"] == "trailer-value"
        assert trailers["x-test-trailer-bin"] == b"\x00\x01binary"

    def test_success_metadata_passes_through(self, stub, backend):
        """Initial and trailing metadata of a successful call reach the client."""
        _, call = stub().Predict.with_call(predict_request(), timeout=10)
        assert ("x-backend-initial", "1") in tuple(call.initial_metadata())
        assert ("x-backend", "tfgate-testbackend") in tuple(call.trailing_metadata())

    def test_upstream_not_found_status(self, pki, stub, backend):
        """A model the policy allows but the server lacks gives the server's NOT_FOUND."""
        with pytest.raises(grpc.RpcError) as info:
            stub(pki.bob).Predict(predict_request("other_model", version=7), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

    def test_deadline_propagates(self, stub, clean_backend):
        """The upstream sees the client's deadline, and an expired one ends the call."""
        stub().Predict(predict_request(), timeout=5)
        (record,) = clean_backend.records()
        # gRPC computes the remaining time from wall clocks on both sides, so it can read
        # a few ms above the client's 5 s; without propagation it would be tfgate's
        # 30 s default deadline.
        assert 2.0 < record["time_remaining"] <= 5.5
        with pytest.raises(grpc.RpcError) as info:
            stub().Predict(predict_request(), timeout=0.5, metadata=[("x-test-sleep-ms", "5000")])
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def test_upstream_down_is_unavailable(self, pki, signing):
        """With nothing listening upstream the client gets UNAVAILABLE, not a hang."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"127.0.0.1:{s.getsockname()[1]}"
        config = base_config(pki, signing, dead)
        with running_proxy(copy.deepcopy(config)) as server:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(
                pki.channel(server.address, pki.alice))
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request(), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "127.0.0.1" not in info.value.details()
