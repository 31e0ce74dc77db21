"""Bearer tokens: extract one from metadata, verify it, cache the verdict until expiry.

Verification order (all failures are UNAUTHENTICATED with a reason, never the token):
size cap → one spelling (below) → header and unverified `iss` → issuer known → `alg` in
that issuer's allowlist → key by `kid` (keys from headers such as `jwk`, `jku`, `x5u`,
`x5c` are never used) → signature, `iss`, `aud`, required claims (PyJWT) →
`exp`/`nbf`/`iat` against the injected clock with the configured leeway.

An issuer's keys come from files, read once, or from its URL (remote_jwks.py), swapped
whole by background fetches. A kid the set lacks is refused at once (token-unknown-key)
and asks for a refetch; verification never waits on the network.

An ES256 verification costs ~100 µs, a cache hit ~0.1 µs, so verified tokens are kept
(keyed by the whole token string) until `exp`. Time claims are re-checked on every hit.

One spelling: a token is accepted only as a compact JWS (RFC 7515 §7.1), three segments of
unpadded base64url (RFC 4648 §5) whose last character leaves the unused low bits zero.
Python's base64 decoder ignores padding, stray characters and those low bits, and PyJWT
(2.15) still accepts `sig==`, so without this check several strings would verify as one
token, each its own cache entry; the check is ours, not left to the PyJWT version. Only
well-formed tokens are ever cached, so a malformed one can never be a cache hit: the
check runs on a miss (~2.5 µs for an ES256 token), before any key or claim is looked at,
and a hit stays a dict lookup.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import jwt as pyjwt

from proxy import config
from proxy.authn.jwks import VerificationKey, load_jwks, load_pem_key
from proxy.call import Principal
from proxy.errors import Reason, unauthenticated

# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token, b64token = 1*(ALPHA / DIGIT / "-" /
# "." / "_" / "~" / "+" / "/") *"="; the scheme is case-insensitive (RFC 7235 §2.1). Nothing
# else: no tabs, no leading or trailing whitespace. Spelled out, not re.IGNORECASE, so that
# no non-ASCII letter can fold into the scheme.
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)")
# One canonical unpadded base64url segment: whole 4-character quanta (possessive: no
# backtracking), then an optional 2- or 3-character tail whose last character has zero
# unused bits (4 unused bits: A Q g w; 2 unused bits: every 4th letter of the alphabet).
_B64 = "[A-Za-z0-9_-]"
_SEGMENT = rf"(?={_B64})(?:{_B64}{{4}})*+(?:{_B64}[AQgw]|{_B64}{{2}}[AEIMQUYcgkosw048])?"
_COMPACT_JWS = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")
_MAX_TIME = 2.0**53  # NumericDate bound: exact as a float, far beyond any real time


def extract_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The bearer token from `authorization`; refuse anything ambiguous."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise unauthenticated(Reason.MULTIPLE_TOKENS, "more than one authorization header")
    value = values[0]
    found = _BEARER.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise unauthenticated(Reason.TOKEN_MALFORMED, "authorization must be 'Bearer <token>'")
    return found[1]


def is_compact_jws(token: str) -> bool:
    """Three canonical unpadded base64url segments, none empty: the one spelling accepted."""
    return _COMPACT_JWS.fullmatch(token) is not None


class KeySource(Protocol):
    """An issuer's keys: fixed (files) or swapped by fetches (remote_jwks.RemoteKeySet)."""

    @property
    def keys(self) -> tuple[VerificationKey, ...]: ...

    def missing(self) -> None: ...


class StaticKeys:
    """Keys read once from files; `missing` has nothing to fetch."""

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        self.keys = tuple(keys)

    def missing(self) -> None:
        pass


@dataclass(frozen=True)
class _Issuer:
    name: str
    audiences: tuple[str, ...]
    algorithms: frozenset[str]
    source: KeySource
    required: tuple[str, ...]


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    exp: float
    nbf: float | None
    source: KeySource                   # a hit counts only while the source still has
    keys: tuple[VerificationKey, ...]   # the very key set it was verified with


def _number(claims: dict, name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            -_MAX_TIME < value < _MAX_TIME):  # also refuses NaN and ints too big for a float
        raise unauthenticated(Reason.TOKEN_INVALID, f"token claim {name!r} is not a number")
    return float(value)


def _static_keys(issuer: config.Issuer, where: str) -> StaticKeys:
    if issuer.jwks_file is not None:
        return StaticKeys(load_jwks(issuer.jwks_file, f"{where}.jwks_file"))
    return StaticKeys([load_pem_key(p, f"{where}.public_keys[{j}]")
                       for j, p in enumerate(issuer.public_keys)])


