"""Transport security: the listener's certificate material, read and checked in one place,
and the inventory of every certificate tfgate uses (for expiry monitoring).

The listener's material is read into a `ServerTLS` (bytes, checked: PEM, key matches the
certificate), which `runtime.py` hands to gRPC. A reload reads it again and the runtime
hands the new one to new handshakes, so rotating files needs no restart.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass
from datetime import datetime

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


@dataclass(frozen=True)
class ServerTLS:
    """The listener's certificate chain, key and client CA bundle, as read and checked."""

    cert: bytes
    key: bytes
    client_ca: bytes | None  # None: no client certificate is asked for

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.client_ca)

    def certificates(self) -> list[CertificateInUse]:
        found = certificates_in("listen.tls.cert", self.cert)
        return found + (certificates_in("listen.tls.client_ca", self.client_ca)
                        if self.client_ca else [])


def load_server_tls(tls: config.ListenTLS, client_auth: str | None = None) -> ServerTLS:
    """Read and check the listener's files; every problem names its key. `client_auth`
    is the running listener's mode when reloading (gRPC fixes it at start), else the
    config's own."""
    mode = client_auth or tls.client_auth
    cert = _read_pem(tls.cert, "listen.tls.cert", "certificate")
    key = _read_pem(tls.key, "listen.tls.key", "key")
    _check_pair(cert, key)
    if mode == "none":
        return ServerTLS(cert, key, None)
    if tls.client_ca is None:
        raise ConfigError("listen.tls.client_ca", "required: the running listener requires "
                          "client certificates (listen.tls.client_auth changes at restart)")
    return ServerTLS(cert, key, _read_pem(tls.client_ca, "listen.tls.client_ca", "certificate"))


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ConfigError("listen.tls.key", "does not match the certificate in listen.tls.cert")


# -- the certificates in use, for expiry monitoring ---------------------------------------

@dataclass(frozen=True)
class CertificateInUse:
    """One certificate of a file tfgate uses, named by the config key of that file."""

    key: str  # e.g. listen.tls.cert, listen.tls.client_ca, upstreams.NAME.tls.cert
    subject: str
    serial: str  # hex
    not_after: datetime

    def seconds_left(self, now: float | None = None) -> float:
        """Seconds until it expires (negative once it has)."""
        return self.not_after.timestamp() - (time.time() if now is None else now)


def certificates_in(key: str, pem: bytes) -> list[CertificateInUse]:
    """Every certificate of a PEM bundle (a chain or a CA bundle)."""
    return [CertificateInUse(key, cert.subject.rfc4514_string(), f"{cert.serial_number:x}",
                             cert.not_valid_after_utc)
            for cert in x509.load_pem_x509_certificates(pem)]


def upstream_certificates(cfg: config.Config) -> list[CertificateInUse]:
    """The CA bundles and client certificates of the upstreams' TLS, read now."""
    found: list[CertificateInUse] = []
    for name, upstream in cfg.upstreams.items():
        if upstream.tls is None:
            continue
        files = [("ca", upstream.tls.ca), ("cert", upstream.tls.cert)]
        for field, path in files:
            if path is not None:
                where = f"upstreams.{name}.tls.{field}"
                found += certificates_in(where, _read_pem(path, where, "certificate"))
    return found
