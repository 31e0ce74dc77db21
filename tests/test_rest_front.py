"""The REST listener under hostile clients, and the limits as the gRPC front has them.

Raw TLS sockets send what an HTTP client would not: headers followed by a body that never
comes, trickled headers, `Expect: 100-continue`, too many connections. An unauthenticated
or unauthorized caller gets its refusal without sending its body. Rate, concurrency,
sizes, dtypes, examples and deadlines hold for REST calls as for gRPC ones (counts, no
timings), and the parse pool's queue cap refuses rather than queues."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests import resthelp as rh
from tests.conftest import AUDIENCE, ISSUER, base_config
from tfgate_dev.devpki import mint_claims

pytestmark = pytest.mark.tf
BIG = 10 << 20  # a declared body length the client never sends


@pytest.fixture
def start(pki, signing, rest_backend, tmp_path) -> Iterator[Any]:
    """start(mode, client_auth=..., limits=..., **rest) -> (Service, audit path)."""
    services: list[Any] = []
    audit = tmp_path / "audit.jsonl"

    def run(mode: str = "native", *, limits: dict | None = None, **rest: Any):
        cfg = rh.rest_config(base_config(pki, signing, rest_backend.address), rest_backend,
                             mode, audit, **rest)
        if limits:
            cfg["limits"] = limits
        manager = rh.running_service(cfg)
        services.append(manager)
        return manager.__enter__(), audit

    rest_backend.clear_records()
    yield run
    for manager in services:
        manager.__exit__(None, None, None)


def token(signing: Any, scope: str = "predict") -> str:
    return signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="job",
                                         scope=scope))


def headers_only(sock: Any, path: str, *lines: str) -> None:
    """Request headers declaring a body of BIG bytes, then 100 of them; never the rest."""
    head = [f"POST {path} HTTP/1.1", "Host: tfgate", f"Content-Length: {BIG}",
            "Content-Type: application/json", *lines]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"instances": [' + b" " * 84)


REFUSED_AT_HEADERS = [  # listener client_auth, certificate, extra header, status, reason
    ("none", None, None, 401, "no-credentials"),
    ("none", None, "Authorization: Bearer not-a-token", 401, "token-malformed"),
    ("none", None, "Authorization: Basic YWxhZGRpbjpvcGVu", 401, "token-malformed"),
    ("none", "token-scope-other", None, 403, "no-rule-for-principal"),
    ("require", "bob", None, 403, "method-not-allowed"),  # bob: Predict only, asks Classify
]


@pytest.mark.parametrize("auth, who, extra, status, reason", REFUSED_AT_HEADERS,
                         ids=[r[4] + "-" + r[0] for r in REFUSED_AT_HEADERS])
def test_refused_from_the_headers_without_the_body(start, pki, signing, rest_backend, auth,
                                                   who, extra, status, reason) -> None:
    """The refusal arrives while the client still owes 10 MiB of body, and the connection
    closes: tfgate never waits for (or reads) the body of a caller it refuses."""
    service, audit = start(client_auth=auth)
    lines = [extra] if extra else []
    cert = getattr(pki, who) if who in ("alice", "bob") else None
    if who == "token-scope-other":
        lines.append(f"Authorization: Bearer {token(signing, scope='other')}")
    path = "/v1/models/other_model:classify" if who == "bob" else rh.PREDICT_PATH
    with rh.raw_tls(pki, rh.rest_port(service), cert) as sock:
        headers_only(sock, path, *lines)
        code, headers, body = rh.read_response(sock)
        assert rh.closed(sock)
    assert code == status and b"error" in body
    assert headers.get("connection", "").lower() == "close"
    (event,) = rh.audit_events(audit, 1)
    assert event["reason"] == reason and event["bytes_in"] == 0
    assert rest_backend.records() == []


def test_expect_continue_only_after_the_headers_pass(start, pki, signing) -> None:
    service, _ = start(client_auth="none")
    body = b'{"instances": [1.0]}'
    head = (f"POST /v1/models/half_plus_two/versions/1:predict HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n")
    with rh.raw_tls(pki, rh.rest_port(service)) as sock:  # no token: refused, no 100
        sock.sendall(head.encode() + b"\r\n")
        code, _, _ = rh.read_response(sock)
    assert code == 401
    with rh.raw_tls(pki, rh.rest_port(service)) as sock:
        sock.sendall(head.encode() + f"Authorization: Bearer {token(signing)}\r\n\r\n".encode())
        sock.settimeout(30)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        code, _, answer = rh.read_response(sock)
    assert code == 200 and b"predictions" in answer


def test_body_must_arrive_within_the_receive_timeout(start, pki, rest_backend) -> None:
    service, audit = start(receive_timeout_s=0.5)
    with rh.raw_tls(pki, rh.rest_port(service), pki.alice) as sock:
        headers_only(sock, rh.PREDICT_PATH)
        code, _, body = rh.read_response(sock)
    assert code == 408 and b"rest.receive_timeout_s" in body
    assert rh.audit_events(audit, 1)[0]["reason"] == "request-timeout"
    assert rest_backend.records() == []


def test_trickled_headers_are_cut_off(start, pki) -> None:
    """idle_timeout_s runs from accept and is not reset by header bytes."""
    service, _ = start(idle_timeout_s=0.5)
    with rh.raw_tls(pki, rh.rest_port(service), pki.alice) as sock:
        sock.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\n")
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.1):
                try:
                    sock.sendall(b"X-Slow: a\r\n")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        try:
            assert rh.closed(sock, timeout=30)
        finally:
            stop.set()


def test_header_size_and_count_are_capped(start, pki, rest_backend) -> None:
    service, _ = start(max_header_bytes=1024, max_headers=8)
    with rh.client(pki, rh.rest_port(service)) as c:
        long_header = c.post(rh.PREDICT_PATH, json={"instances": [1.0]},
                             headers={"X-Big": "a" * 2000})
        many = c.post(rh.PREDICT_PATH, json={"instances": [1.0]},
                      headers={f"X-H{i}": "1" for i in range(20)})
    assert long_header.status_code in (400, 431) and many.status_code in (400, 431)
    assert rest_backend.records() == []


def test_connections_past_the_cap_are_closed(start, pki) -> None:
    service, _ = start(max_connections=2)
    port = rh.rest_port(service)
    held = [rh.raw_tls(pki, port, pki.alice) for _ in range(2)]
    try:
        with _connect(pki, port) as third:  # closed before (or at) its handshake
            assert third is None or rh.closed(third)
        for sock in held:  # the first two still serve
            sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rh.read_response(sock)[0] == 200
    finally:
        for sock in held:
            sock.close()


class _connect:
    """A TLS connection that may be refused during the handshake (then None)."""

    def __init__(self, pki: Any, port: int) -> None:
        self.sock: Any = None
        try:
            self.sock = rh.raw_tls(pki, port, pki.alice)
        except OSError:
            pass

    def __enter__(self) -> Any:
        return self.sock

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()


def test_parse_queue_cap_refuses_rather_than_queues(start, pki, rest_backend) -> None:
    service, audit = start(parse={"threads": 1, "inline_below_bytes": 1024,
                                  "max_queued_bytes": 64 * 1024})
    payload = {"instances": [0.5] * 20_000}  # ~100 KiB: more than the queue may hold
    with rh.client(pki, rh.rest_port(service)) as c:
        small = c.post(rh.PREDICT_PATH, json={"instances": [0.5] * 300})  # ~1.5 KiB: a thread
        big = c.post(rh.PREDICT_PATH, json=payload)
    assert small.status_code == 200
    assert big.status_code == 503 and "max_queued_bytes" in big.json()["error"]
    assert rh.audit_events(audit, 2)[1]["reason"] == "overloaded"


# -- limits, as for gRPC ---------------------------------------------------------------

SIZES = [  # limits, body, status, reason, words
    ({"models": [{"models": ["half_plus_two"], "tensors": {"max_elements": 4}}]},
     {"instances": [1.0, 2.0, 3.0, 4.0, 5.0]}, 413, "limit-exceeded", "max_elements"),
    ({"tensors": {"max_batch": 2}}, {"instances": [1.0, 2.0, 3.0]}, 413, "limit-exceeded",
     "max_batch"),
    ({"tensors": {"allowed_dtypes": ["DT_FLOAT", "DT_DOUBLE", "DT_INT64"]}},
     {"instances": [True]}, 400, "input-not-allowed", "DT_BOOL"),
    ({"tensors": {"max_string_tensor_bytes": 100}}, {"instances": ["a" * 60, "b" * 60]}, 413,
     "limit-exceeded", "max_string_tensor_bytes"),
]


@pytest.mark.parametrize("limits, payload, status, reason, words", SIZES,
                         ids=[s[4] for s in SIZES])
def test_size_limits(start, pki, rest_backend, limits, payload, status, reason, words) -> None:
    service, audit = start(limits=limits)
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.post(rh.PREDICT_PATH, json=payload)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert rh.audit_events(audit, 1)[0]["reason"] == reason
    assert rest_backend.records() == []


def test_example_limits(start, pki, rest_backend) -> None:
    service, audit = start(limits={"examples": {"max_examples": 2}})
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.post("/v1/models/half_plus_two:regress", json={
            "signature_name": "regress_x", "examples": [{"x": 1.0}] * 3})
        ok = c.post("/v1/models/half_plus_two:regress", json={
            "signature_name": "regress_x", "examples": [{"x": 1.0}] * 2})
    assert r.status_code == 413 and "max_examples" in r.json()["error"]
    assert ok.status_code == 200 and ok.json() == {"results": [2.5, 2.5]}
    assert rh.audit_events(audit, 2)[0]["reason"] == "limit-exceeded"


def test_rate_limit(start, pki, rest_backend) -> None:
    service, audit = start(limits={"rate": {"rate": 0.001, "burst": 2}})
    with rh.client(pki, rh.rest_port(service)) as c:
        codes = [c.post(rh.PREDICT_PATH, json={"instances": [1.0]}).status_code
                 for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    assert [e["reason"] for e in rh.audit_events(audit, 4)] == [
        "allowed", "allowed", "rate-limited", "rate-limited"]


@pytest.mark.parametrize("limits, rest, status, reason", [
    ({"concurrency": {"per_principal": 1}}, {}, 429, "concurrency-limited"),
    ({}, {"max_calls_per_peer": 1}, 503, "overloaded"),
], ids=["concurrency", "calls-per-peer"])
def test_calls_in_flight(start, pki, rest_backend, limits, rest, status, reason) -> None:
    """While one call is held at the backend (translated: the backend's sleep hook), a
    second from the same caller / peer is refused; the first still completes."""
    service, audit = start("translate", limits=limits, **rest)
    port = rh.rest_port(service)
    results: list[int] = []

    def slow() -> None:
        with rh.client(pki, port) as c:
            results.append(c.post(rh.PREDICT_PATH, json={"instances": [1.0]},
                                  headers={"X-Test-Sleep-Ms": "8000"}).status_code)

    first = threading.Thread(target=slow)
    first.start()
    assert rh.wait_for(lambda: any(r["method"].endswith("/Predict")
                                   for r in rest_backend.records()))
    with rh.client(pki, port) as c:
        second = c.post(rh.PREDICT_PATH, json={"instances": [1.0]})
    first.join(60)
    assert second.status_code == status and results == [200]
    assert reason in [e["reason"] for e in rh.audit_events(audit, 2)]


def test_deadline_default_applies(start, pki, rest_backend) -> None:
    service, audit = start("translate", limits={"deadline": {"default_s": 0.5, "max_s": 1}})
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.post(rh.PREDICT_PATH, json={"instances": [1.0]},
                   headers={"X-Test-Sleep-Ms": "5000"})
    assert r.status_code == 504
    (event,) = rh.audit_events(audit, 1)
    assert (event["reason"], event["status"]) == ("upstream-status", "DEADLINE_EXCEEDED")


# -- who a REST caller is ----------------------------------------------------------------

LOCAL = "spiffe://tfgate.test/ns/train/sa/local-client"


def test_local_identity_is_the_grpc_listeners_not_the_rest_fronts(pki, signing, rest_backend,
                                                                   tmp_path) -> None:
    """`listen.local_identity` names the callers of the plaintext gRPC listener (a local
    TF process). A REST caller without a certificate or token is nobody: 401, never the
    local identity, whatever the REST listener's TLS mode or address."""
    import grpc

    from proxy.pb import serving_pb2

    cfg = rh.rest_config(base_config(pki, signing, rest_backend.address), rest_backend,
                         "native", tmp_path / "audit.jsonl", client_auth="none")
    cfg["listen"] = {"address": "127.0.0.1:0", "plaintext": True, "local_identity": LOCAL}
    cfg["policy"]["rules"].append({"name": "local", "principals": {"spiffe": [LOCAL]},
                                   "methods": ["GetModelStatus"], "models": ["half_plus_two"]})
    rest_backend.clear_records()
    with rh.running_service(cfg) as service:
        request = serving_pb2.GetModelStatusRequest()
        request.model_spec.name = "half_plus_two"
        with grpc.insecure_channel(service.grpc.address) as channel:  # the local caller
            channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus")(
                request.SerializeToString(), timeout=30)
        with rh.client(pki, rh.rest_port(service), who=None) as c:
            answer = c.get("/v1/models/half_plus_two")
        events = rh.audit_events(tmp_path / "audit.jsonl", 2)
    assert answer.status_code == 401, answer.text
    assert events[0]["principal"] == LOCAL and events[0]["decision"] == "allow"
    assert events[1]["reason"] == "no-credentials" and events[1]["principal"] is None
    assert len(rest_backend.records()) == 1  # the gRPC call only