class TokenVerifier:
    """Verifies tokens for the configured issuers. Built once per config. `remote` gives
    the key source of each issuer whose keys come from a URL (state.py acquires them);
    such an issuer without one has no keys (explain builds it so)."""

    def __init__(self, cfg: config.JWT, clock: Callable[[], float] = time.time,
                 remote: Mapping[str, KeySource] | None = None) -> None:
        self._issuers = {}
        for i, issuer in enumerate(cfg.issuers):
            where = f"authn.jwt.issuers[{i}]"
            source: KeySource
            if issuer.remote():
                source = (remote or {}).get(issuer.issuer) or StaticKeys(())
            else:
                source = _static_keys(issuer, where)
            self._issuers[issuer.issuer] = _Issuer(
                issuer.issuer, tuple(issuer.audiences), frozenset(issuer.algorithms),
                source, tuple(dict.fromkeys(["iss", "aud", "exp", *issuer.required_claims])))
        self._leeway = cfg.leeway_s
        self._scope_claim = cfg.scope_claim
        self._max_bytes = cfg.max_token_bytes
        self._cache_size = cfg.cache_size
        self._cache: dict[str, _Verified] = {}
        self._cache_lock = threading.Lock()  # server threads share the cache; lookups need none
        self._clock = clock

    def verify(self, token: str) -> Principal:
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None and hit.keys is hit.source.keys:
            self._check_time(hit.exp, hit.nbf, None, now)
            return hit.principal
        verified = self._verify_uncached(token, now)
        if self._cache_size:
            with self._cache_lock:
                if len(self._cache) >= self._cache_size:
                    self._make_room(now)
                self._cache[token] = verified
        return verified.principal

    def _make_room(self, now: float) -> None:
        """Drop expired tokens; if none were, the oldest tenth (dicts keep insertion
        order). Freeing a tenth at a time keeps the scan amortized O(1) per miss."""
        expired = [t for t, v in self._cache.items() if v.exp + self._leeway < now]
        if not expired:
            expired = list(self._cache)[: max(1, self._cache_size // 10)]
        for token in expired:
            del self._cache[token]

    def _verify_uncached(self, token: str, now: float) -> _Verified:
        if len(token) > self._max_bytes:
            raise unauthenticated(Reason.TOKEN_MALFORMED, "token too large")
        if not is_compact_jws(token):
            raise unauthenticated(Reason.TOKEN_MALFORMED, "token is not a compact JWS: three "
                                  "unpadded, canonical base64url segments")
        try:
            header = pyjwt.get_unverified_header(token)
            unverified = pyjwt.decode(token, options={"verify_signature": False})
        except pyjwt.InvalidTokenError:
            raise unauthenticated(Reason.TOKEN_MALFORMED, "token is not a well-formed JWT") from None
        claimed = unverified.get("iss")
        issuer = self._issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise unauthenticated(Reason.TOKEN_UNKNOWN_ISSUER, "token issuer is not trusted")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise unauthenticated(Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
                                  "token algorithm is not allowed for its issuer")
        keys = issuer.source.keys  # read once: a fetch may swap it meanwhile
        claims = self._check_signature(token, issuer, keys, alg, header.get("kid"))
        exp = _number(claims, "exp")
        nbf = _number(claims, "nbf")
        self._check_time(exp, nbf, _number(claims, "iat"), now)
        return _Verified(self._principal(claims), exp, nbf,  # type: ignore[arg-type]
                         issuer.source, keys)

    @staticmethod
    def _candidate_keys(issuer: _Issuer, keys: tuple[VerificationKey, ...], alg: str,
                        kid: object) -> list[VerificationKey]:
        usable = [k for k in keys if alg in k.algorithms]
        if kid is not None:
            named = [k for k in usable if k.kid == kid]
            if not named:
                issuer.source.missing()  # a remote set fetches (at most once per cooldown)
            usable = named or [k for k in usable if k.kid is None]
        if not usable:
            raise unauthenticated(Reason.TOKEN_UNKNOWN_KEY, "no trusted key matches the token")
        return usable

    def _check_signature(self, token: str, issuer: _Issuer, keys: tuple[VerificationKey, ...],
                         alg: str, kid: object) -> dict:
        options: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                        "require": list(issuer.required)}
        for key in self._candidate_keys(issuer, keys, alg, kid):
            try:
                return pyjwt.decode(token, cast(Any, key.key), algorithms=[alg], audience=list(
                    issuer.audiences), issuer=issuer.name, options=options)
            except pyjwt.InvalidSignatureError:
                continue
            except pyjwt.MissingRequiredClaimError as exc:
                raise unauthenticated(Reason.TOKEN_MISSING_CLAIM,
                                      f"token lacks required claim {exc.claim!r}") from None
            except pyjwt.InvalidAudienceError:
                raise unauthenticated(Reason.TOKEN_BAD_AUDIENCE,
                                      "token audience is not accepted") from None
            except (pyjwt.InvalidTokenError, pyjwt.InvalidKeyError, ValueError) as exc:
                raise unauthenticated(Reason.TOKEN_INVALID, "token is invalid",
                                      detail=f"token rejected: {type(exc).__name__}") from None
        raise unauthenticated(Reason.TOKEN_INVALID, "token signature is invalid")

    def _check_time(self, exp: float | None, nbf: float | None, iat: float | None,
                    now: float) -> None:
        if exp is None:
            raise unauthenticated(Reason.TOKEN_MISSING_CLAIM, "token lacks required claim 'exp'")
        if now > exp + self._leeway:
            raise unauthenticated(Reason.TOKEN_EXPIRED, "token has expired")
        if nbf is not None and now < nbf - self._leeway:
            raise unauthenticated(Reason.TOKEN_NOT_YET_VALID, "token is not yet valid")
        if iat is not None and now < iat - self._leeway:
            raise unauthenticated(Reason.TOKEN_NOT_YET_VALID, "token was issued in the future")

    def _principal(self, claims: dict) -> Principal:
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise unauthenticated(Reason.TOKEN_INVALID, "token claim 'sub' is not a string")
        raw = claims.get(self._scope_claim)
        if isinstance(raw, str):
            # Spaces only (RFC 6749 §3.3): str.split() would also split on tabs, NBSP and
            # \x1c-\x1f, turning one scope "tenant\u00a0predict" into a grant of `predict`.
            scopes = frozenset(raw.split(" ")) - {""}
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            scopes = frozenset(raw)
        elif raw is None:
            scopes = frozenset()
        else:
            raise unauthenticated(Reason.TOKEN_INVALID,
                                  f"token claim {self._scope_claim!r} is malformed")
        return Principal(subject=sub, issuer=claims["iss"], scopes=scopes, has_token=True)


