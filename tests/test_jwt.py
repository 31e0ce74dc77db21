"""Tests for proxy.authn.jwt and proxy.authn.jwks: extraction, verification, cache, keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import threading
import time
from typing import Any

import grpc
import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proxy import config
from proxy.authn import jwks
from proxy.authn.jwt import TokenVerifier, extract_token, is_compact_jws
from proxy.call import Principal
from proxy.errors import Code, ConfigError, Reason, Reject
from tfgate_dev.devpki import DevPKI, SigningKey, mint_claims, write_jwks

NOW = 1_800_000_000.0
ISS = "https://issuer.example"
OTHER_ISS = "https://other.example"
AUD = "tfgate"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {
        "es": SigningKey.generate("es-1", "ES256"),
        "rs": SigningKey.generate("rs-1", "RS256"),
        "ed": SigningKey.generate("ed-1", "EdDSA"),
        "other": SigningKey.generate("other-1", "ES256"),
        # An attacker's key that claims the trusted ES256 kid.
        "rogue": SigningKey.generate("es-1", "ES256"),
    }


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SigningKey]) -> pathlib.Path:
    out = tmp_path_factory.mktemp("jwt")
    write_jwks(out / "jwks.json", [keys["es"], keys["rs"], keys["ed"]])
    (out / "other.pem").write_bytes(keys["other"].public_pem())
    return out


def _cfg(key_dir: pathlib.Path, **jwt: Any) -> config.JWT:
    issuers = [
        {"issuer": ISS, "audiences": [AUD, "tfgate-alt"], "algorithms": ["ES256", "RS256", "EdDSA"],
         "jwks_file": str(key_dir / "jwks.json")},
        {"issuer": OTHER_ISS, "audiences": [AUD], "algorithms": ["ES256"],
         "public_keys": [str(key_dir / "other.pem")]},
    ]
    return config.JWT.model_validate({"issuers": issuers, **jwt})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(key_dir: pathlib.Path, clock: Clock) -> TokenVerifier:
    return TokenVerifier(_cfg(key_dir), clock=clock)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = mint_claims(issuer=ISS, audience=AUD, subject="alice", now=NOW, ttl=600,
                         scope="predict read")
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


def _signed(key: SigningKey, header: dict[str, Any], claims: Any) -> str:
    """Sign exactly this header and payload (PyJWT's encode refuses some of the odd ones)."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = pyjwt.get_algorithm_by_name(key.alg).sign(head.encode(), key.key)
    return head + "." + _b64(signature)


def _signer(kid: str, key_pem: bytes) -> SigningKey:
    """An ES256 SigningKey from a DevPKI private key."""
    key = serialization.load_pem_private_key(key_pem, None)
    return SigningKey(kid, "ES256", key)  # type: ignore[arg-type]


def _rejected(verifier: TokenVerifier, token: str) -> Reject:
    with pytest.raises(Reject) as info:
        verifier.verify(token)
    assert info.value.code is Code.UNAUTHENTICATED
    assert token not in info.value.message and token not in info.value.detail
    return info.value


class TestValidTokens:
    @pytest.mark.parametrize("name", ["es", "rs", "ed"])
    def test_each_algorithm(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                            name: str) -> None:
        """ES256, RS256 and EdDSA tokens from the JWKS verify into a token principal."""
        # {"iss": ISS, "aud": "tfgate", "sub": "alice", "iat": NOW, "nbf": NOW, "exp": NOW+600,
        #  "scope": "predict read"}
        valid = keys[name].token(_claims())
        principal = verifier.verify(valid)
        assert principal == Principal(subject="alice", issuer=ISS,
                                      scopes=frozenset({"predict", "read"}), has_token=True)

    def test_audience_list(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """An `aud` list is accepted when any entry is an accepted audience."""
        # {..., "aud": ["someone-else", "tfgate-alt"]}
        aud_list = keys["es"].token(_claims(aud=["someone-else", "tfgate-alt"]))
        assert verifier.verify(aud_list).subject == "alice"

    def test_scope_list(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """Scopes may be a JSON list instead of a space-separated string."""
        # {..., "scope": ["a", "b c"]}
        scope_list = keys["es"].token(_claims(scope=["a", "b c"]))
        assert verifier.verify(scope_list).scopes == frozenset({"a", "b c"})

    @pytest.mark.parametrize("raw", ["tenant\u00a0predict", "tenant\x1fpredict",
                                     "tenant\tpredict", "tenant\u2003predict"])
    def test_scope_string_splits_on_spaces_only(self, verifier: TokenVerifier,
                                                keys: dict[str, SigningKey], raw: str) -> None:
        """A scope string is split on spaces only (RFC 6749 §3.3), never on other
        whitespace: "tenant<NBSP>predict" is one scope, not a grant of `predict`."""
        # {..., "scope": "tenant\u00a0predict read"}
        token = keys["es"].token(_claims(scope=f"{raw}  read"))
        assert verifier.verify(token).scopes == frozenset({raw, "read"})

    def test_custom_scope_claim(self, key_dir: pathlib.Path, clock: Clock,
                                keys: dict[str, SigningKey]) -> None:
        """scope_claim names the claim scopes are read from (e.g. groups)."""
        verifier = TokenVerifier(_cfg(key_dir, scope_claim="groups"), clock=clock)
        # {..., "scope": "predict read", "groups": ["ml"]}
        groups = keys["es"].token(_claims(groups=["ml"]))
        assert verifier.verify(groups).scopes == frozenset({"ml"})

    def test_pem_issuer(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """An issuer configured with a PEM public key verifies its tokens."""
        # {"iss": OTHER_ISS, "aud": "tfgate", "sub": "alice", ...}
        pem_issuer = keys["other"].token(_claims(iss=OTHER_ISS))
        assert verifier.verify(pem_issuer).issuer == OTHER_ISS

    def test_kidless_token_single_key(self, tmp_path: pathlib.Path, clock: Clock,
                                      keys: dict[str, SigningKey]) -> None:
        """A token without a kid verifies against an issuer that has a single JWKS key."""
        write_jwks(tmp_path / "one.json", [keys["es"]])
        cfg = config.JWT.model_validate({"issuers": [{
            "issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
            "jwks_file": str(tmp_path / "one.json")}]})
        # header {"alg": "ES256"} (no kid); payload as in _claims()
        kidless = pyjwt.encode(_claims(), keys["es"].key, algorithm="ES256")
        assert "kid" not in pyjwt.get_unverified_header(kidless)
        assert TokenVerifier(cfg, clock=clock).verify(kidless).subject == "alice"

    def test_kidless_token_among_several_keys(self, verifier: TokenVerifier,
                                              keys: dict[str, SigningKey]) -> None:
        """Without a kid every key of the right algorithm is tried."""
        # header {"alg": "RS256"} (no kid)
        kidless = pyjwt.encode(_claims(), keys["rs"].key, algorithm="RS256")
        assert verifier.verify(kidless).subject == "alice"


class TestTime:
    def test_expired(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token past exp plus the leeway is refused as expired."""
        # {..., "iat": NOW-3600, "nbf": NOW-3600, "exp": NOW-31}
        expired = keys["es"].token(_claims(iat=NOW - 3600, nbf=NOW - 3600, exp=NOW - 31))
        assert _rejected(verifier, expired).reason is Reason.TOKEN_EXPIRED

    def test_expired_within_leeway(self, verifier: TokenVerifier,
                                   keys: dict[str, SigningKey]) -> None:
        """A token expired less than leeway_s (30 s) ago is still accepted."""
        # {..., "exp": NOW-29}
        just_expired = keys["es"].token(_claims(iat=NOW - 3600, nbf=NOW - 3600, exp=NOW - 29))
        assert verifier.verify(just_expired).subject == "alice"

    def test_zero_leeway(self, key_dir: pathlib.Path, clock: Clock,
                         keys: dict[str, SigningKey]) -> None:
        """With leeway 0, one second past exp is expired."""
        verifier = TokenVerifier(_cfg(key_dir, leeway_s=0), clock=clock)
        # {..., "exp": NOW-1}
        expired = keys["es"].token(_claims(iat=NOW - 60, nbf=NOW - 60, exp=NOW - 1))
        assert _rejected(verifier, expired).reason is Reason.TOKEN_EXPIRED

    def test_nbf_in_future(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token whose nbf is beyond the leeway is not yet valid."""
        # {..., "iat": NOW, "nbf": NOW+60, "exp": NOW+600}
        not_yet = keys["es"].token(_claims(nbf=NOW + 60))
        assert _rejected(verifier, not_yet).reason is Reason.TOKEN_NOT_YET_VALID

    def test_nbf_within_leeway(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """An nbf less than the leeway ahead is tolerated (clock skew)."""
        # {..., "nbf": NOW+20}
        skewed = keys["es"].token(_claims(nbf=NOW + 20))
        assert verifier.verify(skewed).subject == "alice"

    def test_iat_in_future(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token issued in the future (beyond the leeway) is refused."""
        # {..., "iat": NOW+120, "nbf" absent, "exp": NOW+600}
        from_future = keys["es"].token(_claims(iat=NOW + 120, nbf=None))
        assert _rejected(verifier, from_future).reason is Reason.TOKEN_NOT_YET_VALID

    def test_missing_exp(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token without exp is refused: it would be valid forever."""
        # {"iss": ISS, "aud": "tfgate", "sub": "alice", "iat": NOW, "nbf": NOW}
        no_exp = keys["es"].token(_claims(exp=None))
        assert _rejected(verifier, no_exp).reason is Reason.TOKEN_MISSING_CLAIM

    @pytest.mark.parametrize("exp", [True, "1900000000", [1900000000]])
    def test_exp_not_a_number(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                              exp: Any) -> None:
        """A boolean, string or list exp is refused, never read as a time."""
        # {..., "exp": true}  /  {..., "exp": "1900000000"}  /  {..., "exp": [1900000000]}
        bad_exp = keys["es"].token(_claims(exp=exp))
        assert _rejected(verifier, bad_exp).reason in (Reason.TOKEN_INVALID,
                                                       Reason.TOKEN_MALFORMED)

    @pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
    def test_non_finite_times(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                              claim: str, value: str) -> None:
        """NaN and infinite times (which Python's JSON accepts) are refused, never compared."""
        claims = json.dumps(_claims()).replace(f'"{claim}": {int(_claims()[claim])}',
                                               f'"{claim}": {value}')
        assert value in claims
        head = _b64(b'{"alg":"ES256","kid":"es-1"}') + "." + _b64(claims.encode())
        sig = pyjwt.get_algorithm_by_name("ES256").sign(head.encode(), keys["es"].key)
        # {..., "exp": NaN}: with NaN, `now > exp` is always false, so it would never expire
        non_finite = head + "." + _b64(sig)
        assert _rejected(verifier, non_finite).reason is Reason.TOKEN_INVALID

    def test_huge_integer_time(self, verifier: TokenVerifier,
                               keys: dict[str, SigningKey]) -> None:
        """An exp too large for a float is refused as invalid, not an internal error."""
        # {..., "exp": 10**400}
        huge_exp = _signed(keys["es"], {"alg": "ES256", "kid": "es-1"}, _claims(exp=10**400))
        assert _rejected(verifier, huge_exp).reason is Reason.TOKEN_INVALID

    def test_bool_nbf(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A boolean nbf is refused too."""
        # {..., "nbf": false}
        bool_nbf = keys["es"].token(_claims(nbf=False))
        assert _rejected(verifier, bool_nbf).reason is Reason.TOKEN_INVALID


class TestClaims:
    def test_wrong_audience(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token for another audience is refused."""
        # {..., "aud": "billing"}
        wrong_aud = keys["es"].token(_claims(aud="billing"))
        assert _rejected(verifier, wrong_aud).reason is Reason.TOKEN_BAD_AUDIENCE

    def test_missing_audience(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token with no aud is refused."""
        # {"iss": ISS, "sub": "alice", "iat": NOW, "nbf": NOW, "exp": NOW+600}
        no_aud = keys["es"].token(_claims(aud=None))
        assert _rejected(verifier, no_aud).reason is Reason.TOKEN_MISSING_CLAIM

    def test_unknown_issuer(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token from an issuer not in the config is refused before any key is tried."""
        # {..., "iss": "https://evil.example"}
        unknown_iss = keys["es"].token(_claims(iss="https://evil.example"))
        assert _rejected(verifier, unknown_iss).reason is Reason.TOKEN_UNKNOWN_ISSUER

    def test_missing_issuer(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token with no iss (or a non-string iss) has no trusted issuer."""
        # {"aud": "tfgate", "sub": "alice", ...}
        no_iss = keys["es"].token(_claims(iss=None))
        assert _rejected(verifier, no_iss).reason is Reason.TOKEN_UNKNOWN_ISSUER
        # {..., "iss": ["https://issuer.example"]}
        list_iss = _signed(keys["es"], {"alg": "ES256", "kid": "es-1"}, _claims(iss=[ISS]))
        assert _rejected(verifier, list_iss).reason in (Reason.TOKEN_UNKNOWN_ISSUER,
                                                        Reason.TOKEN_MALFORMED)

    def test_wrong_issuer_for_key(self, verifier: TokenVerifier,
                                  keys: dict[str, SigningKey]) -> None:
        """A token signed by one trusted issuer's key but claiming the other issuer is refused."""
        # {..., "iss": OTHER_ISS} signed by ISS's key es-1
        wrong_iss = keys["es"].token(_claims(iss=OTHER_ISS))
        assert _rejected(verifier, wrong_iss).reason in (Reason.TOKEN_INVALID,
                                                         Reason.TOKEN_UNKNOWN_KEY)

    def test_required_claim_missing(self, key_dir: pathlib.Path, clock: Clock,
                                    keys: dict[str, SigningKey]) -> None:
        """A configured required claim that the token lacks is named in the refusal."""
        cfg = _cfg(key_dir)
        issuer = cfg.issuers[0].model_copy(update={"required_claims": ["tenant"]})
        verifier = TokenVerifier(cfg.model_copy(update={"issuers": [issuer]}), clock=clock)
        # {..., no "tenant"}
        no_tenant = keys["es"].token(_claims())
        err = _rejected(verifier, no_tenant)
        assert err.reason is Reason.TOKEN_MISSING_CLAIM and "'tenant'" in err.message
        # {..., "tenant": "a"}
        assert verifier.verify(keys["es"].token(_claims(tenant="a"))).subject == "alice"

    @pytest.mark.parametrize("claims", [{"sub": 42}, {"scope": 7}, {"scope": ["a", 1]}])
    def test_malformed_identity_claims(self, verifier: TokenVerifier,
                                       keys: dict[str, SigningKey], claims: dict) -> None:
        """A non-string sub or a malformed scope claim is refused, not coerced."""
        # {..., "sub": 42}  /  {..., "scope": 7}  /  {..., "scope": ["a", 1]}
        odd = keys["es"].token(_claims(**claims))
        assert _rejected(verifier, odd).reason is Reason.TOKEN_INVALID


class TestAlgorithmsAndKeys:
    def test_alg_none(self, verifier: TokenVerifier) -> None:
        """An unsigned token (alg none) is refused: with its empty signature it is not
        even a compact JWS; with some signature bytes, `none` is not an allowed alg."""
        # header {"alg": "none", "kid": "es-1"}; payload as in _claims()
        alg_none = _unsigned({"alg": "none", "kid": "es-1"}, _claims())
        assert _rejected(verifier, alg_none).reason is Reason.TOKEN_MALFORMED
        alg_none = _unsigned({"alg": "none", "kid": "es-1"}, _claims(), signature=b"\0" * 64)
        assert _rejected(verifier, alg_none).reason is Reason.TOKEN_ALGORITHM_NOT_ALLOWED

    def test_hs256_with_public_key_as_secret(self, verifier: TokenVerifier,
                                             keys: dict[str, SigningKey]) -> None:
        """The RS256→HS256 confusion: an HMAC over the public key PEM is refused."""
        header = {"alg": "HS256", "typ": "JWT", "kid": "rs-1"}
        head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(_claims()).encode())
        secret = keys["rs"].public_pem()
        # header {"alg": "HS256", "kid": "rs-1"}; payload as in _claims(); HMAC key = RSA public PEM
        mac = hmac.new(secret, head.encode(), hashlib.sha256).digest()
        hs256_confusion = head + "." + _b64(mac)
        assert _rejected(verifier, hs256_confusion).reason is Reason.TOKEN_ALGORITHM_NOT_ALLOWED

    def test_hs256_refused_by_key_even_if_allowlisted(
            self, key_dir: pathlib.Path, clock: Clock, keys: dict[str, SigningKey]) -> None:
        """Even with HS256 forced into an allowlist (past config checks), no key verifies it."""
        cfg = _cfg(key_dir)
        forced = cfg.issuers[0].model_copy(update={"algorithms": ["ES256", "RS256", "HS256"]})
        verifier = TokenVerifier(cfg.model_copy(update={"issuers": [forced]}), clock=clock)
        header = {"alg": "HS256", "kid": "rs-1"}
        head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(_claims()).encode())
        # header {"alg": "HS256", "kid": "rs-1"}; HMAC key = RSA public PEM
        hs256_confusion = head + "." + _b64(
            hmac.new(keys["rs"].public_pem(), head.encode(), hashlib.sha256).digest())
        assert _rejected(verifier, hs256_confusion).reason is Reason.TOKEN_UNKNOWN_KEY

    def test_alg_not_in_issuer_allowlist(self, verifier: TokenVerifier,
                                         keys: dict[str, SigningKey]) -> None:
        """OTHER_ISS allows only ES256, so an RS256 token claiming it is refused by algorithm."""
        # header {"alg": "RS256", "kid": "rs-1"}; {..., "iss": OTHER_ISS}
        rs256_for_es_only = keys["rs"].token(_claims(iss=OTHER_ISS))
        assert _rejected(verifier, rs256_for_es_only).reason is (
            Reason.TOKEN_ALGORITHM_NOT_ALLOWED)

    def test_alg_mismatching_key(self, verifier: TokenVerifier,
                                 keys: dict[str, SigningKey]) -> None:
        """An EdDSA token naming the ES256 key's kid finds no usable key."""
        # header {"alg": "EdDSA", "kid": "es-1"}
        ed_with_es_kid = keys["ed"].token(_claims(), headers={"kid": "es-1"})
        assert _rejected(verifier, ed_with_es_kid).reason is Reason.TOKEN_UNKNOWN_KEY

    def test_unknown_kid(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A kid the issuer's JWKS does not have is refused."""
        # header {"alg": "ES256", "kid": "retired-7"}
        unknown_kid = keys["es"].token(_claims(), headers={"kid": "retired-7"})
        assert _rejected(verifier, unknown_kid).reason is Reason.TOKEN_UNKNOWN_KEY

    def test_non_string_kid(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A kid that is not a string is a malformed token."""
        # header {"alg": "ES256", "kid": 1}
        int_kid = _signed(keys["es"], {"alg": "ES256", "kid": 1}, _claims())
        assert _rejected(verifier, int_kid).reason in (Reason.TOKEN_MALFORMED,
                                                       Reason.TOKEN_UNKNOWN_KEY)

    def test_rogue_key_same_kid(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token signed by another key that claims the trusted kid fails the signature check."""
        # header {"alg": "ES256", "kid": "es-1"}; signed by the rogue key
        rogue_same_kid = keys["rogue"].token(_claims())
        err = _rejected(verifier, rogue_same_kid)
        assert err.reason is Reason.TOKEN_INVALID and "signature" in err.message

    def test_unknown_critical_header(self, verifier: TokenVerifier,
                                     keys: dict[str, SigningKey]) -> None:
        """A validly signed token with a `crit` extension we do not implement is refused."""
        # header {"alg": "ES256", "kid": "es-1", "crit": ["x-bind"], "x-bind": "..."}
        unknown_crit = keys["es"].token(_claims(), headers={"crit": ["x-bind"], "x-bind": "abc"})
        assert _rejected(verifier, unknown_crit).reason in (Reason.TOKEN_INVALID,
                                                            Reason.TOKEN_MALFORMED)

    def test_tampered_payload(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """Changing the payload of a valid token breaks its signature."""
        head, _, sig = keys["es"].token(_claims()).split(".")
        # payload {..., "sub": "admin"} under alice's signature
        tampered = f"{head}.{_b64(json.dumps(_claims(sub='admin')).encode())}.{sig}"
        assert _rejected(verifier, tampered).reason is Reason.TOKEN_INVALID

    @pytest.mark.parametrize("carrier", ["jwk", "jku", "x5u", "x5c"])
    @pytest.mark.parametrize("kid", ["es-1", None])
    def test_key_carrying_headers_ignored(self, verifier: TokenVerifier,
                                          keys: dict[str, SigningKey], tmp_path: pathlib.Path,
                                          carrier: str, kid: str | None) -> None:
        """A token signed by an attacker who ships their key in jwk/jku/x5u/x5c is refused."""
        pki = DevPKI.create(tmp_path)
        issued = pki.client("attacker")
        attacker = _signer("es-1", issued.key_pem)
        der = serialization.Encoding.DER
        cert_der = x509.load_pem_x509_certificate(issued.cert_pem).public_bytes(der)
        value: Any = {
            "jwk": attacker.public_jwk(),
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": [base64.b64encode(cert_der).decode()],
        }[carrier]
        headers: dict[str, Any] = {carrier: value, "kid": kid}
        # header {"alg": "ES256", "kid": "es-1" or absent, carrier: attacker key}; payload _claims()
        key_in_header = pyjwt.encode(_claims(), attacker.key, algorithm="ES256",
                                     headers={k: v for k, v in headers.items() if v is not None})
        assert _rejected(verifier, key_in_header).reason is Reason.TOKEN_INVALID


class TestMalformed:
    @pytest.mark.parametrize("garbage", [
        "garbage", "a.b", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
        _unsigned({"alg": "ES256"}, [1, 2]),  # type: ignore[arg-type]
        "eyJhbGciOiJFUzI1NiJ9",
    ])
    def test_not_a_jwt(self, verifier: TokenVerifier, garbage: str) -> None:
        """Strings that are not three base64url JSON segments are malformed."""
        assert _rejected(verifier, garbage).reason is Reason.TOKEN_MALFORMED

    def test_huge_token(self, verifier: TokenVerifier, keys: dict[str, SigningKey]) -> None:
        """A token over max_token_bytes is refused unread."""
        # {..., "pad": "x" * 10000}: a valid signature over a 10 kB payload
        huge = keys["es"].token(_claims(pad="x" * 10_000))
        err = _rejected(verifier, huge)
        assert err.reason is Reason.TOKEN_MALFORMED and "too large" in err.message


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _aliases(segment: str) -> list[str]:
    """Other spellings of `segment`'s last character that base64 decodes to the same bytes
    (the unused low bits set), e.g. "QQ" and "QR" both decode to b"A"."""
    unused = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    index = _ALPHABET.index(segment[-1])
    return [segment[:-1] + _ALPHABET[index | bits] for bits in range(1, 1 << unused)]


def _decodes(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _canonical(token: str) -> bool:
    """Reference: three non-empty segments that re-encode to themselves, unpadded."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or any(c not in _ALPHABET for p in parts for c in p):
        return False
    try:
        return all(_b64(_decodes(part)) == part for part in parts)
    except ValueError:  # binascii.Error: a segment of 4k+1 characters
        return False


# Refusals leave a verifier unchanged, so one per test may serve every generated input.
_SHARED_VERIFIER = [HealthCheck.function_scoped_fixture]


class TestOneSpelling:
    """A token is a compact JWS in exactly one spelling; every other spelling of the same
    bytes is TOKEN_MALFORMED before any key, claim or cache entry is involved."""

    @pytest.mark.parametrize("name", ["es", "rs", "ed"])
    def test_padded_signature(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                              name: str) -> None:
        """`sig==` decodes to the same signature (PyJWT alone accepts it) but is refused,
        as is any other run of `=`."""
        valid = keys[name].token(_claims())
        padding = "=" * (-len(valid.rsplit(".", 1)[1]) % 4)
        assert padding
        lenient = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
        assert pyjwt.decode(valid + padding, keys[name].key.public_key(), algorithms=[
            keys[name].alg], audience=AUD, options=lenient)["sub"] == "alice"
        for extra in ("=", "==", "===", "===="):
            assert _rejected(verifier, valid + extra).reason is Reason.TOKEN_MALFORMED
        assert verifier.verify(valid).subject == "alice"

    @pytest.mark.parametrize("segment", [0, 1])
    def test_padded_header_or_payload(self, verifier: TokenVerifier,
                                      keys: dict[str, SigningKey], segment: int) -> None:
        """Padding on the header or the payload is refused too."""
        parts = keys["es"].token(_claims(sub="al")).split(".")
        parts[segment] += "=" * (-len(parts[segment]) % 4 or 2)
        assert _rejected(verifier, ".".join(parts)).reason is Reason.TOKEN_MALFORMED

    @pytest.mark.parametrize("segment", [0, 1, 2])
    @pytest.mark.parametrize("name", ["es", "rs", "ed"])
    def test_non_canonical_last_character(self, verifier: TokenVerifier,
                                          keys: dict[str, SigningKey], name: str,
                                          segment: int) -> None:
        """A last character with its unused low bits set decodes to the same bytes, so it
        is a second spelling of the same token: refused, in every segment."""
        # subjects chosen so that header, payload and signature all end in a partial quantum
        valid = next(t for t in (keys[name].token(_claims(sub="a" * n)) for n in range(1, 13))
                     if all(len(p) % 4 for p in t.split(".")))
        parts = valid.split(".")
        aliases = _aliases(parts[segment])
        assert aliases
        for alias in aliases:
            assert _decodes(alias) == _decodes(parts[segment])
            spelled = ".".join([*parts[:segment], alias, *parts[segment + 1:]])
            assert _rejected(verifier, spelled).reason is Reason.TOKEN_MALFORMED
        assert verifier.verify(valid).subject.startswith("a")

    @pytest.mark.parametrize("shape", [
        "{h}.{p}", "{h}.{p}.{s}.{s}", "{h}.{p}.{s}.{s}.{s}",  # missing, extra, JWE-shaped
        "{h}.{p}.", ".{p}.{s}", "{h}..{s}", "{h}.{p}.{s}.", ".{h}.{p}.{s}",
    ])
    def test_segment_count(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                           shape: str) -> None:
        """Exactly three non-empty segments: not two, four, five (JWE) or an empty one."""
        h, p, s = keys["es"].token(_claims()).split(".")
        assert _rejected(verifier, shape.format(h=h, p=p, s=s)).reason is Reason.TOKEN_MALFORMED

    @pytest.mark.parametrize("char", ["+", "/", " ", "\t", "\n", "%", "~", "\u00e9", "\uff21",
                                      "\x00", "!"])
    def test_characters_outside_the_alphabet(self, verifier: TokenVerifier,
                                             keys: dict[str, SigningKey], char: str) -> None:
        """A character outside RFC 4648 §5 anywhere (Python's decoder would skip it)."""
        valid = keys["es"].token(_claims())
        middle = len(valid) - 10  # inside the signature
        for at in (middle, len(valid)):
            assert _rejected(verifier, valid[:at] + char + valid[at:]).reason is (
                Reason.TOKEN_MALFORMED)

    def test_standard_alphabet_signature(self, verifier: TokenVerifier,
                                         keys: dict[str, SigningKey]) -> None:
        """The same signature in the standard alphabet (+ /) instead of base64url."""
        head, sig = keys["es"].token(_claims()).rsplit(".", 1)
        while "-" not in sig and "_" not in sig:
            head, sig = keys["es"].token(_claims(jti=sig[:8])).rsplit(".", 1)
        standard = sig.replace("-", "+").replace("_", "/")
        assert _rejected(verifier, f"{head}.{standard}").reason is Reason.TOKEN_MALFORMED

    @pytest.mark.parametrize("document", [b"[]", b'"s"', b"1", b"null", b"{", b"\xff{}"])
    @pytest.mark.parametrize("segment", [0, 1])
    def test_header_and_payload_are_json_objects(self, verifier: TokenVerifier,
                                                 keys: dict[str, SigningKey], segment: int,
                                                 document: bytes) -> None:
        """Well-spelled segments that are not JSON objects are malformed, signed or not."""
        parts = [_b64(json.dumps({"alg": "ES256", "kid": "es-1"}).encode()),
                 _b64(json.dumps(_claims()).encode())]
        parts[segment] = _b64(document)
        head = ".".join(parts)
        signature = pyjwt.get_algorithm_by_name("ES256").sign(head.encode(), keys["es"].key)
        assert _rejected(verifier, f"{head}.{_b64(signature)}").reason is Reason.TOKEN_MALFORMED

    def test_refused_before_any_key_or_claim(self, verifier: TokenVerifier,
                                             keys: dict[str, SigningKey],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """The spelling is judged first: PyJWT is never called for a mis-spelled token, so
        even an unknown issuer or a bad signature reports TOKEN_MALFORMED."""
        untrusted = keys["rogue"].token(_claims(iss="https://nobody.example"))
        monkeypatch.setattr(pyjwt, "decode", lambda *a, **k: pytest.fail("decoded"))
        monkeypatch.setattr(pyjwt, "get_unverified_header", lambda *a, **k: pytest.fail("read"))
        assert _rejected(verifier, untrusted + "==").reason is Reason.TOKEN_MALFORMED

    def test_one_token_one_cache_entry(self, verifier: TokenVerifier,
                                       keys: dict[str, SigningKey]) -> None:
        """With the valid spelling cached, its other spellings are still refused and
        never add entries."""
        valid = next(t for t in (keys["es"].token(_claims(jti=str(i))) for i in range(12))
                     if len(t.rsplit(".", 1)[1]) % 4)
        verifier.verify(valid)
        head, sig = valid.rsplit(".", 1)
        for spelled in [valid + "=", valid + "==", *(f"{head}.{a}" for a in _aliases(sig))]:
            assert _rejected(verifier, spelled).reason is Reason.TOKEN_MALFORMED
        assert list(verifier._cache) == [valid]

    @settings(max_examples=300, deadline=None, suppress_health_check=_SHARED_VERIFIER)
    @given(st.text(alphabet=_ALPHABET + ".=+/ \t\u00e9\u0130\ufeff\x00", max_size=60))
    def test_noise_never_verifies(self, verifier: TokenVerifier, noise: str) -> None:
        """Random base64url, padding, separators and unicode: always refused."""
        with pytest.raises(Reject) as info:
            verifier.verify(noise)
        assert info.value.code is Code.UNAUTHENTICATED

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet=_ALPHABET + ".=", max_size=24))
    def test_shape_check_agrees_with_reencoding(self, text: str) -> None:
        """is_compact_jws accepts exactly the strings that base64url re-encodes to themselves."""
        assert is_compact_jws(text) == _canonical(text)

    @settings(max_examples=200, deadline=None, suppress_health_check=_SHARED_VERIFIER)
    @given(position=st.integers(min_value=0), replacement=st.characters(codec="utf-8"),
           edit=st.sampled_from(["replace", "insert", "delete"]))
    def test_signature_mutation_never_verifies(self, verifier: TokenVerifier,
                                               keys: dict[str, SigningKey], position: int,
                                               replacement: str, edit: str) -> None:
        """Any single-character edit of a valid token's signature is refused."""
        head, sig = _VALID_FOR_MUTATION(keys).rsplit(".", 1)
        at = position % len(sig)
        if edit == "replace":
            assume(replacement != sig[at])
            mutated = sig[:at] + replacement + sig[at + 1:]
        elif edit == "insert":
            mutated = sig[:at] + replacement + sig[at:]
        else:
            mutated = sig[:at] + sig[at + 1:]
        with pytest.raises(Reject):
            verifier.verify(f"{head}.{mutated}")

    @pytest.mark.parametrize("name", ["es", "ed"])
    def test_every_substitution_in_the_signature(self, verifier: TokenVerifier,
                                                 keys: dict[str, SigningKey], name: str) -> None:
        """Exhaustively: every position of the signature, every other base64url character."""
        valid = keys[name].token(_claims())
        head, sig = valid.rsplit(".", 1)
        reasons = set()
        for at, original in enumerate(sig):
            for char in _ALPHABET.replace(original, ""):
                with pytest.raises(Reject) as info:
                    verifier.verify(f"{head}.{sig[:at]}{char}{sig[at + 1:]}")
                reasons.add(info.value.reason)
        assert reasons <= {Reason.TOKEN_MALFORMED, Reason.TOKEN_INVALID}
        assert verifier.verify(valid).subject == "alice"


_VALID: dict[str, str] = {}


def _VALID_FOR_MUTATION(keys: dict[str, SigningKey]) -> str:
    """One valid token per module's keys, signed once (hypothesis calls the test often)."""
    return _VALID.setdefault(id(keys["es"]), keys["es"].token(_claims(exp=NOW + 10**6)))


class TestCache:
    def test_hit_rechecks_expiry(self, verifier: TokenVerifier, clock: Clock,
                                 keys: dict[str, SigningKey]) -> None:
        """A cached token is refused once the clock passes its exp plus leeway."""
        # {..., "exp": NOW+600}
        short_lived = keys["es"].token(_claims())
        assert verifier.verify(short_lived).subject == "alice"
        clock.now = NOW + 600 + 29
        assert verifier.verify(short_lived).subject == "alice"
        clock.now = NOW + 600 + 31
        assert _rejected(verifier, short_lived).reason is Reason.TOKEN_EXPIRED

    def test_hit_skips_signature(self, verifier: TokenVerifier, keys: dict[str, SigningKey],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """A second use of a verified token does not verify the signature again."""
        token = keys["es"].token(_claims())
        verifier.verify(token)
        calls = []
        real = pyjwt.decode
        monkeypatch.setattr(pyjwt, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
        assert verifier.verify(token).subject == "alice"
        assert calls == []

    def test_failures_not_cached(self, verifier: TokenVerifier, clock: Clock,
                                 keys: dict[str, SigningKey]) -> None:
        """A token refused as not yet valid is accepted once its time comes."""
        # {..., "nbf": NOW+60}
        not_yet = keys["es"].token(_claims(nbf=NOW + 60))
        _rejected(verifier, not_yet)
        clock.now = NOW + 60
        assert verifier.verify(not_yet).subject == "alice"

    def test_bounded(self, key_dir: pathlib.Path, clock: Clock,
                     keys: dict[str, SigningKey]) -> None:
        """The cache never holds more than cache_size tokens."""
        verifier = TokenVerifier(_cfg(key_dir, cache_size=3), clock=clock)
        tokens = [keys["es"].token(_claims(jti=str(i))) for i in range(10)]
        for token in tokens:
            verifier.verify(token)
            assert len(verifier._cache) <= 3
        # Evicted tokens still verify (again) when presented.
        assert verifier.verify(tokens[0]).subject == "alice"

    def test_evicts_expired_first(self, key_dir: pathlib.Path, clock: Clock,
                                  keys: dict[str, SigningKey]) -> None:
        """When full, expired entries go before live ones."""
        verifier = TokenVerifier(_cfg(key_dir, cache_size=2), clock=clock)
        live = keys["es"].token(_claims(exp=NOW + 10_000))
        dying = keys["es"].token(_claims(exp=NOW + 10, jti="d"))
        verifier.verify(live)
        verifier.verify(dying)
        clock.now = NOW + 100
        verifier.verify(keys["es"].token(_claims(iat=NOW + 100, nbf=NOW + 100,
                                                 exp=NOW + 10_000, jti="new")))
        assert live in verifier._cache and dying not in verifier._cache

    def test_disabled(self, key_dir: pathlib.Path, clock: Clock,
                      keys: dict[str, SigningKey]) -> None:
        """cache_size 0 keeps nothing."""
        verifier = TokenVerifier(_cfg(key_dir, cache_size=0), clock=clock)
        verifier.verify(keys["es"].token(_claims()))
        assert len(verifier._cache) == 0


    def test_concurrent_misses(self, key_dir: pathlib.Path, keys: dict[str, SigningKey]) -> None:
        """Server threads verifying new tokens while the cache is full all succeed."""

        class PreemptedDict(dict):
            """Scanning yields the GIL mid-way, as a thread switch at the worst moment would."""

            def items(self):  # type: ignore[no-untyped-def]
                for i, item in enumerate(super().items()):
                    if i == 1:
                        time.sleep(0.002)
                    yield item

        verifier = TokenVerifier(_cfg(key_dir, cache_size=2), clock=Clock())
        verifier._cache = PreemptedDict()
        tokens = [keys["es"].token(_claims(jti=str(i))) for i in range(10)]
        verifier.verify(tokens[0])
        verifier.verify(tokens[1])  # the cache is full
        errors: list[BaseException] = []

        def present(token: str) -> None:
            try:
                assert verifier.verify(token).subject == "alice"
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                errors.append(exc)

        threads = [threading.Thread(target=present, args=(t,)) for t in tokens[2:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(verifier._cache) <= 2


class TestExtractToken:
    """RFC 6750 §2.1: `Bearer` 1*SP b64token, the scheme case-insensitive; nothing else."""

    def test_absent(self) -> None:
        """No authorization metadata means no token."""
        assert extract_token([("x-request-id", "1")]) is None

    @pytest.mark.parametrize("value", ["Bearer abc.def.ghi", "bearer abc.def.ghi",
                                       "BEARER abc.def.ghi", "bEaReR abc.def.ghi",
                                       "Bearer  abc.def.ghi", "Bearer     abc.def.ghi"])
    def test_bearer(self, value: str) -> None:
        """Any case of the scheme, then one or more spaces (1*SP), then the token."""
        assert extract_token([("authorization", value)]) == "abc.def.ghi"

    @pytest.mark.parametrize("token", ["a.b.c==", "a~b+c/d", "x=", "A-_.9"])
    def test_b64token_characters(self, token: str) -> None:
        """Every b64token character passes here (the verifier then wants a compact JWS)."""
        assert extract_token([("authorization", f"Bearer {token}")]) == token

    def test_multiple_headers(self) -> None:
        """Two authorization values are ambiguous and refused."""
        with pytest.raises(Reject) as info:
            extract_token([("authorization", "Bearer a.b.c"), ("authorization", "Bearer a.b.c")])
        assert info.value.reason is Reason.MULTIPLE_TOKENS
        assert info.value.code is Code.UNAUTHENTICATED

    @pytest.mark.parametrize("value", [
        "Basic YWxpY2U6cHc=", "Bearer", "Bearer ", "Bearer    ", "Token abc", "abc.def.ghi",
        "Bearer a b", "Bearerabc.def.ghi", b"Bearer abc.def.ghi",
        "Bearer abc.def.ghi ", " Bearer abc.def.ghi", "Bearer\tabc.def.ghi",
        "Bearer \tabc.def.ghi", "Bearer abc.def.ghi\n", "Bearer\u00a0abc.def.ghi",
        "Bearer abc.def.ghi\r\n", "Bearer a=b.c", "Bearer =abc", "Bearer ab\u00e9",
        "Bearer a,b", "Bearer \"abc\"", "Bearer abc;x", "B\u0435arer abc.def.ghi",
        "Bearer abc.def.ghi\x00",
    ])
    def test_malformed(self, value: str | bytes) -> None:
        """Other schemes, empty tokens, any whitespace but SP before the token, trailing
        or leading whitespace, characters outside b64token, binary values: refused."""
        with pytest.raises(Reject) as info:
            extract_token([("authorization", value)])
        assert info.value.reason is Reason.TOKEN_MALFORMED


def _jwks_file(path: pathlib.Path, *entries: dict[str, Any]) -> pathlib.Path:
    path.write_text(json.dumps({"keys": list(entries)}))
    return path


class TestJwks:
    def test_loads_public_keys(self, tmp_path: pathlib.Path, keys: dict[str, SigningKey]) -> None:
        """Each JWK becomes a key with its kid and the algorithms it can verify."""
        path = write_jwks(tmp_path / "k.json", [keys["es"], keys["rs"], keys["ed"]])
        loaded = jwks.load_jwks(path, "x")
        assert [(k.kid, sorted(k.algorithms)) for k in loaded] == [
            ("es-1", ["ES256"]), ("rs-1", ["RS256"]), ("ed-1", ["EdDSA"])]

    def test_rsa_without_alg_gets_rsa_family(self, tmp_path: pathlib.Path,
                                             keys: dict[str, SigningKey]) -> None:
        """An RSA JWK without alg may verify the RSA family only."""
        jwk = {k: v for k, v in keys["rs"].public_jwk().items() if k != "alg"}
        (loaded,) = jwks.load_jwks(_jwks_file(tmp_path / "k.json", jwk), "x")
        assert "RS256" in loaded.algorithms and "PS256" in loaded.algorithms
        assert not loaded.algorithms & {"ES256", "EdDSA", "HS256"}

    @pytest.mark.parametrize("member", ["d", "p", "q", "k"])
    def test_private_material_refused(self, tmp_path: pathlib.Path,
                                      keys: dict[str, SigningKey], member: str) -> None:
        """Private (or symmetric) key members in a JWKS are refused with the key's index."""
        jwk = {**keys["es"].public_jwk(), member: "AAAA"}
        path = _jwks_file(tmp_path / "k.json", keys["rs"].public_jwk(), jwk)
        with pytest.raises(ConfigError) as info:
            jwks.load_jwks(path, "authn.jwt.issuers[0].jwks_file")
        assert info.value.path.startswith("authn.jwt.issuers[0].jwks_file")
        assert "keys[1]" in info.value.path and "private" in info.value.problem
        assert "AAAA" not in str(info.value)

    def test_real_private_jwk_refused(self, tmp_path: pathlib.Path,
                                      keys: dict[str, SigningKey]) -> None:
        """A full private EC JWK (as an operator might paste by mistake) is refused."""
        private = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(keys["es"].key))
        with pytest.raises(ConfigError, match="private"):
            jwks.load_jwks(_jwks_file(tmp_path / "k.json", {**private, "kid": "es-1"}), "x")

    def test_use_enc_refused(self, tmp_path: pathlib.Path, keys: dict[str, SigningKey]) -> None:
        """A key published for encryption is not a signature key."""
        jwk = {**keys["rs"].public_jwk(), "use": "enc"}
        with pytest.raises(ConfigError, match="'enc'"):
            jwks.load_jwks(_jwks_file(tmp_path / "k.json", jwk), "x")

    @pytest.mark.parametrize(("name", "alg"), [("rs", "ES256"), ("es", "RS256"), ("es", "ES384"),
                                               ("ed", "ES256"), ("rs", "HS256"), ("es", "none")])
    def test_key_type_alg_mismatch(self, tmp_path: pathlib.Path, keys: dict[str, SigningKey],
                                   name: str, alg: str) -> None:
        """A JWK whose alg its key type cannot verify is refused."""
        jwk = {**keys[name].public_jwk(), "alg": alg}
        with pytest.raises(ConfigError) as info:
            jwks.load_jwks(_jwks_file(tmp_path / "k.json", jwk), "w")
        assert info.value.path.startswith("w")

    @pytest.mark.parametrize("text", ["not json", "[]", '{"keys": []}', '{"keys": "x"}', "{}"])
    def test_bad_jwks_documents(self, tmp_path: pathlib.Path, text: str) -> None:
        """A JWKS that is not JSON or has no keys list is refused."""
        path = tmp_path / "k.json"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            jwks.load_jwks(path, "authn.jwt.issuers[3].jwks_file")
        assert info.value.path == "authn.jwt.issuers[3].jwks_file"

    @pytest.mark.parametrize("entry", ["x", ["kty", "EC"], None])
    def test_key_not_an_object(self, tmp_path: pathlib.Path, entry: Any) -> None:
        """A keys entry that is not a JSON object is a config error, not a crash."""
        path = tmp_path / "k.json"
        path.write_text(json.dumps({"keys": [entry]}))
        with pytest.raises(ConfigError) as info:
            jwks.load_jwks(path, "w")
        assert "keys[0]" in info.value.path

    def test_alg_not_a_string(self, tmp_path: pathlib.Path, keys: dict[str, SigningKey]) -> None:
        """An alg that is a list is refused as a config error."""
        jwk = {**keys["es"].public_jwk(), "alg": ["ES256"]}
        with pytest.raises(ConfigError):
            jwks.load_jwks(_jwks_file(tmp_path / "k.json", jwk), "w")

    def test_unusable_jwk(self, tmp_path: pathlib.Path) -> None:
        """A JWK PyJWT cannot read is refused, not skipped."""
        with pytest.raises(ConfigError, match="unusable"):
            jwks.load_jwks(_jwks_file(tmp_path / "k.json", {"kty": "EC", "crv": "P-256"}), "x")

    def test_pem_certificate_as_key(self, tmp_path: pathlib.Path, clock: Clock) -> None:
        """A PEM certificate works as an issuer key, and its private key's tokens verify."""
        issued = DevPKI.create(tmp_path).client("issuer")
        loaded = jwks.load_pem_key(issued.cert_path, "x")  # type: ignore[arg-type]
        assert loaded.algorithms == frozenset({"ES256"}) and loaded.kid is None
        cfg = config.JWT.model_validate({"issuers": [{
            "issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"],
            "public_keys": [str(issued.cert_path)]}]})
        signer = _signer("any", issued.key_pem)
        # header {"alg": "ES256", "kid": "any"}; payload as in _claims()
        cert_signed = signer.token(_claims())
        assert TokenVerifier(cfg, clock=clock).verify(cert_signed).subject == "alice"

    def test_pem_private_key_refused(self, tmp_path: pathlib.Path,
                                     keys: dict[str, SigningKey]) -> None:
        """A private key PEM where a public key belongs is refused."""
        path = tmp_path / "k.pem"
        path.write_bytes(keys["es"].private_pem())
        with pytest.raises(ConfigError) as info:
            jwks.load_pem_key(path, "authn.jwt.issuers[0].public_keys[0]")
        assert info.value.path == "authn.jwt.issuers[0].public_keys[0]"

    def test_verifier_reports_jwks_path(self, tmp_path: pathlib.Path,
                                        keys: dict[str, SigningKey]) -> None:
        """TokenVerifier names the issuer's jwks_file key when its JWKS is unusable."""
        path = _jwks_file(tmp_path / "k.json", {**keys["es"].public_jwk(), "use": "enc"})
        cfg = config.JWT.model_validate({"issuers": [{
            "issuer": ISS, "audiences": [AUD], "algorithms": ["ES256"], "jwks_file": str(path)}]})
        with pytest.raises(ConfigError) as info:
            TokenVerifier(cfg)
        assert info.value.path.startswith("authn.jwt.issuers[0].jwks_file")


@pytest.mark.tf
def test_other_spellings_refused_end_to_end(pki: Any, signing: Any, clean_backend: Any) -> None:
    """Real tensorflow-serving-api client over mTLS: a token the proxy accepts is refused
    in its padded and aliased spellings (UNAUTHENTICATED), and none of them arrives."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.conftest import AUDIENCE, ISSUER, base_config, running_proxy

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.version.value = 1
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    valid = next(t for t in (signing.key.token(mint_claims(
        issuer=ISSUER, audience=AUDIENCE, subject="svc", scope="predict", jti=str(i)))
        for i in range(12)) if len(t.rsplit(".", 1)[1]) % 4)
    head, sig = valid.rsplit(".", 1)
    spellings = [valid + "=" * (-len(sig) % 4), valid + "=",
                 *(f"{head}.{alias}" for alias in _aliases(sig))]
    with (running_proxy(base_config(pki, signing, clean_backend.address)) as proxy,
          pki.channel(proxy.address, pki.cn_client) as channel):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for spelled in spellings:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, metadata=[("authorization", f"Bearer {spelled}")],
                             timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, spelled
            assert "compact JWS" in info.value.details()
        assert clean_backend.records() == []
        response = stub.Predict(request, metadata=[("authorization", f"Bearer {valid}")],
                                timeout=10)
    assert list(tf.make_ndarray(response.outputs["y"])) == [2.5]  # version 1: 0.5x + 2
    assert len(clean_backend.records()) == 1
