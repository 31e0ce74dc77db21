"""REST front end to end: tfgate's Service (gRPC and REST fronts, the real admission path)
in front of the TensorFlow-backed backend's REST port (native) or gRPC port (translate),
called with httpx over real mTLS. Answers match ModelServer's REST API in both modes; every
ACL dimension is enforced; hostile bodies are refused before upstream (the backend records
nothing); every call leaves one audit line shaped like a gRPC call's."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.pb import serving_pb2
from tests import resthelp as rh
from tests.conftest import TEAM_B, base_config

pytestmark = pytest.mark.tf
PARITY = {"name": "parity", "principals": {"cn": ["legacy-client"]},
          "methods": ["Predict", "Classify", "Regress", "GetModelMetadata", "GetModelStatus"],
          "models": ["*"]}


# Team B may ask for the status of half_plus_two's latest version only.
STATUS_LATEST = {"name": "team-b-status", "principals": {"spiffe": [TEAM_B]},
                 "methods": ["GetModelStatus"], "models": ["half_plus_two"],
                 "versions": ["latest"]}


class Proxy:
    def __init__(self, service: Any, mode: str, audit: Any) -> None:
        self.service, self.mode, self.audit = service, mode, audit
        self.port = rh.rest_port(service)

    def events(self) -> list[dict[str, Any]]:
        return rh.audit_events(self.audit, 0, timeout=0)

    def new_events(self, before: int, count: int = 1) -> list[dict[str, Any]]:
        return rh.audit_events(self.audit, before + count)[before:]


@pytest.fixture(scope="module", params=["native", "translate"])
def proxy(request, pki, signing, rest_backend, tmp_path_factory) -> Iterator[Proxy]:
    audit = tmp_path_factory.mktemp("audit") / f"{request.param}.jsonl"
    cfg = rh.rest_config(base_config(pki, signing, rest_backend.address), rest_backend,
                         request.param, audit)
    cfg["policy"]["rules"] += [PARITY, STATUS_LATEST]
    with rh.running_service(cfg) as service:
        yield Proxy(service, request.param, audit)


@pytest.fixture
def clean(rest_backend):
    rest_backend.clear_records()
    return rest_backend


CALLS = [
    ("POST", "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}),
    ("POST", "/v1/models/half_plus_two/versions/1:predict", {"inputs": {"x": [[1.0], [0.1]]}}),
    ("POST", "/v1/models/half_plus_two/labels/canary:predict",
     {"signature_name": "times_three", "instances": [{"x": 0.3}, {"x": -2}]}),
    ("POST", "/v1/models/half_plus_two:regress",
     {"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": 4.0}]}),
    ("POST", "/v1/models/half_plus_two:classify",
     {"signature_name": "classify_x", "context": {"x": 2.0}, "examples": [{}, {"x": -1.0}]}),
    ("GET", "/v1/models/half_plus_two/versions/2", None),
    ("GET", "/v1/models/other_model/metadata", None),
    ("POST", "/v1/models/missing:predict", {"instances": [1.0]}),
    ("POST", "/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}),
]


@pytest.mark.parametrize("method, path, payload", CALLS)
def test_same_answer_as_modelserver_rest(proxy, pki, clean, method, path, payload) -> None:
    """Through tfgate, native or translated, the client gets what ModelServer's REST port
    answers (status and JSON), and the call reached the backend (translated, a signature
    the model does not have is refused from the cached signatures, as ModelServer does)."""
    with rh.client(pki, proxy.port, pki.cn_client) as c:
        got = c.request(method, path, json=payload)
    cached = proxy.mode == "translate" and payload and payload.get("signature_name") == "nope"
    assert cached or clean.records(), "nothing reached the backend"
    want = rh.direct(clean, method, path, payload)
    assert got.status_code == want.status_code, got.text
    if want.status_code == 200:
        assert got.json() == want.json()
    else:
        assert set(got.json()) == {"error"}


def test_allowed_predict_returns_the_models_output(proxy, pki, clean) -> None:
    before = len(proxy.events())
    with rh.client(pki, proxy.port) as c:
        r = c.post(rh.PREDICT_PATH, json={"instances": [1.0, 2.0, 3.0]})
    assert r.status_code == 200 and r.json() == {"predictions": [3.5, 4.0, 4.5]}  # v2: x/2+3
    (event,) = proxy.new_events(before)
    assert (event["decision"], event["reason"], event["status"], event["http_status"]) == (
        "allow", "allowed", "OK", 200)
    assert event["method"] == "/tensorflow.serving.PredictionService/Predict"
    assert (event["model"], event["version"], event["signature"], event["rule"]) == (
        "half_plus_two", "latest", "serving_default", "team-a-predict")
    assert event["principal"] == "spiffe://tfgate.test/team-a/alice"
    assert event["peer"].startswith("ipv4:127.0.0.1:") and event["upstream"] == "serving"
    assert event["bytes_in"] == len(r.request.content) and event["bytes_out"] == len(r.content)


ACL = [  # who, path, body, reason
    ("alice", "/v1/models/other_model:predict", {"instances": [1.0]}, "model-not-allowed"),
    ("alice", "/v1/models/half_plus_two/versions/3:predict", {"instances": [1.0]},
     "version-not-allowed"),
    ("alice", "/v1/models/half_plus_two/labels/beta:predict", {"instances": [1.0]},
     "version-not-allowed"),
    ("alice", "/v1/models/half_plus_two:predict",
     {"signature_name": "times_three", "instances": [1.0]}, "signature-not-allowed"),
    ("bob", "/v1/models/other_model:regress", {"examples": [{"x": 1.0}]}, "method-not-allowed"),
    ("bob", "/v1/models/other_model/metadata", None, "method-not-allowed"),
    ("dns_client", rh.PREDICT_PATH, {"instances": [1.0]}, "no-rule-for-principal"),
]


@pytest.mark.parametrize("who, path, payload, reason", ACL, ids=[a[3] + ":" + a[1] for a in ACL])
def test_every_acl_dimension(proxy, pki, clean, who, path, payload, reason) -> None:
    """403 in ModelServer's error shape, the reason audited, nothing forwarded."""
    before = len(proxy.events())
    with rh.client(pki, proxy.port, who) as c:
        r = c.request("POST" if payload else "GET", path, json=payload)
    assert r.status_code == 403 and set(r.json()) == {"error"}, r.text
    (event,) = proxy.new_events(before)
    assert (event["reason"], event["decision"], event["http_status"]) == (reason, "deny", 403)
    assert event["status"] == "PERMISSION_DENIED" and event["detail"] == r.json()["error"]
    assert clean.records() == []


