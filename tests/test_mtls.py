"""Tests for proxy.authn.mtls: the identity read from a client certificate, and its cache."""

from __future__ import annotations

import ipaddress
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.authn.mtls import ANONYMOUS, CertificateIdentities, principal_from_pem
from proxy.call import Principal
from tfgate_dev.devpki import DevPKI

SPIFFE = "spiffe://example.org/ns/prod/sa/alice"
_KEY = ec.generate_private_key(ec.SECP256R1())


def _cert(cns: tuple[str, ...] = ("alice",), sans: list[x509.GeneralName] | None = None) -> bytes:
    """A self-signed leaf with exactly these CNs and SANs (the chain was checked by gRPC)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(_KEY.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1)))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return DevPKI.create(tmp_path_factory.mktemp("mtls"))


class TestPrincipalFromPem:
    def test_spiffe(self, dev_pki: DevPKI) -> None:
        """A SPIFFE SVID yields its SPIFFE ID, CN and DNS SANs, and counts as a certificate."""
        issued = dev_pki.client("alice", spiffe_id=SPIFFE, dns=("alice.example.org",))
        assert principal_from_pem(issued.cert_pem) == Principal(
            spiffe_id=SPIFFE, dns=("alice.example.org",), cn="alice", has_certificate=True)

    def test_multiple_uris_no_spiffe_id(self) -> None:
        """Two URI SANs are not an SVID: no SPIFFE ID is taken from either."""
        pem = _cert(sans=[x509.UniformResourceIdentifier(SPIFFE),
                          x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/admin")])
        principal = principal_from_pem(pem)
        assert principal.spiffe_id is None and principal.cn == "alice"

    def test_non_spiffe_uri(self) -> None:
        """A single URI SAN that is not spiffe:// is not a SPIFFE ID."""
        pem = _cert(sans=[x509.UniformResourceIdentifier("https://example.org/alice")])
        assert principal_from_pem(pem).spiffe_id is None

    def test_dns_sans(self, dev_pki: DevPKI) -> None:
        """All DNS SANs are kept, in order."""
        issued = dev_pki.client("svc", dns=("a.example.org", "b.example.org"))
        principal = principal_from_pem(issued.cert_pem)
        assert principal.dns == ("a.example.org", "b.example.org")
        assert principal.spiffe_id is None

    def test_cn_only(self, dev_pki: DevPKI) -> None:
        """A certificate without SANs still yields its CN."""
        issued = dev_pki.client("legacy-client")
        assert principal_from_pem(issued.cert_pem) == Principal(cn="legacy-client",
                                                                has_certificate=True)

    def test_two_cns(self) -> None:
        """A subject with two CNs is ambiguous: no CN is taken."""
        assert principal_from_pem(_cert(cns=("alice", "admin"))).cn is None

    def test_no_cn(self) -> None:
        """A certificate with no CN and no SANs is still a certificate principal."""
        principal = principal_from_pem(_cert(cns=()))
        assert principal == Principal(has_certificate=True)

    def test_other_san_types_ignored(self) -> None:
        """Email and IP SANs do not become DNS names or SPIFFE IDs."""
        pem = _cert(sans=[x509.RFC822Name("alice@example.org"),
                          x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
        principal = principal_from_pem(pem)
        assert principal.dns == () and principal.spiffe_id is None


class TestCertificateIdentities:
    def test_no_certificate(self) -> None:
        """Without a peer certificate the principal is anonymous."""
        identities = CertificateIdentities()
        assert identities.principal(None) is ANONYMOUS
        assert identities.principal(b"") is ANONYMOUS
        assert not ANONYMOUS.has_certificate

    def test_reads_leaf(self, dev_pki: DevPKI) -> None:
        """The principal comes from the leaf certificate the transport verified."""
        issued = dev_pki.client("bob", spiffe_id="spiffe://example.org/bob")
        principal = CertificateIdentities().principal(issued.cert_pem)
        assert principal.spiffe_id == "spiffe://example.org/bob"

    def test_cached(self, dev_pki: DevPKI, monkeypatch: pytest.MonkeyPatch) -> None:
        """A certificate seen before is not parsed again."""
        issued = dev_pki.client("carol")
        identities = CertificateIdentities()
        first = identities.principal(issued.cert_pem)
        monkeypatch.setattr("proxy.authn.mtls.principal_from_pem",
                            lambda pem: pytest.fail("parsed again"))
        assert identities.principal(issued.cert_pem) is first

    def test_cache_bounded(self) -> None:
        """The cache never holds more than cache_size certificates and still answers correctly."""
        identities = CertificateIdentities(cache_size=2)
        pems = [_cert(cns=(f"client-{i}",)) for i in range(5)]
        for i, pem in enumerate(pems):
            assert identities.principal(pem).cn == f"client-{i}"
            assert len(identities._cache) <= 2
        assert identities.principal(pems[0]).cn == "client-0"

    def test_concurrent_misses(self) -> None:
        """Threads that miss the full cache at the same moment all get their principal."""

        class PreemptedDict(dict):
            """pop yields first, like a thread switch between choosing and evicting a victim."""

            def pop(self, *args):  # type: ignore[no-untyped-def]
                time.sleep(0.002)
                return super().pop(*args)

        identities = CertificateIdentities(cache_size=1)
        identities._cache = PreemptedDict()
        errors: list[BaseException] = []

        def present(pem: bytes, cn: str) -> None:
            try:
                assert identities.principal(pem).cn == cn
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                errors.append(exc)

        pems = [(_cert(cns=(f"client-{i}",)), f"client-{i}") for i in range(9)]
        present(*pems[0])  # fill the cache
        threads = [threading.Thread(target=present, args=pem_cn) for pem_cn in pems[1:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(identities._cache) <= 1
