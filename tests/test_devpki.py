"""Tests for tfgate_dev.devpki: chain, extensions, file modes, JWTs, CLI and a real mutual-TLS gRPC call."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tfgate_dev.devpki import DevPKI, Issued, SigningKey, main, mint_claims, write_jwks

REPO = Path(__file__).resolve().parent.parent
SPIFFE = "spiffe://example.org/ns/demo/sa/alice"


@pytest.fixture
def pki(tmp_path: Path) -> DevPKI:
    return DevPKI.create(tmp_path / "pki")


def _cert(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem)


def _store(pki: DevPKI) -> Store:
    return Store([_cert(pki.ca)])


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_is_self_signed_ca(pki: DevPKI) -> None:
    ca = _cert(pki.ca)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "tfgate dev CA"
    ca.verify_directly_issued_by(ca)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    now = datetime.now(UTC)
    assert ca.not_valid_before_utc < now < ca.not_valid_after_utc
    assert ca.not_valid_after_utc - now > timedelta(days=29)
    assert (
        pki.ca.cert_path == pki.directory / "ca.pem"
        and pki.ca.cert_path.read_bytes() == pki.ca.cert_pem
    )
    assert pki.ca.key_path == pki.directory / "ca.key"


def test_server_cert_verifies_for_its_names(pki: DevPKI) -> None:
    server = pki.server()
    cert = _cert(server)
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    for subject in (DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = PolicyBuilder().store(_store(pki)).build_server_verifier(subject).verify(cert, [])
        assert chain[-1] == _cert(pki.ca)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(pki)).build_server_verifier(DNSName("example.com")).verify(
            cert, []
        )
    assert (server.cert_path, server.key_path) == (
        pki.directory / "server.pem",
        pki.directory / "server.key",
    )


def test_client_cert_spiffe_and_dns(pki: DevPKI) -> None:
    issued = pki.client("alice", spiffe_id=SPIFFE, dns=("alice.internal",))
    cert = _cert(issued)
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert _sans(cert).get_values_for_type(x509.DNSName) == ["alice.internal"]
    verified = PolicyBuilder().store(_store(pki)).build_client_verifier().verify(cert, [])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(SPIFFE) in verified.subjects
    assert issued.cert_path == pki.directory / "alice.pem"
    # a server certificate is not acceptable as a client certificate
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(pki)).build_client_verifier().verify(_cert(pki.server()), [])


def test_client_without_san_and_safe_stem(pki: DevPKI) -> None:
    issued = pki.client("Bob Smith/ops")
    cert = _cert(issued)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cert.verify_directly_issued_by(_cert(pki.ca))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Bob Smith/ops"
    assert issued.cert_path is not None and issued.cert_path.parent == pki.directory
    assert issued.cert_path.name == "Bob_Smith_ops.pem"


def test_private_key_files_are_0600(pki: DevPKI) -> None:
    issued = [pki.ca, pki.server(), pki.client("c", spiffe_id=SPIFFE)]
    for item in issued:
        assert item.key_path is not None and item.cert_path is not None
        assert stat.S_IMODE(item.key_path.stat().st_mode) == 0o600
        assert item.key_path.read_bytes() == item.key_pem
        assert b"PRIVATE KEY" in item.key_pem


def test_expired_client_cert(pki: DevPKI) -> None:
    not_after = datetime.now(UTC) - timedelta(days=1)
    cert = _cert(pki.client("old", spiffe_id=SPIFFE, not_after=not_after))
    assert cert.not_valid_after_utc == not_after.replace(microsecond=0)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(pki)).build_client_verifier().verify(cert, [])
    # still correctly signed; only its dates are wrong (the CA itself starts an hour ago,
    # so a path check "back then" would fail on the CA's validity, not the leaf's)
    cert.verify_directly_issued_by(_cert(pki.ca))
    explicit = _cert(
        pki.client("window", not_before=datetime(2020, 1, 1), not_after=datetime(2020, 2, 1))
    )
    assert explicit.not_valid_before_utc == datetime(2020, 1, 1, tzinfo=UTC)
    assert explicit.not_valid_after_utc == datetime(2020, 2, 1, tzinfo=UTC)


def test_rogue_ca_is_independent(tmp_path: Path, pki: DevPKI) -> None:
    rogue = DevPKI.create(tmp_path / "rogue", common_name="rogue CA")
    assert _cert(rogue.ca).subject != _cert(pki.ca).subject
    bad = _cert(rogue.client("mallory", spiffe_id=SPIFFE))
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(pki)).build_client_verifier().verify(bad, [])
    # issuing with ca= signs with the other CA but writes into this PKI's directory
    other = pki.client("eve", spiffe_id=SPIFFE, ca=rogue)
    assert other.cert_path == pki.directory / "eve.pem"
    _cert(other).verify_directly_issued_by(_cert(rogue.ca))
    PolicyBuilder().store(_store(rogue)).build_client_verifier().verify(_cert(other), [])


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_tokens_verify_with_jwk_and_pem(alg: str) -> None:
    key = SigningKey.generate("k1", alg)
    claims = mint_claims(
        issuer="https://issuer.test", audience="tfgate", subject="alice", scope="predict"
    )
    token = key.token(claims)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == "k1" and header["alg"] == alg
    jwk = key.public_jwk()
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == ("k1", alg, "sig")
    assert "d" not in jwk  # public only
    for verification_key in (jwt.PyJWK(jwk).key, key.public_pem()):
        decoded = jwt.decode(
            token,
            verification_key,
            algorithms=[alg],
            audience="tfgate",
            issuer="https://issuer.test",
        )
        assert decoded == claims
    other = SigningKey.generate("k2", alg)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_pem(), algorithms=[alg], audience="tfgate")
    assert b"PRIVATE KEY" in key.private_pem()


def test_token_header_overrides_and_unsupported_alg() -> None:
    key = SigningKey.generate("k1")
    token = key.token({"sub": "x"}, headers={"kid": "other", "typ": "at+jwt"})
    assert jwt.get_unverified_header(token)["kid"] == "other"
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    with pytest.raises(ValueError):
        SigningKey.generate("k", "HS256")


def test_mint_claims_and_jwks(tmp_path: Path) -> None:
    claims = mint_claims(issuer="i", audience="a", subject="s", now=1000.5, ttl=60, tenant="t")
    assert claims == {
        "iss": "i",
        "aud": "a",
        "sub": "s",
        "iat": 1000,
        "nbf": 1000,
        "exp": 1060,
        "tenant": "t",
    }
    keys = [
        SigningKey.generate("a"),
        SigningKey.generate("b", "RS256"),
        SigningKey.generate("c", "EdDSA"),
    ]
    path = write_jwks(tmp_path / "jwks.json", keys)
    jwks = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
    assert [k.key_id for k in jwks.keys] == ["a", "b", "c"]
    token = keys[1].token(mint_claims(issuer="i", audience="a", subject="s"))
    assert jwt.decode(token, jwks["b"].key, algorithms=["RS256"], audience="a")["sub"] == "s"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                str(out),
                "--client",
                f"alice={SPIFFE}",
                "--client",
                "bob",
                "--jwt-issuer",
                "https://i",
            ]
        )
        == 0
    )
    names = {p.name for p in out.iterdir()}
    assert names == {
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "alice.pem",
        "alice.key",
        "bob.pem",
        "bob.key",
        "signing.key",
        "jwks.json",
        "jwt-issuer",
    }
    assert str(out / "jwks.json") in capsys.readouterr().out
    alice = x509.load_pem_x509_certificate((out / "alice.pem").read_bytes())
    assert _sans(alice).get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    with pytest.raises(x509.ExtensionNotFound):
        x509.load_pem_x509_certificate(
            (out / "bob.pem").read_bytes()
        ).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert stat.S_IMODE((out / "signing.key").stat().st_mode) == 0o600


def test_make_dev_pki_script(tmp_path: Path) -> None:
    script = REPO / "certs" / "make-dev-pki"
    assert script.stat().st_mode & stat.S_IXUSR
    cmd = [str(script), str(tmp_path / "o"), "--client", "c"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "server.pem" in result.stdout
    assert (tmp_path / "o" / "c.pem").exists()
    result = subprocess.run(
        [sys.executable, "-m", "tfgate_dev.devpki", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "ca.pem").exists()


# --- real mutual TLS over gRPC ------------------------------------------------------------

_METHOD = "/devpki.Test/Echo"


@pytest.fixture
def mtls_server(pki: DevPKI) -> Iterator[tuple[str, list[dict[str, list[bytes]]]]]:
    seen: list[dict[str, list[bytes]]] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        auth = {k: list(v) for k, v in context.auth_context().items()}
        auth["<peer_identity_key>"] = [(context.peer_identity_key() or "").encode()]
        auth["<peer_identities>"] = list(context.peer_identities() or [])
        print("auth_context:", auth)
        seen.append(auth)
        return b"echo:" + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "devpki.Test", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    cert = pki.server()
    creds = grpc.ssl_server_credentials(
        [(cert.key_pem, cert.cert_pem)], root_certificates=pki.ca.cert_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        server.stop(None)


def _call(target: str, ca_pem: bytes, client: Issued) -> bytes:
    creds = grpc.ssl_channel_credentials(ca_pem, client.key_pem, client.cert_pem)
    with grpc.secure_channel(target, creds) as channel:
        response: bytes = channel.unary_unary(_METHOD)(b"hi", timeout=10)
        return response


def test_mtls_grpc_accepts_own_ca_and_exposes_auth_context(
    pki: DevPKI, mtls_server: tuple[str, list[dict[str, list[bytes]]]]
) -> None:
    target, seen = mtls_server
    client = pki.client("alice", spiffe_id=SPIFFE)
    assert _call(target, pki.ca.cert_pem, client) == b"echo:hi"
    (auth,) = seen
    assert auth["transport_security_type"] == [b"ssl"]
    assert auth["x509_common_name"] == [b"alice"]
    assert auth["x509_subject_alternative_name"] == [SPIFFE.encode()]
    assert auth["peer_spiffe_id"] == [SPIFFE.encode()]
    assert auth["x509_pem_cert"] == [client.cert_pem]
    assert auth["x509_subject"] == [b"CN=alice,O=tfgate dev"]
    assert auth["peer_uri"] == [SPIFFE.encode()]
    # grpc's "peer identity" is the SAN list when present
    assert auth["<peer_identity_key>"] == [b"x509_subject_alternative_name"]
    assert auth["<peer_identities>"] == [SPIFFE.encode()]

    # no SAN at all: no peer_spiffe_id, no x509_subject_alternative_name
    plain = pki.client("bob")
    assert _call(target, pki.ca.cert_pem, plain) == b"echo:hi"
    bob = seen[1]
    assert bob["x509_common_name"] == [b"bob"]
    assert (
        "peer_spiffe_id" not in bob
        and "x509_subject_alternative_name" not in bob
        and "peer_uri" not in bob
    )
    assert bob["<peer_identity_key>"] == [b"x509_common_name"]
    assert bob["<peer_identities>"] == [b"bob"]


def test_mtls_grpc_rejects_rogue_ca_client(
    tmp_path: Path, pki: DevPKI, mtls_server: tuple[str, list[dict[str, list[bytes]]]]
) -> None:
    target, seen = mtls_server
    rogue = DevPKI.create(tmp_path / "rogue", common_name="rogue CA")
    with pytest.raises(grpc.RpcError) as excinfo:
        _call(target, pki.ca.cert_pem, rogue.client("mallory", spiffe_id=SPIFFE))
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    # an expired client certificate from the right CA is refused the same way
    expired = pki.client("old", spiffe_id=SPIFFE, not_after=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(grpc.RpcError) as excinfo:
        _call(target, pki.ca.cert_pem, expired)
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen == []
