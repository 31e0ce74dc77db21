"""REST native mode against a stub REST upstream (no TensorFlow): what tfgate sends is
exactly the request it judged, and nothing of one call carries over to another.

- A redirect from the upstream is not followed: following it would send the caller's
  body, headers and the identity header to a path (or a host) nobody judged.
- A cookie the upstream (or a gateway in front of it) sets is not kept: one client
  session serves every caller, so a kept cookie would travel with the next caller's
  requests, whoever the cookie was issued to.
- A metadata answer is filtered whatever success status it comes with (203 too), and
  one that holds a key twice is refused (JSON readers differ on which copy counts).
- The upstream is asked for an uncompressed answer: tfgate relays and filters the bytes
  it gets, and would otherwise pass on (or fail to read) gzip it never asked for.
- An answer that arrives in many pieces is relayed whole; framing headers a client sent
  in their `_` spelling never reach the upstream.

The stub records every request's path and headers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import resthelp as rh
from tests.conftest import base_config

# A predict answer of ~2 MiB: far more than one read of the upstream's socket returns.
LARGE_ANSWER = json.dumps({"predictions": [float(i) for i in range(200_000)]}).encode()


class RedirectingUpstream:
    """Answers every request with a 307 to `/v1/models/secret:predict` (a path the
    caller may not use), except that path itself, which answers 200; records paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.paths.append(self.path)
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.startswith("/v1/models/secret"):
                    body = json.dumps({"predictions": ["secret"]}).encode()
                    self.send_response(200)
                elif self.path == "/v1/models/half_plus_two/versions/2/metadata":
                    body = json.dumps({"model_spec": {"name": "half_plus_two"}, "metadata": {
                        "signature_def": {"signature_def": {"serving_default": {},
                                                            "secret_sig": {}}}}}).encode()
                    self.send_response(203)  # a success, but not 200
                elif self.path == "/v1/models/half_plus_two/versions/1/metadata":
                    # the first copy lists secret_sig, the last (what json.loads keeps) not
                    body = (b'{"metadata": {"signature_def": {"signature_def": {'
                            b'"serving_default": {}, "secret_sig": {}}}}, "metadata": '
                            b'{"signature_def": {"signature_def": {"serving_default": {}}}}}')
                    self.send_response(200)
                elif self.path == "/v1/models/half_plus_two/labels/stable:predict":
                    self._large_answer()
                    return
                elif self.path.startswith("/v1/models/half_plus_two/versions/2"):
                    body = json.dumps({"predictions": [1.0]}).encode()
                    self.send_response(200)
                    who = owner.headers[-1].get("x-tfgate-principal", "")
                    self.send_header("Set-Cookie", f"session={len(owner.paths)}; Path=/")
                    self.send_header("X-Issued-To", who)
                else:
                    body = b'{"moved": true}'
                    self.send_response(307)
                    self.send_header("Location", "/v1/models/secret:predict")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _large_answer(self) -> None:
                """LARGE_ANSWER, sent in pieces with pauses (as a big answer comes)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(LARGE_ANSWER)))
                self.end_headers()
                step = len(LARGE_ANSWER) // 16 + 1
                for start in range(0, len(LARGE_ANSWER), step):
                    self.wfile.write(LARGE_ANSWER[start:start + step])
                    self.wfile.flush()
                    time.sleep(0.01)

            do_GET = do_POST = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[RedirectingUpstream]:
    stub = RedirectingUpstream()
    yield stub
    stub.stop()


@pytest.fixture
def front(pki, signing, upstream, raw_backend, tmp_path) -> Iterator[tuple[Any, Any]]:
    audit = tmp_path / "audit.jsonl"

    class Backend:  # rest_config's view of a backend: a gRPC and a REST address
        address = raw_backend.address
        # a host name: cookie jars keep no cookies of IP addresses
        rest_address = upstream.address.replace("127.0.0.1", "localhost")

    cfg = rh.rest_config(base_config(pki, signing, raw_backend.address), Backend, "native",
                         audit)
    with rh.running_service(cfg) as service:
        yield service, audit


@pytest.mark.parametrize("method, path, body", [
    ("POST", rh.PREDICT_PATH, {"instances": [1.0]}),
    ("GET", "/v1/models/half_plus_two/versions/1", None),
])
def test_an_upstream_redirect_is_not_followed(front, pki, upstream, method, path, body
                                              ) -> None:
    service, audit = front
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.request(method, path, json=body)
    assert upstream.paths == [path]  # the judged path, and nothing else
    assert r.status_code == 307 and "secret" not in r.text
    assert "location" not in r.headers
    (event,) = rh.audit_events(audit, 1)
    assert (event["decision"], event["reason"], event["http_status"]) == (
        "allow", "upstream-status", 307)  # allowed by policy; the upstream said no


def test_no_cookie_or_compression_carries_over_between_callers(front, pki, upstream
                                                               ) -> None:
    """alice's call gets a session cookie from the upstream; bob's next call (and
    alice's own) must reach the upstream without it, and every call asks for identity
    encoding."""
    service, _ = front
    for who in ("alice", "alice", "bob"):
        with rh.client(pki, rh.rest_port(service), who) as c:
            path = ("/v1/models/half_plus_two/versions/2:predict" if who == "alice"
                    else "/v1/models/other_model/versions/2:predict")
            r = c.post(path, json={"instances": [1.0]})
        assert r.status_code in (200, 307), r.text
        assert "set-cookie" not in r.headers
    assert [h.get("cookie") for h in upstream.headers] == [None, None, None]
    assert {h.get("accept-encoding") for h in upstream.headers} == {"identity"}


def test_every_success_status_is_filtered(front, pki, upstream) -> None:
    """A metadata answer is filtered whatever 2xx it comes with: alice may call
    serving_default, not secret_sig."""
    service, _ = front
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.get("/v1/models/half_plus_two/versions/2/metadata")
    assert r.status_code == 203, r.text
    assert list(r.json()["metadata"]["signature_def"]["signature_def"]) == ["serving_default"]


def test_an_answer_with_a_key_twice_is_refused(front, pki, upstream) -> None:
    """Nothing would be hidden from the copy Python keeps, so the upstream's bytes would
    go out as they are, first copy (and its secret_sig) included."""
    service, audit = front
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.get("/v1/models/half_plus_two/versions/1/metadata")
    assert r.status_code == 500 and "secret_sig" not in r.text, r.text
    (event,) = rh.audit_events(audit, 1)
    assert event["reason"] == "upstream-status"


def test_framing_headers_in_underscore_spelling_never_reach_the_upstream(front, pki, upstream
                                                                         ) -> None:
    """`content_length`, `accept_encoding`, ...: servers and proxies that map header names
    to CGI/WSGI style (or fold `_` into `-`) read them as this hop's framing headers, so
    a forwarded `content_length: 0` would frame the judged body differently there (and
    `accept_encoding: gzip` would ask for an answer tfgate cannot filter). They are
    dropped like their `-` spellings; the request is still served."""
    service, _ = front
    sneaked = {"content_length": "0", "content_type": "text/plain",
               "content_encoding": "gzip", "accept_encoding": "gzip",
               "transfer_encoding": "chunked", "keep_alive": "1", "proxy_connection": "close"}
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.post("/v1/models/half_plus_two/versions/2:predict", json={"instances": [1.0]},
                   headers=sneaked)
    assert r.status_code == 200, r.text
    (seen,) = upstream.headers
    assert not {k for k in seen if "_" in k}, seen
    assert seen["accept-encoding"] == "identity"


def test_a_large_answer_is_relayed_whole(front, pki, upstream) -> None:
    """An answer that arrives in many reads is relayed complete, not cut after the
    first bytes the upstream's socket had (a 200 with half a body would pass for the
    whole answer)."""
    service, _ = front
    with rh.client(pki, rh.rest_port(service)) as c:
        r = c.post("/v1/models/half_plus_two/labels/stable:predict", json={"instances": [1.0]})
    assert r.status_code == 200, r.text[:200]
    assert r.content == LARGE_ANSWER
