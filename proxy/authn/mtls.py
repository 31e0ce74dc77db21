"""Certificate identity: the SPIFFE ID, DNS SANs and CN of the verified client certificate.

gRPC has already verified the chain against `listen.tls.client_ca` during the handshake;
this module only reads the leaf. Parsing costs tens of microseconds, so identities are
cached by the certificate's PEM (one entry per distinct client certificate).
"""

from __future__ import annotations

import threading

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from proxy.call import Principal

ANONYMOUS = Principal()


def principal_from_pem(pem: bytes) -> Principal:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        uris, dns = [], ()
    # An SVID carries exactly one URI SAN; anything else is not a SPIFFE identity.
    spiffe = uris[0] if len(uris) == 1 and uris[0].startswith("spiffe://") else None
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
