"""Certificate identity: the SPIFFE ID, DNS SANs and CN of the verified client certificate.

gRPC has already verified the chain against `listen.tls.client_ca` during the handshake;
this module only reads the leaf. Parsing costs tens of microseconds, so identities are
cached by the certificate's PEM (one entry per distinct client certificate).

A URI SAN is the certificate's SPIFFE ID only if it is the certificate's one URI SAN
(the X.509-SVID standard, §2: an SVID with several must be rejected) and it is a
well-formed leaf SPIFFE ID (`is_spiffe_id`; docs/identity.md). Otherwise the certificate
has no SPIFFE identity, so no `spiffe` rule can match it; its DNS SANs and CN still count.
A rule glob is not a validator: `team-a/*` matches `team-a/..`, `team-a/%2e%2e` and
`team-a/x?admin`; none of them is an ID here.
"""

from __future__ import annotations

import re
import threading

from cryptography import x509
from cryptography.x509.oid import NameOID

from proxy.call import Principal

ANONYMOUS = Principal()

# The SPIFFE ID standard, §2: the scheme exactly as `spiffe://` (one spelling); a trust
# domain of lowercase letters, digits, `.`, `-`, `_` (no userinfo, port, percent-encoding,
# at most 255 bytes); then one or more path segments of letters, digits, `.`, `-`, `_`,
# none empty, `.` or `..` (so no trailing `/`, query, fragment or percent-encoding).
# The X.509-SVID standard, §3.1 and §5.2: a leaf's ID has a non-root path, so at least
# one segment.
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]{1,255}(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._-]+)+")
MAX_SPIFFE_ID_BYTES = 2048  # the standard's §2.3; the pattern admits ASCII only


def is_spiffe_id(value: str) -> bool:
    """Whether `value` is a well-formed SPIFFE ID of a leaf (workload) certificate."""
    return len(value) <= MAX_SPIFFE_ID_BYTES and _SPIFFE_ID.fullmatch(value) is not None


def principal_from_pem(pem: bytes) -> Principal:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris, dns = [], ()
    # An SVID carries exactly one URI SAN; anything else is not a SPIFFE identity.
    spiffe = uris[0] if len(uris) == 1 and is_spiffe_id(uris[0]) else None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if len(cns) == 1 else None
    return Principal(spiffe_id=spiffe, dns=dns, cn=str(cn) if cn is not None else None,
                     has_certificate=True)


class CertificateIdentities:
    """Maps the peer's verified certificate to a Principal, with a bounded cache."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._cache: dict[bytes, Principal] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()  # server threads share the cache; lookups need none

    def principal(self, pem: bytes | None) -> Principal:
        """The identity of the peer's verified leaf certificate (PEM), if it sent one."""
        if not pem:
            return ANONYMOUS
        found = self._cache.get(pem)
        if found is None:
            found = principal_from_pem(pem)
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[pem] = found
        return found