def test_metadata_and_status_show_only_what_the_caller_may_see(proxy, pki, clean) -> None:
    """As on the gRPC front (test_e2e_responses.py): metadata lists only the signatures
    the caller may call (team A: all but times_three), a status without a version only
    the versions it may ask about (team B: `latest`, so version 2 alone)."""
    with rh.client(pki, proxy.port, pki.alice) as c:
        metadata = c.get("/v1/models/half_plus_two/metadata")
    with rh.client(pki, proxy.port, pki.bob) as c:
        status = c.get("/v1/models/half_plus_two")
    assert metadata.status_code == 200 and status.status_code == 200, (metadata, status)
    signatures = metadata.json()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "regress_x", "classify_x"}
    assert [v["version"] for v in status.json()["model_version_status"]] == ["2"]
    everything = rh.direct(clean, "GET", "/v1/models/half_plus_two/metadata").json()
    assert "times_three" in everything["metadata"]["signature_def"]["signature_def"]
    assert len(rh.direct(clean, "GET", "/v1/models/half_plus_two").json()[
        "model_version_status"]) == 2


def hostile_bodies() -> list[tuple[str, bytes, dict[str, str], int, str]]:
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces, ~64 KiB on the wire
    deep = b'{"instances": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
    blob = base64.b64encode(b"\0" * (2 << 20))
    return [
        ("gzip bomb", bomb, {"Content-Encoding": "gzip"}, 413, "max_body_bytes"),
        ("deep JSON", deep, {}, 400, "max_depth"),
        ("duplicate keys", b'{"signature_name": "serving_default", "signature_name": '
                           b'"times_three", "instances": [1.0]}', {}, 400, "more than once"),
        ("huge base64", b'{"instances": [{"b64": "' + blob + b'"}]}', {}, 413,
         "max_string_element_bytes"),
        ("bad base64", b'{"instances": [{"b64": "A"}]}', {}, 400, "base64"),
        ("ragged rows", b'{"instances": [[1.0, 2.0], [3.0]]}', {}, 400, "ragged"),
        ("trailing bytes", b'{"instances": [1.0]} {"instances": [2.0]}', {}, 400, "Parse"),
        ("invalid UTF-8", b'{"instances": ["\xff"]}', {}, 400, "UTF-8"),
        ("too big a number", b'{"instances": [1e400]}', {}, 400, "too big"),
        ("long number", b'{"instances": [1' + b"0" * 500 + b"]}", {}, 400, "max_number_chars"),
        ("too many dims", b'{"instances": ' + b"[" * 9 + b"1" + b"]" * 9 + b"}", {}, 413,
         "max_dims"),
        ("unsupported encoding", b'{"instances": [1.0]}', {"Content-Encoding": "br"}, 415,
         "Content-Encoding"),
        ("over the wire cap", b"{}", {"Content-Length": str(17 << 20)}, 413, "max_wire_bytes"),
    ]


