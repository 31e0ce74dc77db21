"""Unit tests of metadata hygiene: what client metadata may reach the upstream."""

from __future__ import annotations

from proxy.config import Identity
from proxy.forward import MetadataFilter, header_safe, relayable


class TestMetadataFilter:
    def test_credentials_and_hop_by_hop_are_dropped(self):
        """Tokens, cookies and connection headers never go upstream; the rest does."""
        kept = MetadataFilter(Identity()).upstream_metadata(
            [("authorization", "Bearer t"), ("cookie", "a=b"), ("proxy-authorization", "x"),
             ("connection", "close"), ("te", "trailers"), ("grpc-timeout", "1S"),
             ("x-request-id", "42"), ("trace-bin", b"\x00")], "p")
        assert kept == (("x-request-id", "42"), ("trace-bin", b"\x00"))

    def test_identity_key_replaces_client_copies(self):
        """Any client-sent copy of the identity key is dropped and tfgate's value added."""
        flt = MetadataFilter(Identity(forward_metadata_key="x-principal",
                                      strip_metadata=["X-Internal"]))
        kept = flt.upstream_metadata([("x-principal", "forged"), ("x-principal", "again"),
                                      ("x-internal", "1")], "spiffe://a/b")
        assert kept == (("x-principal", "spiffe://a/b"),)

    def test_unicode_identity_is_percent_encoded(self):
        """A unicode CN or sub cannot break the ASCII metadata value."""
        assert header_safe("cn:Zoë") == "cn:Zo%C3%AB"
        assert header_safe("spiffe://td/ns/a b") == "spiffe://td/ns/a b"
        assert header_safe("100%") == "100%25"

    def test_relayable_drops_reserved_keys(self):
        """Upstream metadata keys that gRPC reserves are not relayed."""
        assert relayable([("grpc-status", "0"), (":path", "/x"), ("x-a", "1")]) == (("x-a", "1"),)
        assert relayable(None) == ()


def test_binary_variants_of_dropped_keys_are_dropped():
    """`authorization-bin` or a binary copy of the identity key never go upstream."""
    flt = MetadataFilter(Identity(forward_metadata_key="x-principal"))
    kept = flt.upstream_metadata([("authorization-bin", b"t"), ("x-principal-bin", b"f"),
                                  ("x-ok-bin", b"1")], "p")
    assert kept == (("x-ok-bin", b"1"), ("x-principal", "p"))
