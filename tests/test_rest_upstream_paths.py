"""REST native mode: the path tfgate judged is the path the REST upstream gets.

tfgate judges a decoded name and label and forwards them percent-encoded again
(`paths.Route.upstream_path`). A `.` or `..` segment survives that encoding (dots are
unreserved), and URL libraries and path-normalizing proxies remove such segments
(RFC 3986 §5.2.4): `/v1/models/m/labels/./metadata` would become the *status* path
`/v1/models/m/labels/metadata`, and `/labels/../metadata` the metadata of the latest
version. So a name or label that is a dot segment is refused (400) before any upstream
hears of it, and what is forwarded is sent as written, never normalized again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests import resthelp as rh
from tests.conftest import base_config

pytestmark = pytest.mark.tf

# batch.tfgate.test may read metadata of every version of half_plus_two, nothing else.
METADATA_ONLY = {"name": "batch-metadata", "principals": {"dns": ["batch.tfgate.test"]},
                 "methods": ["GetModelMetadata"], "models": ["half_plus_two"],
                 "versions": ["*"]}


@pytest.fixture(scope="module")
def proxy(pki, signing, rest_backend, tmp_path_factory) -> Iterator[Any]:
    audit = tmp_path_factory.mktemp("audit") / "native.jsonl"
    cfg = rh.rest_config(base_config(pki, signing, rest_backend.address), rest_backend,
                         "native", audit)
    cfg["policy"]["rules"].append(METADATA_ONLY)
    with rh.running_service(cfg) as service:
        yield service


def raw(pki: Any, proxy: Any, who: Any, method: str, path: str, body: bytes = b""
        ) -> tuple[int, Any]:
    """One request with its target as written (HTTP clients remove dot segments)."""
    with rh.raw_tls(pki, rh.rest_port(proxy), who) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                     "\r\nContent-Type: application/json\r\n\r\n".encode() + body)
        code, _, text = rh.read_response(sock)
    return code, json.loads(text)


@pytest.mark.parametrize("path", [
    "/v1/models/half_plus_two/labels/./metadata",    # -> the status of label "metadata"
    "/v1/models/half_plus_two/labels/../metadata",   # -> metadata of the latest version
    "/v1/models/half_plus_two/labels/%2E/metadata",
    "/v1/models/half_plus_two/labels/%2e%2E",
    "/v1/models/%2E%2E/metadata",
    "/v1/models/./labels/x/metadata",
])
def test_dot_segments_are_refused_before_upstream(proxy, pki, rest_backend, path) -> None:
    rest_backend.clear_records()
    code, answer = raw(pki, proxy, pki.dns_client, "GET", path)
    assert (code, "dot segment" in answer["error"]) == (400, True), answer
    assert rest_backend.records() == []


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/models/%2E%2E:predict"),
    ("POST", "/v1/models/half_plus_two/labels/..:predict"),
])
def test_dot_segment_names_in_posts_too(proxy, pki, rest_backend, method, path) -> None:
    """`..:predict` is no dot segment, but a name or label `..` is refused alike on
    every path, so no later change of the path's shape can turn it into one."""
    rest_backend.clear_records()
    code, answer = raw(pki, proxy, pki.cn_client, method, path, b'{"instances": [1.0]}')
    assert (code, "dot segment" in answer["error"]) == (400, True), answer
    assert rest_backend.records() == []


def test_metadata_still_served_as_judged(proxy, pki, rest_backend) -> None:
    """The control: the same caller gets metadata, and the upstream saw the metadata
    path it was judged for."""
    rest_backend.clear_records()
    with rh.client(pki, rh.rest_port(proxy), pki.dns_client) as c:
        r = c.get("/v1/models/half_plus_two/versions/1/metadata")
        status = c.get("/v1/models/half_plus_two/versions/1")
    assert r.status_code == 200, r.text
    assert "signature_def" in r.json()["metadata"]
    assert status.status_code == 403  # GetModelStatus is not granted
    assert [rec["method"] for rec in rest_backend.records()] == [
        "REST GET /v1/models/half_plus_two/versions/1/metadata"]
