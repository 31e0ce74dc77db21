"""Shared fixtures: a throwaway PKI and signing keys per session, one TensorFlow-backed
ModelServer stand-in per session (TF costs ~2 s per process, so it is started once),
and `make_proxy`, which runs a real tfgate listener on a free port for one test."""

from __future__ import annotations

import contextlib
import copy
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from proxy.config import validate_config
from proxy.routing import MethodTable
from proxy.runtime import Runtime
from proxy.server import RunningServer
from proxy.state import build_state
from tfgate_dev.devpki import DevPKI, Issued, SigningKey, write_jwks

ISSUER = "https://issuer.tfgate.test"
AUDIENCE = "tfgate"
TEAM_A = "spiffe://tfgate.test/team-a/alice"
TEAM_B = "spiffe://tfgate.test/team-b/bob"
OPS = "spiffe://tfgate.test/ops/admin"


class Pki:
    """The session's certificates: a trusted CA, a rogue CA, and named clients."""

    def __init__(self, root: pathlib.Path) -> None:
        self.ca = DevPKI.create(root / "ca")
        self.rogue = DevPKI.create(root / "rogue", common_name="rogue CA")
        self.server = self.ca.server()
        self.alice = self.ca.client("alice", spiffe_id=TEAM_A)
        self.bob = self.ca.client("bob", spiffe_id=TEAM_B)
        self.ops = self.ca.client("ops", spiffe_id=OPS)
        self.dns_client = self.ca.client("batch", dns=("batch.tfgate.test",))
        self.cn_client = self.ca.client("legacy-client")
        self.mallory = self.rogue.client("mallory", spiffe_id=TEAM_A)
        self.expired = self.ca.client("old", spiffe_id=TEAM_A, not_after=_past())

    def channel(self, address: str, client: Issued | None = None) -> grpc.Channel:
        """A TLS channel trusting our CA, presenting `client`'s certificate if given."""
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca.ca.cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )
        return grpc.secure_channel(address, creds)


def _past():
    import datetime

    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)


class Signing:
    """Token keys: `key` (ES256) and `rsa` (RS256) are trusted via JWKS; `rogue` is not."""

    def __init__(self, root: pathlib.Path) -> None:
        self.key = SigningKey.generate("es-1", "ES256")
        self.rsa = SigningKey.generate("rs-1", "RS256")
        self.rogue = SigningKey.generate("es-1", "ES256")  # same kid, different key
        self.jwks = write_jwks(root / "jwks.json", [self.key, self.rsa])


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Signing:
    return Signing(tmp_path_factory.mktemp("jwt"))


def base_config(pki: Pki, signing: Signing, upstream: str) -> dict[str, Any]:
    """A production-shaped config: mTLS listener, JWT issuer, per-team rules."""
    return {
        "listen": {
            "address": "127.0.0.1:0",
            "tls": {"cert": str(pki.server.cert_path), "key": str(pki.server.key_path),
                    "client_ca": str(pki.ca.ca.cert_path)},
        },
        "upstreams": {"serving": {"address": upstream}},
        "authn": {"jwt": {"issuers": [{
            "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256", "RS256"],
            "jwks_file": str(signing.jwks)}]}},
        "identity": {"forward_metadata_key": "x-tfgate-principal"},
        "policy": {"rules": [
            {"name": "team-a-predict", "principals": {"spiffe": ["spiffe://tfgate.test/team-a/*"]},
             "methods": ["Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata",
                         "GetModelStatus"],
             "models": ["half_plus_two"], "versions": [1, 2, "stable", "canary", "latest"],
             "signatures": ["serving_default", "regress_x", "classify_x"]},
            {"name": "team-b-other", "principals": {"spiffe": [TEAM_B]},
             "methods": ["Predict"], "models": ["other_model"]},
            {"name": "ops-reload", "principals": {"spiffe": [OPS]},
             "methods": ["HandleReloadConfigRequest", "GetModelStatus"], "models": ["*"]},
            {"name": "token-callers", "principals": {"iss": [ISSUER], "scopes": ["predict"]},
             "require": ["token"], "methods": ["Predict"], "models": ["half_plus_two"],
             "versions": [1]},
        ]},
        "audit": {"output": "stderr"},
    }


@contextlib.contextmanager
def running_proxy(config: dict[str, Any], methods: MethodTable | None = None
                  ) -> Iterator[RunningServer]:
    """Validate `config`, serve it on a free port, stop it afterwards. `methods` replaces
    the method table its upstreams' families give (tests add methods this way)."""
    cfg = validate_config(copy.deepcopy(config))
    server = RunningServer(cfg, Runtime(build_state(cfg, methods=methods))).start()
    try:
        yield server
    finally:
        server.stop(0)


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., RunningServer]]:
    """Start proxies inside a test; all are stopped when it ends."""
    with contextlib.ExitStack() as stack:
        yield lambda config, methods=None: stack.enter_context(running_proxy(config, methods))


@pytest.fixture(scope="session")
def backend():
    """One TF-backed ModelServer stand-in for the whole session, recording requests."""
    from tfgate_dev.testbackend import start_backend

    with start_backend(record=True) as process:
        yield process


@pytest.fixture
def clean_backend(backend):
    """The session backend with its request record emptied for this test."""
    backend.clear_records()
    return backend


@pytest.fixture
def raw_backend():
    """A recording raw-bytes upstream (tests/rawbackend.py), stopped after the test."""
    from tests.rawbackend import RawBackend

    backend = RawBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def rest_backend():
    """One TF-backed stand-in with ModelServer's REST API too (gRPC port and REST port,
    one request record), for the whole session."""
    from tfgate_dev.testbackend.rest_process import start_rest_backend

    with start_rest_backend() as process:
        yield process
