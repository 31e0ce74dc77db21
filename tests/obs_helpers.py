"""Helpers for the observability tests: a plaintext, token-only config, a served
`Service` (gRPC and admin listeners), tokens, and reading samples from a real scrape."""

from __future__ import annotations

import contextlib
import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import validate_config
from proxy.pb import serving_pb2
from proxy.service import Service
from tests.conftest import AUDIENCE, ISSUER

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"


def plaintext_config(signing: Any, upstream: str, tmp_path: pathlib.Path,
                     **extra: Any) -> dict[str, Any]:
    """Loopback plaintext listener, token callers only, admin on a free port. Without
    `signing`, the issuer entry is left for the caller to replace."""
    jwks = str(signing.jwks) if signing is not None else "/dev/null"
    config: dict[str, Any] = {
        "listen": {"address": "127.0.0.1:0", "plaintext": True},
        "upstreams": {"serving": {"address": upstream}},
        "authn": {"jwt": {"issuers": [{
            "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256"],
            "jwks_file": jwks}]}},
        "policy": {"rules": [
            {"name": "predict", "principals": {"iss": [ISSUER], "scopes": ["predict"]},
             "methods": ["Predict", "GetModelMetadata"], "models": ["half_plus_two", "fraud-*"]},
        ]},
        "admin": {"enabled": True, "address": "127.0.0.1:0"},
        "audit": {"output": str(tmp_path / "audit.log")},
    }
    config.update(extra)
    return config


def token(signing: Any, scope: str = "predict", subject: str = "job") -> tuple[tuple[str, str]]:
    from tfgate_dev.devpki import mint_claims

    claims = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject=subject, scope=scope)
    return (("authorization", f"Bearer {signing.key.token(claims)}"),)


def predict(model: str, elements: int = 1) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = elements
    tensor.float_val.append(1.0)
    return request.SerializeToString()


def metadata_request(model: str) -> bytes:
    request = serving_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    return request.SerializeToString()


@contextlib.contextmanager
def served(config: dict[str, Any], config_path: pathlib.Path | None = None) -> Iterator[Service]:
    service = Service(validate_config(copy.deepcopy(config)), config_path=config_path).start()
    try:
        yield service
    finally:
        service.stop(0)


def get(service: Service, path: str) -> httpx.Response:
    assert service.admin is not None
    return httpx.get(f"http://{service.admin.address}{path}", timeout=10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(scraped: dict, name: str, **labels: str) -> float:
    """One sample's value from `samples`; 0 when the series does not exist (yet)."""
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(service: Service) -> dict:
    response = get(service, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)
