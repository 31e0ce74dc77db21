"""`authn:` how callers prove who they are (authenticate stage). Certificates come from
the TLS listener; this section configures bearer tokens."""

from __future__ import annotations

import pydantic
from pydantic import Field

from proxy.config.base import FilePath, KeyProblem, Section

# Algorithms a token may be signed with. HMAC and `none` are absent on purpose: keys
# are public (asymmetric), so an HMAC token "signed" with a public key must never pass.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")


class Issuer(Section):
    """A token issuer tfgate trusts, with the keys and algorithms it may use."""

    issuer: str = Field(min_length=1, description="Exact `iss` claim value.")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values (any one).")
    algorithms: list[str] = Field(
        min_length=1, description=f"Allowed `alg` values, from {', '.join(ASYMMETRIC_ALGORITHMS)}.")
    jwks_file: FilePath | None = Field(None, description="JWKS file with the public keys.")
    public_keys: list[FilePath] = Field(
        default_factory=list, description="PEM public keys or certificates (alternative to jwks_file).")
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

    @pydantic.model_validator(mode="after")
    def _one_key_source(self) -> Issuer:
        if (self.jwks_file is None) == (not self.public_keys):
            raise ValueError("give exactly one of jwks_file or public_keys")
        return self


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
