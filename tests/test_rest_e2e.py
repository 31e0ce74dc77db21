"""REST front end to end: httpx over real TLS with a client certificate, the prototype
listener, and the TensorFlow-backed backend's REST port (native) or gRPC port (translated).
Refused requests must leave no record at the backend."""

from __future__ import annotations

import base64
import gzip
import json
import ssl
from collections.abc import Iterator

import httpx
import pytest

from proxy.call import Facts
from proxy.rest.background import RestInThread
from proxy.rest.server import Decision, PrincipalInputs, server_tls
from tfgate_dev.testbackend.rest_process import start_rest_backend

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def rest_backend():
    with start_rest_backend() as process:
        yield process


class Seen:
    """An admit stub that records what it was given and allows everything."""

    def __init__(self) -> None:
        self.calls: list[tuple[PrincipalInputs, str, Facts]] = []

    def __call__(self, who: PrincipalInputs, method: str, facts: Facts) -> Decision:
        self.calls.append((who, method, facts))
        return Decision()


@pytest.fixture(params=["native", "translated"])
def front(request, pki, rest_backend) -> Iterator[tuple[RestInThread, Seen]]:
    tls = server_tls(str(pki.server.cert_path), str(pki.server.key_path),
                     str(pki.ca.ca.cert_path))
    seen = Seen()
    where = ({"rest_upstream": rest_backend.rest_address} if request.param == "native"
             else {"grpc_upstream": rest_backend.address})
    with RestInThread(seen, tls, **where) as running:
        rest_backend.clear_records()
        yield running, seen


def client(pki, port: int, cert=True) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca.ca.cert_path))
    if cert:
        context.load_cert_chain(str(pki.alice.cert_path), str(pki.alice.key_path))
    return httpx.Client(verify=context, base_url=f"https://localhost:{port}", timeout=30)


def direct(rest_backend, method: str, path: str, body=None) -> httpx.Response:
    with httpx.Client(base_url=f"http://{rest_backend.rest_address}", timeout=30) as c:
        return c.request(method, path, json=body)


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
def test_same_answer_as_modelserver_rest(front, pki, rest_backend, method, path, payload) -> None:
    """Through tfgate (either mode) the client gets what the backend's REST port answers."""
    running, seen = front
    with client(pki, running.port) as c:
        got = c.request(method, path, json=payload)
    want = direct(rest_backend, method, path, payload)
    assert got.status_code == want.status_code
    if want.status_code == 200:
        assert got.json() == want.json()
    else:
        assert "error" in got.json()
    assert seen.calls and seen.calls[0][1].startswith("/tensorflow.serving.")


def test_admit_gets_principal_inputs_and_facts(front, pki) -> None:
    running, seen = front
    with client(pki, running.port) as c:
        r = c.post("/v1/models/half_plus_two/labels/stable:predict",
                   json={"signature_name": "times_three", "instances": [[1.0, 2.0]]},
                   headers={"Authorization": "Bearer abc"})
    assert r.status_code in (200, 400)  # shape [1,2] is not [None]: the model may refuse
    (who, method, facts), = seen.calls
    assert who.peer_cert_der and b"team-a" in who.peer_cert_der
    assert who.authorization == ("Bearer abc",)
    assert method == "/tensorflow.serving.PredictionService/Predict"
    assert facts.targets[0].label == "stable" and facts.targets[0].signature == "times_three"
    assert facts.tensors[0].shape == (1, 2)


def test_no_client_certificate_no_connection(front, pki) -> None:
    running, _ = front
    with client(pki, running.port, cert=False) as c, pytest.raises(httpx.HTTPError):
        c.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})


def refused_cases() -> list[tuple[str, bytes, dict[str, str], int]]:
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces, ~64 KiB on the wire
    deep = b'{"instances": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
    return [
        ("gzip bomb", bomb, {"Content-Encoding": "gzip"}, 413),
        ("deep JSON", deep, {}, 400),
        ("duplicate keys", b'{"signature_name": "serving_default", "signature_name": '
                           b'"times_three", "instances": [1.0]}', {}, 400),
        ("ragged rows", b'{"instances": [[1.0, 2.0], [3.0]]}', {}, 400),
        ("trailing bytes", b'{"instances": [1.0]} {"instances": [2.0]}', {}, 400),
        ("invalid UTF-8", b'{"instances": ["\xff"]}', {}, 400),
        ("too big a number", b'{"instances": [1e400]}', {}, 400),
        ("unsupported encoding", b'{"instances": [1.0]}', {"Content-Encoding": "br"}, 415),
    ]


@pytest.mark.parametrize("name, data, headers, status", refused_cases(),
                         ids=[c[0] for c in refused_cases()])
def test_refused_before_upstream(front, pki, rest_backend, name, data, headers, status) -> None:
    running, seen = front
    with client(pki, running.port) as c:
        r = c.post("/v1/models/half_plus_two:predict", content=data,
                   headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert seen.calls == []
    assert rest_backend.records() == []


def test_huge_base64_refused_by_the_real_limits(pki, rest_backend) -> None:
    """Wire the real `Limiter` (gRPC caps, unchanged) into admit: nothing reaches upstream."""
    from proxy.config.limits import Limits
    from proxy.limits import Limiter, LimitState

    limiter = Limiter(Limits(), LimitState())

    def admit(who, method, facts):
        limiter.check(facts)
        return Decision()

    tls = server_tls(str(pki.server.cert_path), str(pki.server.key_path),
                     str(pki.ca.ca.cert_path))
    blob = base64.b64encode(b"\0" * (2 << 20)).decode()
    with RestInThread(admit, tls, rest_upstream=rest_backend.rest_address) as running:
        rest_backend.clear_records()
        with client(pki, running.port) as c:
            r = c.post("/v1/models/half_plus_two:predict", json={"instances": [{"b64": blob}]})
            ok = c.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    assert r.status_code == 413 and "max_string_element_bytes" in r.json()["error"]
    assert ok.status_code == 200
    assert [e["method"] for e in rest_backend.records()] == [
        "REST POST /v1/models/half_plus_two:predict"]
    assert json.loads(rest_backend.records()[0]["request"]) == {
        "signature_name": "serving_default", "instances": [1.0]}


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