@pytest.mark.parametrize("name, data, headers, status, words", hostile_bodies(),
                         ids=[c[0] for c in hostile_bodies()])
def test_hostile_bodies_refused_before_upstream(proxy, pki, clean, name, data, headers,
                                                status, words) -> None:
    before = len(proxy.events())
    if "Content-Length" in headers:  # a length httpx would not send: a raw request
        with rh.raw_tls(pki, proxy.port, pki.alice) as sock:
            sock.sendall(f"POST {rh.PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         f"{headers['Content-Length']}\r\n\r\n".encode() + data)
            code, _, text = rh.read_response(sock)
    else:
        with rh.client(pki, proxy.port) as c:
            r = c.post(rh.PREDICT_PATH, content=data,
                       headers={"Content-Type": "application/json", **headers})
        code, text = r.status_code, r.content
    assert code == status, text
    assert words in json.loads(text)["error"]
    (event,) = proxy.new_events(before)
    assert event["decision"] == "deny" and event["http_status"] == status
    assert event["upstream"] is None
    assert clean.records() == []


def test_unknown_path_and_method_are_refused_and_audited(proxy, pki, clean) -> None:
    before = len(proxy.events())
    with rh.client(pki, proxy.port) as c:
        missing = c.post("/v1/models/half_plus_two:explode", json={})
        put = c.put(rh.PREDICT_PATH, json={"instances": [1.0]})
    assert missing.status_code == 404 and put.status_code == 405
    first, second = proxy.new_events(before, 2)
    assert first["reason"] == second["reason"] == "unknown-method"
    assert first["principal"] == "spiffe://tfgate.test/team-a/alice"  # authenticated first
    assert first["method"] == "REST POST /v1/models/half_plus_two:explode"
    assert clean.records() == []


def test_no_client_certificate_no_connection(proxy, pki, clean) -> None:
    """mTLS: the handshake fails (with TLS 1.3 the client learns it at its first read)."""
    before = len(proxy.events())
    with rh.client(pki, proxy.port, None) as c, pytest.raises(httpx.TransportError):
        c.post(rh.PREDICT_PATH, json={"instances": [1.0]})
    with rh.client(pki, proxy.port, pki.mallory) as c, pytest.raises(httpx.TransportError):
        c.post(rh.PREDICT_PATH, json={"instances": [1.0]})  # a certificate of another CA
    assert clean.records() == [] and len(proxy.events()) == before  # not calls: no audit


def test_audit_lines_have_the_grpc_shape(proxy, pki, clean) -> None:
    """A REST call and a gRPC call through the same tfgate leave the same fields (the REST
    one adds its HTTP status)."""
    before = len(proxy.events())
    with rh.client(pki, proxy.port) as c:
        assert c.post(rh.PREDICT_PATH, json={"instances": [1.0]}).status_code == 200
    request = serving_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].dtype = 1
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(1.0)
    with pki.channel(proxy.service.address, pki.alice) as channel:
        channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
            request.SerializeToString(), timeout=30)
    rest, grpc_call = proxy.new_events(before, 2)
    assert set(rest) == set(grpc_call) | {"http_status"}
    for key in ("method", "principal", "model", "version", "signature", "decision", "reason",
                "rule", "status", "upstream"):
        assert rest[key] == grpc_call[key], key


