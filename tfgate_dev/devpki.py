"""Throwaway development PKI and JWT tooling for tfgate.

Used by the tests, by ``tfgate demo`` and by ``certs/make-dev-pki``. Everything made here
is for local development only: keys are unencrypted, CAs live for 30 days, and nothing
generated is ever committed (``.gitignore`` ignores ``*.key``, ``*.pem`` and ``certs/out/``).

* :class:`DevPKI` - an ECDSA P-256 CA that issues server (ServerAuth) and client
  (ClientAuth, optional SPIFFE URI SAN) leaf certificates, writing PEM files to a directory
  (private keys with mode 0600). Several independent CAs may coexist ("rogue CA" tests).
* :class:`SigningKey` - an ES256 / RS256 / EdDSA key that mints JWTs and exports its JWK.
* :func:`write_jwks`, :func:`mint_claims` - JWKS files and standard claim sets.

CLI: ``python -m tfgate_dev.devpki [OUTDIR] [--client NAME[=SPIFFE_ID]]... [--server-dns NAME]...
[--server-ip IP]... [--jwt-issuer URL]``; OUTDIR defaults to ``certs/out`` of this checkout.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_OUT", "ISSUER_FILE", "DevPKI", "Issued", "SigningKey", "main",
           "mint_claims", "write_jwks"]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "certs" / "out"
ISSUER_FILE = "jwt-issuer"  # the issuer URL the CLI made signing.key for (tokens.py reads it)

_CA_LIFETIME = timedelta(days=30)
_BACKDATE = timedelta(hours=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (PEM), plus where they were written, if anywhere."""

    cert_pem: bytes
    key_pem: bytes
    cert_path: Path | None = None
    key_path: Path | None = None


