"""REST front, HTTP/1.1 framing attacks over real TLS: request smuggling shapes,
pipelining and chunked trailers. tfgate never relays the client's bytes (the upstream gets
a request tfgate writes), so smuggling can only matter here, at its own parser: every
ambiguous framing must be refused before a handler runs, and every request on a
connection must be judged on its own. The backend's record proves nothing else arrived."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests import resthelp as rh
from tests.conftest import base_config
from tests.test_rest_front import token

pytestmark = pytest.mark.tf

BODY = b'{"instances": [1.0]}'
SECRET = b'{"signature_name": "times_three", "instances": [1.0]}'  # alice may not call it
CHUNKED = b"14\r\n" + BODY + b"\r\n0\r\n\r\n"


@pytest.fixture
def start(pki, signing, rest_backend, tmp_path) -> Iterator[Any]:
    """start(client_auth=...) -> (Service, audit path): a native-mode REST front."""
    with contextlib.ExitStack() as stack:
        def run(client_auth: str = "require") -> tuple[Any, Any]:
            audit = tmp_path / "audit.jsonl"
            cfg = rh.rest_config(base_config(pki, signing, rest_backend.address),
                                 rest_backend, "native", audit, client_auth=client_auth)
            return stack.enter_context(rh.running_service(cfg)), audit
        rest_backend.clear_records()
        yield run


def request(path: str, body: bytes, *lines: str, method: str = "POST") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: tfgate", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def sized(path: str, body: bytes, *lines: str) -> bytes:
    return request(path, body, f"Content-Length: {len(body)}", *lines)


def responses(sock: ssl.SSLSocket) -> list[int]:
    """The status of every response until the server closes (or goes quiet)."""
    codes = []
    while True:
        try:
            code, _, _ = rh.read_response(sock, timeout=5)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            return codes
        codes.append(code)


AMBIGUOUS = {  # each one a way two HTTP parsers may disagree on where a body ends
    "content-length and chunked": request(rh.PREDICT_PATH, CHUNKED,
                                          f"Content-Length: {len(BODY)}",
                                          "Transfer-Encoding: chunked"),
    "two content-lengths": sized(rh.PREDICT_PATH, BODY, "Content-Length: 5"),
    "signed content-length": request(rh.PREDICT_PATH, BODY, f"Content-Length: +{len(BODY)}"),
    "space before colon": request(rh.PREDICT_PATH, BODY, f"Content-Length : {len(BODY)}"),
    "chunked not last": request(rh.PREDICT_PATH, CHUNKED, "Transfer-Encoding: chunked, identity"),
    "unknown transfer coding": request(rh.PREDICT_PATH, BODY, "Transfer-Encoding: xchunked"),
    "obs-fold": sized(rh.PREDICT_PATH, BODY, "X-A: b", " Authorization: Bearer x"),
    "bare CR in a header": sized(rh.PREDICT_PATH, BODY, "X-A: a\rAuthorization: x"),
    "NUL in a header": sized(rh.PREDICT_PATH, BODY, "X-A: a\x00b"),
    "LF-only lines": sized(rh.PREDICT_PATH, BODY).replace(b"\r\n", b"\n"),
    "tab in the target": sized(rh.PREDICT_PATH + "\t", BODY),
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_ambiguous_framing_is_refused_before_any_handler(start, pki, rest_backend,
                                                         name) -> None:
    service, audit = start()
    with rh.raw_tls(pki, rh.rest_port(service), pki.alice) as sock:
        sock.sendall(AMBIGUOUS[name])
        codes = responses(sock)
    assert codes == [400]
    assert rest_backend.records() == []
    # It never became a call: the next call's event is the audit's first (events are
    # written in the order calls end, on one loop).
    with rh.raw_tls(pki, rh.rest_port(service), pki.alice) as sock:
        sock.sendall(sized(rh.PREDICT_PATH, BODY, "Connection: close"))
        assert responses(sock) == [200]
    events = rh.audit_events(audit, 1)
    assert [e["reason"] for e in events] == ["allowed"]


def test_pipelined_requests_are_each_judged(start, pki, rest_backend) -> None:
    """An allowed predict, then on the same connection one for a signature alice may not
    call: the second is refused on its own merits and never arrives."""
    service, audit = start()
    with rh.raw_tls(pki, rh.rest_port(service), pki.alice) as sock:
        sock.sendall(sized(rh.PREDICT_PATH, BODY) + sized(rh.PREDICT_PATH, SECRET, "Connection: close"))
        codes = responses(sock)
    assert codes == [200, 403]
    assert [r["method"] for r in rest_backend.records()] == [
        "REST POST /v1/models/half_plus_two:predict"]
    events = rh.audit_events(audit, 2)
    assert [(e["reason"], e["signature"]) for e in events] == [
        ("allowed", "serving_default"), ("signature-not-allowed", "times_three")]


def test_a_refused_requests_body_is_never_served_as_a_request(start, pki, rest_backend
                                                               ) -> None:
    """bob may not Classify, so he is refused at the headers and his body is never read;
    the body is a whole request bob *may* make, and it must not be parsed as the next one
    on the connection (the connection closes)."""
    service, audit = start()
    inner = sized("/v1/models/other_model:predict", BODY)
    with rh.raw_tls(pki, rh.rest_port(service), pki.bob) as sock:
        sock.sendall(sized("/v1/models/other_model:classify", inner))
        codes = responses(sock)
    assert codes == [403]
    (event,) = rh.audit_events(audit, 1)
    assert event["reason"] == "method-not-allowed"
    assert rest_backend.records() == []


@pytest.mark.parametrize("trailer", [
    "Authorization: Bearer {token}", "X-Tfgate-Principal: spiffe://tfgate.test/team-a/alice"])
def test_chunked_trailers_are_no_headers(start, pki, signing, rest_backend, trailer) -> None:
    """A token (or an identity) sent in a chunked body's trailer is neither a credential
    nor forwarded: a caller without a certificate is refused at the headers."""
    service, audit = start(client_auth="none")
    line = trailer.format(token=token(signing))
    body = b"14\r\n" + BODY + b"\r\n0\r\n" + line.encode() + b"\r\n\r\n"
    with rh.raw_tls(pki, rh.rest_port(service)) as sock:
        sock.sendall(request("/v1/models/half_plus_two/versions/1:predict", body,
                             "Transfer-Encoding: chunked"))
        codes = responses(sock)
    assert codes == [401]
    (event,) = rh.audit_events(audit, 1)
    assert event["reason"] == "no-credentials"
    assert rest_backend.records() == []


@pytest.mark.parametrize("second", ["authorization: Bearer {token}", "AUTHORIZATION: Bearer x",
                                    "Authorization: Basic YTpi"])
def test_two_authorization_headers_in_any_spelling(start, pki, signing, rest_backend,
                                                   second) -> None:
    """HTTP/1.1 names are case-insensitive: `Authorization` and `authorization` are two
    copies of one header, ambiguous whichever a server would read, so refused (401)."""
    service, audit = start(client_auth="none")
    good = token(signing)
    with rh.raw_tls(pki, rh.rest_port(service)) as sock:
        sock.sendall(sized("/v1/models/half_plus_two/versions/1:predict", BODY,
                           f"Authorization: Bearer {good}", second.format(token=good)))
        codes = responses(sock)
    assert codes == [401]
    (event,) = rh.audit_events(audit, 1)
    assert event["reason"] == "multiple-tokens"
    assert rest_backend.records() == []