def test_identity_forwarded_and_credentials_stripped(proxy, pki, signing, clean) -> None:
    from tests.conftest import AUDIENCE, ISSUER
    from tfgate_dev.devpki import mint_claims

    token = signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc",
                                          scope="predict"))
    with rh.client(pki, proxy.port) as c:
        r = c.post("/v1/models/half_plus_two/versions/1:predict", json={"instances": [1.0]},
                   headers={"Authorization": f"Bearer {token}", "X-Tfgate-Principal": "forged",
                            "X_Tfgate_Principal": "forged", "X-Request-Id": "abc"})
    assert r.status_code == 200, r.text
    # (translate mode may first fetch GetModelMetadata, a PredictionService method too)
    (record,) = [r for r in clean.records() if r["method"].endswith(("/Predict", ":predict"))]
    metadata = dict(record["metadata"])
    assert "authorization" not in metadata
    assert "x_tfgate_principal" not in metadata  # an upstream may read it as the dash key
    assert metadata["x-tfgate-principal"] == (
        "spiffe://tfgate.test/team-a/alice jwt:https://issuer.tfgate.test#svc")
    assert metadata["x-request-id"] == "abc"


def test_upstream_errors_pass_through_as_modelserver_says(proxy, pki, clean) -> None:
    """An error the model server answers is the upstream's, audited as upstream-status."""
    before = len(proxy.events())
    with rh.client(pki, proxy.port, pki.cn_client) as c:
        r = c.post("/v1/models/missing:predict", json={"instances": [1.0]})
    assert r.status_code == 404 and "error" in r.json()
    (event,) = proxy.new_events(before)
    assert (event["reason"], event["decision"], event["http_status"]) == (
        "upstream-status", "allow", 404)
    assert event["status"] == "NOT_FOUND"


def test_translation_equals_modelserver_rest_handler(rest_backend) -> None:
    """The PredictRequest tfgate builds holds the tensors the backend's independent
    ModelServer-style REST handler builds from the same JSON (real TF protos and numpy)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import predict_pb2

    from proxy.rest import body, facts, translate_in
    from proxy.rest.paths import route
    from tfgate_dev.testbackend import rest as modelserver_rest

    sig = meta_graph_pb2.SignatureDef()
    for name, dtype in {"f": tf.float32, "i": tf.int32, "s": tf.string, "b": tf.bool,
                        "u": tf.uint64, "d": tf.float64}.items():
        sig.inputs[name].dtype = dtype.as_datatype_enum
    doc = {"instances": [{"f": [0.1, 2], "i": [1, -2], "s": {"b64": "AAE="}, "b": True,
                          "u": 2**64 - 1, "d": 1e-300},
                         {"f": [float("nan"), 3.5], "i": [7, 8], "s": "é", "b": False,
                          "u": 0, "d": -0.0}]}
    raw = json.dumps(doc).encode()
    target = route("POST", "/v1/models/m:predict").target
    parsed = facts.predict_body(body.parse_json(raw))
    dtypes = {n: i.dtype for n, i in sig.inputs.items()}
    ours = predict_pb2.PredictRequest.FromString(
        translate_in.predict_request(target, parsed, dtypes))
    theirs, row = modelserver_rest.predict_request(json.loads(raw), sig.inputs)
    assert row and set(ours.inputs) == set(theirs.inputs)
    for name in theirs.inputs:
        a, b = tf.make_ndarray(ours.inputs[name]), tf.make_ndarray(theirs.inputs[name])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
        else:
            assert a.tolist() == b.tolist(), name
