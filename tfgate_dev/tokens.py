"""Development tokens: ``tfgate token mint`` signs with the key ``certs/make-dev-pki
--jwt-issuer URL`` wrote (``signing.key``), naming the kid and algorithm of its entry in
``jwks.json`` beside it and the issuer recorded there. For trying tfgate by hand only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tfgate_dev.devpki import DEFAULT_OUT, ISSUER_FILE, SigningKey, mint_claims

ALGORITHMS = ("ES256", "RS256", "EdDSA")  # what SigningKey signs with

__all__ = ["DevToolError", "mint_token"]


class DevToolError(Exception):
    """A dev tool cannot do what was asked; the message says what to do instead."""


def _load_signing_key(path: Path, jwks: Path) -> SigningKey:
    """The private key at ``path``, with the kid and alg of its entry in ``jwks``."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        keys = json.loads(jwks.read_text())["keys"]
    except FileNotFoundError as exc:
        raise DevToolError(f"{exc.filename} not found; make it with "
                           "`certs/make-dev-pki --jwt-issuer URL` (or give --dir/--key/--jwks)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DevToolError(f"cannot read the signing key or JWKS: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DevToolError(f"{path}: not an EC P-256, RSA or Ed25519 private key")
    for entry in keys:
        candidate = SigningKey(entry.get("kid", ""), entry.get("alg", ""), key)
        if entry.get("alg") in ALGORITHMS and _same_public_key(candidate, entry):
            return candidate
    raise DevToolError(f"no key in {jwks} is the public half of {path}")


def _same_public_key(key: SigningKey, entry: dict[str, Any]) -> bool:
    try:
        listed = jwt.PyJWK(entry).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError):
        return False
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return listed.public_bytes(der, spki) == key.key.public_key().public_bytes(der, spki)
    except AttributeError:
        return False


def mint_token(*, subject: str, directory: Path | None = None, key: Path | None = None,
               jwks: Path | None = None, issuer: str | None = None,
               audiences: Sequence[str] = ("tfgate",), scopes: Sequence[str] = (),
               ttl: int = 600, now: float | None = None) -> str:
    """A JWT signed with the CLI's dev signing key. Defaults come from ``directory``
    (``certs/out``): ``signing.key``, ``jwks.json`` and the recorded issuer."""
    directory = Path(directory or DEFAULT_OUT)
    if issuer is None:
        try:
            issuer = (directory / ISSUER_FILE).read_text().strip()
        except OSError:
            raise DevToolError(f"no issuer recorded in {directory / ISSUER_FILE}; "
                               "give --iss URL") from None
    if ttl <= 0:
        raise DevToolError("--ttl must be a positive number of seconds")
    signer = _load_signing_key(key or directory / "signing.key", jwks or directory / "jwks.json")
    audience: str | list[str] = audiences[0] if len(audiences) == 1 else list(audiences)
    extra = {"scope": " ".join(scopes)} if scopes else {}
    return signer.token(mint_claims(issuer=issuer, audience=audience, subject=subject,
                                    now=now, ttl=ttl, **extra))
