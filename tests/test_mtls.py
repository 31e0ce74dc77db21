"""Tests for proxy.authn.mtls: the identity read from a client certificate, and its cache."""

from __future__ import annotations

import ipaddress
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.authn.mtls import (
    ANONYMOUS,
    MAX_SPIFFE_ID_BYTES,
    CertificateIdentities,
    is_spiffe_id,
    principal_from_pem,
)
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


_TD = "example.org"


def _id_of_length(n: int) -> str:
    """A well-formed-looking ID of exactly n characters (99-character segments)."""
    head = "spiffe://td/" + "/".join(["a" * 99] * 19) + "/"
    return head + "b" * (n - len(head))

# Well-formed leaf SPIFFE IDs, at the edges of what the SPIFFE ID standard allows.
VALID_IDS = [
    SPIFFE,
    "spiffe://td/a",
    "spiffe://a_b-c.9/x",  # trust domain: lowercase letters, digits, . - _
    "spiffe://10.0.0.1/x",  # a dotted quad is a trust domain like any other
    f"spiffe://{_TD}/MixedCase/UPPER/a.b/a-b/a_b/0",  # path segments may use upper case
    f"spiffe://{_TD}/.../.a/a./..b",  # dots are fine unless a segment is exactly . or ..
    "spiffe://" + "t" * 255 + "/x",  # the longest trust domain
    _id_of_length(2048),
]
# One member per way to be malformed; each is a string cryptography can put in a URI SAN.
INVALID_IDS = {
    "scheme upper case": f"SPIFFE://{_TD}/a",
    "scheme mixed case": f"Spiffe://{_TD}/a",
    "scheme other": f"https://{_TD}/a",
    "scheme one slash": f"spiffe:/{_TD}/a",
    "no trust domain": "spiffe:///a",
    "trust domain upper case": "spiffe://Example.org/a",
    "trust domain percent": "spiffe://ex%61mple.org/a",
    "trust domain too long": "spiffe://" + "t" * 256 + "/x",
    "trust domain IPv6": "spiffe://[::1]/a",
    "userinfo": f"spiffe://user@{_TD}/a",
    "empty userinfo": f"spiffe://@{_TD}/a",
    "port": f"spiffe://{_TD}:8443/a",
    "empty port": f"spiffe://{_TD}:/a",
    "no path": f"spiffe://{_TD}",
    "root path": f"spiffe://{_TD}/",
    "trailing slash": f"spiffe://{_TD}/ns/a/",
    "empty segment": f"spiffe://{_TD}/ns//a",
    "dot segment": f"spiffe://{_TD}/ns/./a",
    "dot-dot segment": f"spiffe://{_TD}/ns/team-a/../team-b",
    "dot-dot last": f"spiffe://{_TD}/ns/team-a/..",
    "dot last": f"spiffe://{_TD}/ns/team-a/.",
    "percent-encoded dot-dot": f"spiffe://{_TD}/ns/team-a/%2e%2e",
    "percent-encoded letter": f"spiffe://{_TD}/ns/%61lice",
    "percent-encoded slash": f"spiffe://{_TD}/ns/a%2Fb",
    "query": f"spiffe://{_TD}/ns/alice?admin=1",
    "empty query": f"spiffe://{_TD}/ns/alice?",
    "fragment": f"spiffe://{_TD}/ns/alice#admin",
    "space": f"spiffe://{_TD}/ns/al ice",
    "plus": f"spiffe://{_TD}/ns/al+ice",
    "tilde": f"spiffe://{_TD}/ns/al~ice",
    "colon in path": f"spiffe://{_TD}/ns:a/alice",
    "at in path": f"spiffe://{_TD}/ns/alice@x",
    "backslash": f"spiffe://{_TD}/ns\\alice",
    "NUL": f"spiffe://{_TD}/ns/alice\x00",
    "newline": f"spiffe://{_TD}/ns/alice\n",
    "leading space": f" spiffe://{_TD}/ns/alice",
    "too long": _id_of_length(2049),
}


