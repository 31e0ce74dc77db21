"""Tests for proxy.metadata: what client metadata may reach the upstream."""

from __future__ import annotations

from proxy.call import Principal
from proxy.config import Identity
from proxy.metadata import MetadataFilter, relayable


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

    def test_principal_rendering_is_sent_as_is(self):
        """The principal's one rendering (percent-encoded, printable ASCII) is the value:
        a unicode CN cannot break the ASCII metadata value, and nothing is escaped twice."""
        flt = MetadataFilter(Identity(forward_metadata_key="x-principal"))
        for cn, rendered in [("Zoë", "cn:Zo%C3%AB"), ("John Doe", "cn:John%20Doe"),
                             ("100%", "cn:100%25"), ("a\nb", "cn:a%0Ab")]:
            shown = Principal(cn=cn, has_certificate=True).display()
            assert shown == rendered and shown.isascii() and shown.isprintable()
            assert flt.upstream_metadata([], shown) == (("x-principal", rendered),)

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