def _key_pem(key: PrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path``; private files are created (and forced) to mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with open(fd, "wb") as fh:
        os.fchmod(fd, 0o600 if private else 0o644)  # also when the file already existed
        fh.write(data)
    return path


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "client"


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _utc(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _name(common_name: str) -> x509.Name:
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tfgate dev")
    return x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _save(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_pem, key_pem = cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
    cert_path = _write(directory / f"{stem}.pem", cert_pem)
    return Issued(
        cert_pem, key_pem, cert_path, _write(directory / f"{stem}.key", key_pem, private=True)
    )


class DevPKI:
    """A development certificate authority rooted in ``directory``. Use :meth:`create`."""

    def __init__(
        self,
        directory: Path,
        ca: Issued,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
    ) -> None:
        self.directory = directory
        self.ca = ca
        self._ca_key = ca_key
        self._ca_cert = ca_cert

    @classmethod
    def create(cls, directory: Path, *, common_name: str = "tfgate dev CA") -> DevPKI:
        """Make a self-signed P-256 CA; write ``ca.pem`` and ``ca.key`` (0600) to ``directory``."""
        directory = Path(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(directory, _save(directory, "ca", cert, key), key, cert)

    def _issue(
        self,
        common_name: str,
        *,
        eku: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName],
        file_stem: str,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        signer: DevPKI | None = None,
    ) -> Issued:
        signer = signer or self
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        not_after = not_after or now + _CA_LIFETIME
        not_before = not_before or min(now - _BACKDATE, not_after - timedelta(days=1))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(signer._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer._ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(signer._ca_key, hashes.SHA256())
        return _save(self.directory, file_stem, cert, key)

    def server(
        self,
        name: str = "localhost",
        *,
        dns: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1", "::1"),
        file_stem: str = "server",
    ) -> Issued:
        """Issue a ServerAuth leaf (CN=name, DNS and IP SANs); writes ``<file_stem>.pem/.key``."""
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(
            name, eku=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans, file_stem=file_stem
        )

    def client(
        self,
        name: str,
        *,
        spiffe_id: str | None = None,
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        file_stem: str | None = None,
        not_after: datetime | None = None,
        not_before: datetime | None = None,
        ca: DevPKI | None = None,
    ) -> Issued:
        """Issue a ClientAuth leaf (CN=name, optional SPIFFE URI and DNS SANs).

        ``uris`` are further URI SANs, written as given (tests use them for certificates
        with several or malformed URIs; tfgate gives such a certificate no SPIFFE ID).
        ``ca`` signs with another :class:`DevPKI` instead (files still go to this directory);
        ``not_after`` in the past makes an expired certificate. Naive datetimes are UTC.
        """
        sans: list[x509.GeneralName] = (
            [x509.UniformResourceIdentifier(spiffe_id)] if spiffe_id else []
        )
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        return self._issue(
            name,
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=sans,
            file_stem=file_stem or _safe_stem(name),
            not_before=_utc(not_before),
            not_after=_utc(not_after),
            signer=ca,
        )


_GENERATORS: dict[str, Callable[[], PrivateKey]] = {
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


class SigningKey:
    """A JWT signing key (ES256, RS256 or EdDSA) identified by ``kid``."""

    def __init__(self, kid: str, alg: str, key: PrivateKey) -> None:
        self.kid = kid
        self.alg = alg
        self.key = key

    @classmethod
    def generate(cls, kid: str, alg: str = "ES256") -> SigningKey:
        if alg not in _GENERATORS:
            raise ValueError(f"unsupported alg {alg!r}; expected one of {sorted(_GENERATORS)}")
        return cls(kid, alg, _GENERATORS[alg]())

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK dict with ``kid``, ``alg`` and ``use="sig"``."""
        jwk = jwt.get_algorithm_by_name(self.alg).to_jwk(self.key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        return self.key.public_key().public_bytes(serialization.Encoding.PEM, spki)

    def private_pem(self) -> bytes:
        return _key_pem(self.key)

    def token(
        self,
        claims: dict[str, Any],
        *,
        headers: dict[str, Any] | None = None,
        alg: str | None = None,
    ) -> str:
        """Sign ``claims``; the header carries this key's ``kid`` unless ``headers`` overrides it."""
        header = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self.key, algorithm=alg or self.alg, headers=header)


def write_jwks(path: Path, keys: Iterable[SigningKey]) -> Path:
    """Write ``{"keys": [jwk, ...]}`` (public keys only) to ``path``."""
    return _write(
        Path(path), json.dumps({"keys": [k.public_jwk() for k in keys]}, indent=2).encode() + b"\n"
    )


def mint_claims(
    *,
    issuer: str,
    audience: str | list[str],
    subject: str,
    now: float | None = None,
    ttl: int = 600,
    **extra: Any,
) -> dict[str, Any]:
    """Standard iss/aud/sub/iat/nbf/exp claims (``exp = now + ttl``) plus ``extra``."""
    issued_at = int(time.time() if now is None else now)
    claims = {"iss": issuer, "aud": audience, "sub": subject, "iat": issued_at, "nbf": issued_at}
    return {**claims, "exp": issued_at + ttl, **extra}


def _client_spec(value: str) -> tuple[str, str | None]:
    name, sep, spiffe = value.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"bad --client {value!r}: expected NAME[=SPIFFE_ID]")
    return name, (spiffe if sep else None)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfgate_dev.devpki", description="Make a throwaway dev PKI."
    )
    parser.add_argument(
        "outdir", type=Path, nargs="?", default=DEFAULT_OUT,
        help=f"directory to write into, created if missing (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--server-dns", action="append", default=[], metavar="NAME",
        help="a further DNS name for the server certificate, besides localhost (repeatable)",
    )
    parser.add_argument(
        "--server-ip", action="append", default=[], metavar="IP", type=_ip,
        help="a further IP address for the server certificate, besides 127.0.0.1 and ::1 "
        "(repeatable)",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        type=_client_spec,
        metavar="NAME[=SPIFFE_ID]",
        help="issue a client certificate (repeatable)",
    )
    parser.add_argument(
        "--jwt-issuer", metavar="URL", help="also make signing.key and jwks.json for this issuer"
    )
    args = parser.parse_args(argv)

    pki = DevPKI.create(args.outdir)
    server = pki.server(
        dns=("localhost", *args.server_dns), ips=("127.0.0.1", "::1", *args.server_ip)
    )
    rows: list[tuple[str, Path | None]] = [
        ("CA certificate", pki.ca.cert_path),
        ("CA key", pki.ca.key_path),
        ("server certificate", server.cert_path),
        ("server key", server.key_path),
    ]
    for name, spiffe_id in args.client:
        issued = pki.client(name, spiffe_id=spiffe_id)
        label = f"client {name}" + (f" ({spiffe_id})" if spiffe_id else "")
        rows += [(f"{label} certificate", issued.cert_path), (f"{label} key", issued.key_path)]
    if args.jwt_issuer:
        key = SigningKey.generate("dev-1")
        signing = _write(args.outdir / "signing.key", key.private_pem(), private=True)
        rows.append(("JWT signing key (ES256, kid dev-1)", signing))
        rows.append(
            (f"JWKS for issuer {args.jwt_issuer}", write_jwks(args.outdir / "jwks.json", [key]))
        )
        issuer = _write(args.outdir / ISSUER_FILE, args.jwt_issuer.encode() + b"\n")
        rows.append(("issuer (for `tfgate token mint`)", issuer))
    width = max(len(label) for label, _ in rows)
    for label, path in rows:
        print(f"{label:<{width}}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
