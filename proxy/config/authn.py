"""`authn:` how callers prove who they are (authenticate stage). Certificates come from
the TLS listener; this section configures bearer tokens."""

from __future__ import annotations

import ipaddress
import urllib.parse

import pydantic
from pydantic import Field

from proxy.config.base import FilePath, KeyProblem, Section

# Algorithms a token may be signed with. HMAC and `none` are absent on purpose: keys
# are public (asymmetric), so an HMAC token "signed" with a public key must never pass.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")


def check_fetch_url(url: str) -> str:
    """An https URL, or http to a loopback host (a local issuer or a test): keys fetched
    in the clear from elsewhere could be replaced by anyone on the path."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected an https:// URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a key URL must not carry credentials")
    if parts.scheme == "http" and not _loopback_host(parts.hostname):
        raise ValueError(f"plain http is allowed only to a loopback host, got {url!r}")
    return url


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JWKSFetch(Section):
    """How a JWKS from a URL (`jwks_url` or discovery) is fetched and kept
    (docs/operations.md, "JWKS from a URL")."""

    max_age_s: float = Field(300, ge=10, le=86400, description="Fetch the keys again "
                             "this long after the last successful fetch.")
    max_stale_s: float = Field(
        3600, ge=0, le=7 * 86400, description="While the issuer cannot be reached, keep "
        "using the last keys for this long past `max_age_s`; then tokens of this issuer "
        "are refused (token-unknown-key) until a fetch succeeds.")
    timeout_s: float = Field(5, gt=0, le=60, description="Time one fetch may take, "
                             "connection and body included.")
    max_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024,
                           description="Largest response accepted (discovery document or JWKS).")
    unknown_kid_cooldown_s: float = Field(
        30, ge=1, le=3600, description="A token naming a key id the set lacks triggers a "
        "fetch at most once per this period, however many such tokens arrive.")
    ca: FilePath | None = Field(None, description="CA bundle (PEM) that verifies the "
                                "issuer's HTTPS certificate (default: the system's).")


class Issuer(Section):
    """A token issuer tfgate trusts, with the keys and algorithms it may use."""

    issuer: str = Field(min_length=1, description="Exact `iss` claim value.")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values (any one).")
    algorithms: list[str] = Field(
        min_length=1, description=f"Allowed `alg` values, from {', '.join(ASYMMETRIC_ALGORITHMS)}.")
    jwks_file: FilePath | None = Field(None, description="JWKS file with the public keys.")
    public_keys: list[FilePath] = Field(
        default_factory=list, description="PEM public keys or certificates (alternative to jwks_file).")
    jwks_url: str | None = Field(
        None, description="URL of the issuer's JWKS, fetched in the background (https; "
        "http only to loopback). Alternative to jwks_file.")
    discovery: bool = Field(
        False, description="Find the JWKS URL from `<issuer>/.well-known/openid-configuration` "
        "(OpenID Connect discovery); `issuer` must then be an https URL.")
    fetch: JWKSFetch = Field(default_factory=JWKSFetch,
                             description="Fetching for jwks_url and discovery.")
    required_claims: list[str] = Field(
        default_factory=list, description="Claims that must be present besides iss, aud and exp.")

    @pydantic.field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} not allowed; use one of "
                                 f"{', '.join(ASYMMETRIC_ALGORITHMS)} (never none or HMAC)")
        return value

    @pydantic.field_validator("jwks_url")
    @classmethod
    def _fetchable(cls, value: str | None) -> str | None:
        return value if value is None else check_fetch_url(value)

    @pydantic.model_validator(mode="after")
    def _one_key_source(self) -> Issuer:
        given = [self.jwks_file is not None, bool(self.public_keys), self.jwks_url is not None,
                 self.discovery]
        if sum(given) != 1:
            raise ValueError("give exactly one of jwks_file, public_keys, jwks_url or "
                             "discovery: true")
        if self.discovery:
            try:
                check_fetch_url(self.discovery_url())
            except ValueError as exc:
                raise KeyProblem(("issuer",), f"discovery needs an https issuer URL: {exc}") from None
        return self

    def discovery_url(self) -> str:
        """OpenID Connect Discovery §4: the issuer, then /.well-known/openid-configuration."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def remote(self) -> bool:
        """Whether the keys come from the network (jwks_url or discovery)."""
        return self.jwks_url is not None or self.discovery


class JWT(Section):
    """Bearer tokens in the `authorization` metadata."""

    issuers: list[Issuer] = Field(min_length=1, description="Trusted issuers.")
    leeway_s: float = Field(30, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat.")
    scope_claim: str = Field(
        "scope", description="Claim holding scopes or groups: a space-separated string or a list.")
    cache_size: int = Field(10000, ge=0, description="Verified tokens kept (until they expire).")
    max_token_bytes: int = Field(8192, gt=0, description="Longer tokens are refused unread.")
    required: bool = Field(
        False, description="Every call must present a valid token, a certificate alone is "
        "not enough: a call without one is UNAUTHENTICATED (`token-required`), not "
        "PERMISSION_DENIED. Also in effect, without saying it, when every rule requires a "
        "token.")

    @pydantic.model_validator(mode="after")
    def _distinct_issuers(self) -> JWT:
        seen: set[str] = set()
        for i, issuer in enumerate(self.issuers):
            if issuer.issuer in seen:
                raise KeyProblem(("issuers", i, "issuer"), f"{issuer.issuer!r} is listed twice; "
                                 "give one entry with all of its keys")
            seen.add(issuer.issuer)
        return self


class Authn(Section):
    """How callers prove who they are. Certificates come from the TLS listener."""

    jwt: JWT | None = Field(None, description="Token verification; omit to use certificates only.")
