"""Authentication: turn a peer certificate and/or a bearer token into a `Principal`.

The certificate part is known first (the TLS handshake verified it) and is handed back
through `on_certificate` before the token is looked at, so a call refused for its token
is still audited with the certificate identity that did verify. Whether a token is
required is decided here, once (`token_required`, from `Config.token_required()`): a
caller without one is UNAUTHENTICATED (`token-required`), never PERMISSION_DENIED, and
`tfgate explain` asks the same question through `check_required`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from proxy.authn.jwt import TokenVerifier, extract_token
from proxy.authn.mtls import ANONYMOUS, CertificateIdentities
from proxy.cache import Memo
from proxy.call import Principal
from proxy.errors import Reason, unauthenticated

_MERGED_MAX = 4096  # distinct (certificate, token) principals kept, and 4 MiB of names


def _ignore(_: Principal) -> None:
    pass


class Authenticator:
    """Built once per config; `authenticate` is called once per call. `local`: the
    identity of every caller of a plaintext egress listener (`listen.local_identity`),
    which stands in for the certificate such a caller cannot present."""

    def __init__(self, certificates: CertificateIdentities, tokens: TokenVerifier | None,
                 *, token_required: bool = False, local: Principal | None = None) -> None:
        self._certificates = certificates
        self._tokens = tokens
        self.token_required = token_required and tokens is not None
        self._local = local
        # Both parts come from caches (certificate identities, verified tokens), so the
        # same caller merges the same two objects call after call; keeping the merged one
        # keeps its rendered name and limit key too (Principal renders them once).
        self._merged: Memo[Principal] = Memo(_MERGED_MAX)

    def authenticate(self, certificate: bytes | None,
                     metadata: Sequence[tuple[str, str | bytes]],
                     on_certificate: Callable[[Principal], None] = _ignore, *,
                     local: bool = False) -> Principal:
        """`certificate`: the peer's verified leaf (PEM) as the transport saw it, or None.
        `on_certificate` receives the certificate principal, when there is one, before any
        token is checked (so a refusal for the token still knows who presented it).
        `local`: the call came through the listener `listen.local_identity` describes
        (the gRPC one); only its callers are that identity, never the REST front's."""
        principal = self._certificates.principal(certificate)
        if principal is ANONYMOUS and local and self._local is not None:
            principal = self._local
        if principal is not ANONYMOUS:
            on_certificate(principal)
        token = extract_token(metadata)
        if token is not None:
            if self._tokens is None:
                raise unauthenticated(Reason.TOKEN_INVALID, "bearer tokens are not accepted here")
            from_token = self._tokens.verify(token)
            # Without a certificate the merge is the token's principal itself; skipping
            # it saves a dataclasses.replace (~10 µs) on every token-only call.
            principal = from_token if principal is ANONYMOUS else self._merge(principal,
                                                                              from_token)
        self.check_required(principal)
        return principal

    def _merge(self, certificate: Principal, token: Principal) -> Principal:
        key = (certificate, token)
        found = self._merged.get(key)
        if found is None:
            found = certificate.merged(token)
            self._merged.put(key, found, len(found.display()) + sum(map(len, found.dns))
                             + sum(map(len, found.scopes)))
        return found

    def check_required(self, principal: Principal) -> None:
        """Refuse a principal that lacks every credential, or the token this listener
        requires, with UNAUTHENTICATED."""
        if not (principal.has_certificate or principal.has_token):
            raise unauthenticated(Reason.NO_CREDENTIALS, "no client certificate or bearer token")
        if self.token_required and not principal.has_token:
            raise unauthenticated(Reason.TOKEN_REQUIRED, "a bearer token is required "
                                  "(authorization: Bearer <token>) besides the certificate")
