"""Tests for proxy.authn: certificate and token make one principal, or the call is refused."""

from __future__ import annotations

import pathlib

import pytest

from proxy import config
from proxy.authn import Authenticator
from proxy.authn.jwt import TokenVerifier
from proxy.authn.mtls import CertificateIdentities
from proxy.errors import Code, Reason, Reject
from tfgate_dev.devpki import DevPKI, SigningKey, mint_claims, write_jwks

NOW = 1_800_000_000
ISS = "https://issuer.example"
SPIFFE = "spiffe://example.org/ns/prod/sa/alice"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, SigningKey, pathlib.Path]:
    out = tmp_path_factory.mktemp("authn")
    cert = DevPKI.create(out).client("alice", spiffe_id=SPIFFE).cert_pem
    key = SigningKey.generate("k1", "ES256")
    return cert, key, write_jwks(out / "jwks.json", [key])


@pytest.fixture
def authenticator(material: tuple[bytes, SigningKey, pathlib.Path]) -> Authenticator:
    cfg = config.JWT.model_validate({"issuers": [{
        "issuer": ISS, "audiences": ["tfgate"], "algorithms": ["ES256"],
        "jwks_file": str(material[2])}]})
    return Authenticator(CertificateIdentities(), TokenVerifier(cfg, clock=lambda: NOW))


def _bearer(key: SigningKey) -> list[tuple[str, str]]:
    # {"iss": ISS, "aud": "tfgate", "sub": "bob", "iat": NOW, "nbf": NOW, "exp": NOW+600,
    #  "scope": "predict"}
    valid = key.token(mint_claims(issuer=ISS, audience="tfgate", subject="bob", now=NOW,
                                  scope="predict"))
    return [("authorization", f"Bearer {valid}")]


class TestAuthenticator:
    def test_certificate_only(self, authenticator: Authenticator,
                              material: tuple[bytes, SigningKey, pathlib.Path]) -> None:
        """A client certificate alone gives a certificate principal."""
        principal = authenticator.authenticate(material[0], [])
        assert principal.spiffe_id == SPIFFE and principal.has_certificate
        assert not principal.has_token

    def test_token_only(self, authenticator: Authenticator,
                        material: tuple[bytes, SigningKey, pathlib.Path]) -> None:
        """A bearer token alone gives a token principal."""
        principal = authenticator.authenticate(None, _bearer(material[1]))
        assert principal.subject == "bob" and principal.has_token
        assert not principal.has_certificate

    def test_both(self, authenticator: Authenticator,
                  material: tuple[bytes, SigningKey, pathlib.Path]) -> None:
        """Certificate and token merge into one principal with both identities."""
        principal = authenticator.authenticate(material[0],
                                               _bearer(material[1]))
        assert (principal.spiffe_id, principal.subject) == (SPIFFE, "bob")
        assert principal.has_certificate and principal.has_token
        assert principal.scopes == frozenset({"predict"})

    def test_neither(self, authenticator: Authenticator) -> None:
        """No certificate and no token is UNAUTHENTICATED."""
        with pytest.raises(Reject) as info:
            authenticator.authenticate(None, [("x-other", "1")])
        assert info.value.code is Code.UNAUTHENTICATED
        assert info.value.reason is Reason.NO_CREDENTIALS

    def test_bad_token_with_good_certificate(
            self, authenticator: Authenticator,
            material: tuple[bytes, SigningKey, pathlib.Path]) -> None:
        """An invalid token is refused even when the certificate alone would do."""
        with pytest.raises(Reject) as info:
            authenticator.authenticate(material[0],
                                       [("authorization", "Bearer not.a.jwt")])
        assert info.value.code is Code.UNAUTHENTICATED

    def test_token_without_verifier(self,
                                    material: tuple[bytes, SigningKey, pathlib.Path]) -> None:
        """With no authn.jwt configured, a presented token is refused, not ignored."""
        authenticator = Authenticator(CertificateIdentities(), None)
        with pytest.raises(Reject) as info:
            authenticator.authenticate(material[0], _bearer(material[1]))
        assert info.value.reason is Reason.TOKEN_INVALID


def test_certificate_without_any_identity_has_a_display_name():
    """A certificate with no CN and no SANs is shown as such, never as `cn:None`."""
    from proxy.call import Principal

    assert Principal(has_certificate=True).display() == "cert:no-identity"


def test_display_cannot_be_forged_by_a_common_name():
    """A CN that looks like 'certificate + token' is escaped, so it reads as one CN."""
    from proxy.call import Principal

    forged = Principal(cn="x jwt:https://iss#admin", has_certificate=True)
    real = Principal(cn="x", has_certificate=True, issuer="https://iss", subject="admin",
                     has_token=True)
    assert forged.display() == "cn:x%20jwt:https://iss%23admin"
    assert forged.display() != real.display()


def test_a_rendered_name_never_carries_over_to_a_merged_principal():
    """display() and limit_key() are rendered once per principal object; the principal
    merged with a token is a new value with its own name, the certificate part's limit
    key stays the certificate's, and equal principals stay equal however they were used."""
    from proxy.call import Principal

    cert = Principal(spiffe_id="spiffe://example.org/a", has_certificate=True)
    token = Principal(subject="alice", issuer="https://iss", has_token=True)
    assert cert.display() == cert.limit_key() == "spiffe://example.org/a"
    both = cert.merged(token)
    assert both.display() == "spiffe://example.org/a jwt:https://iss#alice"
    assert both.limit_key() == "spiffe://example.org/a"
    assert token.limit_key() == token.display() == "jwt:https://iss#alice"
    fresh = Principal(spiffe_id="spiffe://example.org/a", has_certificate=True)
    assert fresh == cert and hash(fresh) == hash(cert) and repr(fresh) == repr(cert)


def test_the_merged_principal_of_one_caller_is_kept_and_bounded() -> None:
    """Certificate + token: the same caller gets the same merged principal back (its
    name and limit key are rendered once), a different token a different one, and the
    memo of merged principals stays within its entry bound."""
    from proxy.authn import _MERGED_MAX
    from proxy.call import Principal

    authenticator = Authenticator(CertificateIdentities(), None)
    cert = Principal(spiffe_id="spiffe://example.org/a", has_certificate=True)
    alice = Principal(subject="alice", issuer="https://iss", has_token=True)
    first = authenticator._merge(cert, alice)
    assert authenticator._merge(cert, alice) is first
    assert first == cert.merged(alice) and first.display().endswith("jwt:https://iss#alice")
    bob = authenticator._merge(cert, Principal(subject="bob", issuer="https://iss",
                                               has_token=True))
    assert bob.subject == "bob" and bob.limit_key() == first.limit_key()
    for i in range(_MERGED_MAX + 10):
        authenticator._merge(cert, Principal(subject=f"s{i}", issuer="https://iss",
                                             has_token=True))
    assert len(authenticator._merged) <= _MERGED_MAX