class TestSpiffeIdForm:
    """A URI SAN is a SPIFFE ID only when well-formed and the certificate's only URI SAN."""

    def test_lengths_at_the_limit(self) -> None:
        assert len(VALID_IDS[-1]) == MAX_SPIFFE_ID_BYTES
        assert len(INVALID_IDS["too long"]) == MAX_SPIFFE_ID_BYTES + 1

    @pytest.mark.parametrize("spiffe_id", VALID_IDS)
    def test_well_formed_ids_are_identities(self, dev_pki: DevPKI, spiffe_id: str) -> None:
        """Each well-formed ID, in a real DevPKI certificate, becomes the SPIFFE identity."""
        issued = dev_pki.client("alice", spiffe_id=spiffe_id)
        assert is_spiffe_id(spiffe_id)
        assert principal_from_pem(issued.cert_pem).spiffe_id == spiffe_id

    @pytest.mark.parametrize("spiffe_id", INVALID_IDS.values(), ids=INVALID_IDS.keys())
    def test_malformed_ids_are_no_identity(self, dev_pki: DevPKI, spiffe_id: str) -> None:
        """A malformed ID gives the certificate no SPIFFE identity; DNS SANs and CN stay."""
        issued = dev_pki.client("alice", spiffe_id=spiffe_id, dns=("alice.example.org",))
        assert not is_spiffe_id(spiffe_id)
        assert principal_from_pem(issued.cert_pem) == Principal(
            dns=("alice.example.org",), cn="alice", has_certificate=True)

    @pytest.mark.parametrize("spiffe_id", [f"spiffe://{_TD}/ns/\u00e9", "spiffe://ex\u00e4mple/a",
                                           f"spiffe://{_TD}/\u0430lice"])
    def test_non_ascii_is_no_identity(self, spiffe_id: str) -> None:
        """A non-ASCII URI (outside IA5String; cryptography's builder refuses it, a CA might
        not) is not an identity and does not break parsing."""
        uri = x509.UniformResourceIdentifier._init_without_validation(spiffe_id)
        principal = principal_from_pem(_cert(sans=[uri]))
        assert principal.spiffe_id is None and principal.cn == "alice"

    @pytest.mark.parametrize("other", [SPIFFE, "spiffe://example.org/ns/prod/sa/admin",
                                       "https://example.org/alice", "spiffe://bad/"])
    def test_second_uri_san_voids_the_id(self, dev_pki: DevPKI, other: str) -> None:
        """A well-formed ID next to any second URI SAN (the same, another ID, another
        scheme, a malformed one) is not an SVID: no SPIFFE identity, in either order."""
        for first, second in ((SPIFFE, other), (other, SPIFFE)):
            issued = dev_pki.client("alice", spiffe_id=first, uris=(second,))
            principal = principal_from_pem(issued.cert_pem)
            assert principal.spiffe_id is None and principal.cn == "alice"

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet="abAZ09.-_/:%?#@ ~\u00e9", max_size=12))
    def test_any_suffix_is_judged_segment_by_segment(self, path: str) -> None:
        """Whatever follows `spiffe://td/`: accepted exactly when it is `/`-separated
        segments of [A-Za-z0-9._-], none empty, `.` or `..`."""
        expected = all(s and s not in (".", "..") and all(
            c.isascii() and (c.isalnum() or c in "._-") for c in s) for s in path.split("/"))
        assert is_spiffe_id(f"spiffe://{_TD}/{path}") == expected


@pytest.mark.tf
def test_malformed_spiffe_id_never_matches_a_rule(pki: Any, signing: Any,
                                                   clean_backend: Any) -> None:
    """Real tensorflow-serving-api client over mTLS, the conftest policy: `team-a/*` (a
    glob that also matches `..` and `alice?x`) grants alice, but certificates from the
    same CA whose URI SAN is malformed get PERMISSION_DENIED and nothing arrives."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.conftest import TEAM_A, base_config, running_proxy

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
    odd = [pki.ca.client(f"odd-{i}", spiffe_id=uri) for i, uri in enumerate([
        "spiffe://tfgate.test/team-a/..", "spiffe://tfgate.test/team-a/alice?x=1",
        "spiffe://tfgate.test/team-a/%61lice", "spiffe://tfgate.test/team-a/"])]
    odd.append(pki.ca.client("two-uris", spiffe_id=TEAM_A, uris=("https://tfgate.test/",)))
    with running_proxy(base_config(pki, signing, clean_backend.address)) as proxy:
        for client in odd:
            with pki.channel(proxy.address, client) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.RpcError) as info:
                    stub.Predict(request, timeout=10)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "no rule grants anything" in info.value.details()
        assert clean_backend.records() == []
        with pki.channel(proxy.address, pki.alice) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=10)
    assert list(tf.make_ndarray(response.outputs["y"])) == [3.5]  # latest, v2: 0.5x + 3


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
