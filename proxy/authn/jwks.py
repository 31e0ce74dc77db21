"""Load and check the public keys of each trusted issuer.

Keys come from a JWKS file or from PEM files (public keys or certificates), read at
config time, or from a JWKS fetched from a URL (remote_jwks.py), checked the same way. Private key
material in a JWKS file is refused: it means a secret was put where it does not belong.
Each key remembers which algorithms it can verify, so a token can never pick an
algorithm family that does not match the key (the classic RS256/HS256 confusion).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from proxy.errors import ConfigError

_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_SIGNATURE_ALGS = (*sorted(_RSA_ALGS), *_EC_ALG.values(), "EdDSA")  # a tuple: `in` never hashes
_PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    key: object
    algorithms: frozenset[str]


def algorithms_for(key: object) -> frozenset[str]:
    """The JWS algorithms that can be verified with this public key."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALG.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _from_jwk(entry: dict, where: str) -> VerificationKey:
    if not isinstance(entry, dict):
        raise ConfigError(where, "a key must be a JSON object")
    if _PRIVATE_JWK_MEMBERS & entry.keys():
        raise ConfigError(where, "contains private or symmetric key material; "
                          "publish only public keys")
    if entry.get("use", "sig") != "sig":
        raise ConfigError(where, f"key use {entry.get('use')!r} is not 'sig'")
    if "alg" in entry and entry["alg"] not in _SIGNATURE_ALGS:
        raise ConfigError(where, f"alg {entry['alg']!r} is not an asymmetric signature algorithm")
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError) as exc:
        raise ConfigError(where, f"unusable key: {exc}") from None
    algs = algorithms_for(key)
    if "alg" in entry:
        algs = algs & {entry["alg"]}
    if not algs:
        raise ConfigError(where, "key type cannot verify any allowed algorithm")
    return VerificationKey(entry.get("kid"), key, algs)


def load_jwks(path: pathlib.Path, where: str) -> list[VerificationKey]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(where, f"cannot read JWKS {path}: {exc}") from None
    return parse_jwks(data, where, str(path))


def parse_jwks(data: Any, where: str, source: str) -> list[VerificationKey]:
    """The keys of a parsed JWKS document (from a file or a URL); any bad key refuses all."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ConfigError(where, f"{source}: expected a JSON object with a non-empty 'keys' list")
    return [_from_jwk(entry, f"{where} ({source} keys[{i}])")
            for i, entry in enumerate(data["keys"])]


def load_pem_key(path: pathlib.Path, where: str) -> VerificationKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror}") from None
    key: Any
    try:
        if b"CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(where, f"{path} is not a PEM public key or certificate: {exc}") from None
    algs = algorithms_for(key)
    if not algs:
        raise ConfigError(where, f"{path}: key type cannot verify any allowed algorithm")
    return VerificationKey(None, key, algs)
