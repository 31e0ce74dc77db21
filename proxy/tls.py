"""Transport security for the client-facing listener."""

from __future__ import annotations

import pathlib

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy import config
from proxy.errors import ConfigError


def _read_pem(path: pathlib.Path, where: str, kind: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror}") from None
    try:
        if kind == "key":
            serialization.load_pem_private_key(data, password=None)
        else:
            x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(where, f"{path} is not a PEM {kind}: {exc}") from None
    return data


def server_credentials(tls: config.ListenTLS) -> grpc.ServerCredentials:
    """Build listener credentials; every file problem names its key."""
    cert = _read_pem(tls.cert, "listen.tls.cert", "certificate")
    key = _read_pem(tls.key, "listen.tls.key", "key")
    _check_pair(cert, key)
    ca = (_read_pem(tls.client_ca, "listen.tls.client_ca", "certificate")
          if tls.client_ca and tls.client_auth != "none" else None)
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=ca,
        require_client_auth=tls.client_auth == "require",
    )


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ConfigError("listen.tls.key", "does not match the certificate in listen.tls.cert")
