"""Everything a bench run needs on disk: a dev PKI, a JWT issuer, request bodies and
the tfgate config with the full pipeline on (TLS/mTLS, JWT, ACL, limits, audit)."""

from __future__ import annotations

import pathlib
import socket
from dataclasses import dataclass

import yaml

from bench import messages
from tfgate_dev.devpki import DevPKI, SigningKey, mint_claims, write_jwks

ISSUER = "https://issuer.bench.tfgate"
AUDIENCE = "tfgate"
SPIFFE = "spiffe://bench.tfgate/client"
MiB = 1 << 20


@dataclass
class Env:
    dir: pathlib.Path
    ca: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    jwks: pathlib.Path
    token: str
    audit: pathlib.Path
    small: bytes
    large: bytes
    huge: bytes
    response: bytes
    stream_message: bytes

    @property
    def bearer(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def body_file(self, name: str, message: bytes) -> pathlib.Path:
        path = self.dir / f"{name}.grpc"
        path.write_bytes(messages.grpc_frame(message))
        return path

    def body_file_raw(self, name: str, body: bytes) -> pathlib.Path:
        path = self.dir / f"{name}.body"
        path.write_bytes(body)
        return path


def make_env(directory: pathlib.Path) -> Env:
    directory.mkdir(parents=True, exist_ok=True)
    pki = DevPKI.create(directory)
    server = pki.server()
    client = pki.client("bench-client", spiffe_id=SPIFFE)
    key = SigningKey.generate("bench-1")
    jwks = write_jwks(directory / "jwks.json", [key])
    token = key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="bench-loadgen",
                                  ttl=24 * 3600, scope="predict"))
    return Env(directory, pki.ca.cert_path, client.cert_path, client.key_path,  # type: ignore[arg-type]
               server.cert_path, server.key_path, jwks, token,  # type: ignore[arg-type]
               directory / "audit.log",
               messages.predict_request(), messages.request_near(MiB),
               messages.request_near(16 * MiB), messages.predict_response(),
               messages.stream_message())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_config(env: Env, backend: str, port: int, *, mtls: bool,
                 rest: tuple[str, int, str] | None = None) -> dict:
    """The tfgate config the bench measures: the full pipeline, one of two listeners.

    h2load cannot present a client certificate, and tfgate's `client_auth: optional`
    cannot be used to mix both kinds of client on one listener (gRPC Python can only
    require client certificates or not ask for them), so the bench runs tfgate twice:

    * `mtls=False` (h2load scenarios): TLS listener without client certificates; every
      call must carry a JWT (rule `bench-token`), as config validation demands.
    * `mtls=True` (Python-client scenarios): mTLS listener; a rule that requires both
      the SPIFFE certificate and the JWT (rule `bench-mtls`).

    `rest` = (mode, port, REST backend address) adds the REST front on that port, with
    the gRPC listener's TLS (h2load cannot present a certificate either).
    """
    if mtls:
        tls = {"client_ca": str(env.ca), "client_auth": "require"}
        rule = {"name": "bench-mtls", "principals": {"spiffe": [SPIFFE]},
                "require": ["certificate", "token"],
                "methods": ["Predict"]}
    else:
        tls = {"client_auth": "none"}
        rule = {"name": "bench-token", "principals": {"sub": ["bench-loadgen"]},
                "require": ["token"], "methods": ["Predict"]}
    rule.update(models=[messages.MODEL], signatures=["serving_default"])
    cfg = {
        "listen": {
            "address": f"127.0.0.1:{port}",
            "tls": {"cert": str(env.server_cert), "key": str(env.server_key), **tls},
            "max_message_bytes": 64 * MiB,
        },
        "upstreams": {"bench": {"address": backend}},
        "authn": {"jwt": {"issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE],
                                       "algorithms": ["ES256"],
                                       "jwks_file": str(env.jwks)}]}},
        "identity": {"forward_metadata_key": "x-tfgate-principal"},
        "policy": {"rules": [
            # a decoy rule first, so the policy walks more than one rule per call
            {"name": "other-team", "principals": {"sub": ["someone-else"]},
             "require": ["token"], "methods": ["Predict"], "models": ["other-*"]},
            rule,
        ]},
        "audit": {"output": str(env.audit)},
        **_limits(),
    }
    if rest is not None:
        mode, rest_port, rest_backend = rest
        cfg["rest"] = {"address": f"127.0.0.1:{rest_port}", "upstream": mode,
                       "tls": cfg["listen"]["tls"]}
        cfg["upstreams"]["bench"]["rest_address"] = f"http://{rest_backend}"
    return cfg



def cluster_config(env: Env, backend: str, port: int) -> dict:
    """The tfgate the StreamingEnqueue scenario measures: an mTLS listener in front of a
    `kind: cluster` upstream, the client's certificate as its only proof (TF clients
    send no token), an op allowlist, every message inspected and judged."""
    return {
        "listen": {
            "address": f"127.0.0.1:{port}",
            "tls": {"cert": str(env.server_cert), "key": str(env.server_key),
                    "client_ca": str(env.ca), "client_auth": "require"},
        },
        "upstreams": {"worker": {"address": backend, "kind": "cluster"}},
        "policy": {"rules": [
            {"name": "other-client", "principals": {"spiffe": ["spiffe://bench.tfgate/other"]},
             "methods": ["CreateContext", "StreamingEnqueue"]},
            {"name": "bench-cluster", "principals": {"spiffe": [SPIFFE]},
             "methods": ["CreateContext", "StreamingEnqueue"],
             "ops": {"allow": ["Const", "Mul", "AddV2", "Identity"]}},
        ]},
        "audit": {"output": str(env.audit)},
    }



def _limits() -> dict:
    """Limits stay on with their defaults (sizes, dtypes, deadlines are checked on every
    call), except per-principal concurrency: every bench call comes from one principal,
    and the saturation runs keep 64 calls in flight, more than the default 32."""
    from proxy import config
    if "limits" not in config.Config.model_fields:
        return {}
    return {"limits": {"concurrency": {"per_principal": 1024}}}


def write_config(env: Env, cfg: dict, name: str) -> pathlib.Path:
    path = env.dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
