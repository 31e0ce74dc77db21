"""Tests for proxy.metadata: what client metadata may reach the upstream, unit level, as
validated at load, and end to end through a real proxy to a recording upstream."""

from __future__ import annotations

import copy
import time

import pytest

from proxy.call import Principal
from proxy.config import ConfigError, Identity, validate_config
from proxy.metadata import MetadataFilter, relayable
from tests.conftest import AUDIENCE, ISSUER, TEAM_A, base_config
from tests.h2conn import Conn, Stats, Target, grpc_frame
from tests.rawbackend import PREDICT
from tests.test_e2e_forwarding import predict_bytes
from tfgate_dev.devpki import mint_claims

PLAIN = {"listen": {"address": "127.0.0.1:0", "plaintext": True},
         "upstreams": {"serving": {"address": "127.0.0.1:8500"}}}


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


class TestStripAndIdentityKeys:
    def test_strip_entries_match_any_case_and_their_bin_form(self):
        """An entry names a key, not a spelling: `X-Internal-Bin` strips `x-internal` and
        `x-internal-bin`, `x-trace` strips `x-trace-bin`, whatever case the client used."""
        flt = MetadataFilter(Identity(strip_metadata=["X-Internal-Bin", "x-trace"]))
        sent = [("x-internal", "1"), ("x-internal-bin", b"1"), ("X-Internal", "1"),
                ("x-trace", "2"), ("x-trace-bin", b"2"), ("X-TRACE-BIN", b"2"),
                ("x-internals", "kept"), ("x-trace-id", "kept")]
        assert flt.upstream_metadata(sent, "p") == (("x-internals", "kept"),
                                                    ("x-trace-id", "kept"))

    def test_client_copies_of_the_identity_key_in_any_spelling(self):
        flt = MetadataFilter(Identity(forward_metadata_key="x-principal"))
        sent = [("X-Principal", "forged"), ("x-principal-bin", b"forged"),
                ("X-PRINCIPAL-BIN", b"forged"), ("x-principal", "forged")]
        assert flt.upstream_metadata(sent, "spiffe://a/b") == (("x-principal", "spiffe://a/b"),)

    def test_underscore_spellings_of_dropped_keys(self):
        """An upstream behind a CGI/WSGI-style server (HTTP_X_PRINCIPAL) or a proxy that
        folds `_` into `-` reads `x_principal` as `x-principal`: the forged copy must not
        sit beside tfgate's value, and `proxy_authorization` is a credential."""
        flt = MetadataFilter(Identity(forward_metadata_key="x-principal",
                                      strip_metadata=["x-internal"]))
        sent = [("x_principal", "forged"), ("X_Principal_Bin", b"forged"),
                ("x_internal", "1"), ("proxy_authorization", "Basic x"),
                ("transfer_encoding", "chunked"), ("x_kept", "yes")]
        assert flt.upstream_metadata(sent, "p") == (("x_kept", "yes"), ("x-principal", "p"))

    def test_an_underscore_identity_key_drops_the_dash_spelling(self):
        flt = MetadataFilter(Identity(forward_metadata_key="x_principal"))
        assert flt.upstream_metadata([("x-principal", "forged")], "p") == (
            ("x_principal", "p"),)

    def test_reserved_keys_in_any_case(self):
        """`grpc-` and pseudo-header keys are gRPC's own, whatever their case or spelling
        (`grpc_timeout` reads as `grpc-timeout` to a server that folds `_` into `-`)."""
        flt = MetadataFilter(Identity())
        assert flt.upstream_metadata([("GRPC-Timeout", "1S"), ("grpc-x", "1"),
                                      ("grpc_timeout", "1S"), ("Grpc_Encoding", "gzip"),
                                      ("Authorization", "Bearer t")], "p") == ()


class TestValidatedAtLoad:
    @pytest.mark.parametrize(("key", "says"), [
        ("x-principal-bin", "-bin key carries binary"),
        ("X-Principal", "lowercase"),
        ("x principal", "lowercase"),
        ("grpc-principal", "grpc-"),
        (":authority", "lowercase"),
        ("authorization", "credential key"),
        ("proxy-authorization", "credential key"),
        ("cookie", "credential key"),
        ("te", "connection header"),
        ("user-agent", "connection header"),
        # `_` reads as `-` (an upstream that folds would see the credential or header)
        ("proxy_authorization", "credential key"),
        ("transfer_encoding", "connection header"),
        ("", "lowercase"),
    ])
    def test_identity_key_refused(self, key, says):
        with pytest.raises(ConfigError) as info:
            validate_config({**PLAIN, "identity": {"forward_metadata_key": key}})
        assert info.value.path == "identity.forward_metadata_key"
        assert says in info.value.problem

    @pytest.mark.parametrize("key", ["x-tfgate-principal", "x_principal", "l5d.principal"])
    def test_identity_key_accepted(self, key):
        cfg = validate_config({**PLAIN, "identity": {"forward_metadata_key": key}})
        assert cfg.identity.forward_metadata_key == key

    @pytest.mark.parametrize("key", ["x secret", "", "x-é", "x:y"])
    def test_strip_entry_that_is_no_key(self, key):
        with pytest.raises(ConfigError) as info:
            validate_config({**PLAIN, "identity": {"strip_metadata": ["x-ok", key]}})
        assert info.value.path == "identity.strip_metadata"


class TestThroughTheProxy:
    """A real proxy in front of tests/rawbackend.py, which records every metadata entry."""

    SENT = (("x-tfgate-principal", "forged"), ("x-tfgate-principal-bin", b"forged"),
            ("x_tfgate_principal", "forged"), ("x_tfgate-principal", "forged"),
            ("x-internal", "1"), ("x-internal-bin", b"1"), ("x-trace", "2"),
            ("x-trace-bin", b"2"), ("cookie", "session=1"), ("x-kept", "yes"),
            ("x-kept-bin", b"\x00\x01"))

    @pytest.fixture
    def proxy(self, pki, signing, make_proxy, raw_backend):
        config = copy.deepcopy(base_config(pki, signing, raw_backend.address))
        config["identity"]["strip_metadata"] = ["X-Internal-Bin", "x-trace"]
        return make_proxy(config)

    def test_only_kept_keys_and_one_identity_value_arrive(self, pki, signing, proxy,
                                                          raw_backend):
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        metadata = [*self.SENT, ("authorization", f"Bearer {_token(signing)}")]
        assert call(predict_bytes("half_plus_two", 1), timeout=5,
                    metadata=metadata).startswith(b"echo:")
        (items,) = raw_backend.metadata_items
        seen = [(k, v) for k, v in items if k.startswith(("x-", "x_", "cookie",
                                                          "authorization"))]
        assert seen == [("x-kept", "yes"), ("x-kept-bin", b"\x00\x01"),
                        ("x-tfgate-principal", f"{TEAM_A} jwt:{ISSUER}#svc-1")]

    @pytest.mark.parametrize("forged", ["X-Tfgate-Principal", "X-TFGATE-PRINCIPAL-BIN"])
    def test_uppercase_copy_on_the_wire_never_arrives(self, pki, proxy, raw_backend, forged):
        """gRPC clients only send lowercase keys, so a raw HTTP/2 client sends the identity
        key capitalised. First a lowercase forged copy, to show this raw client reaches the
        upstream (which sees tfgate's value only); then the capitalised one: gRPC itself
        refuses such a request (docs/wire-facts.md), and nothing forged arrives either way."""
        control = _raw_predict(pki, proxy, [("x-tfgate-principal", "forged")])
        assert control == "0" and len(raw_backend.metadata_items) == 1
        _raw_predict(pki, proxy, [(forged, "Zm9yZ2Vk")])
        for items in raw_backend.metadata_items:
            principals = [v for k, v in items if k.lower().startswith("x-tfgate-principal")]
            assert principals == [TEAM_A]


def _raw_predict(pki, proxy, metadata: list[tuple[str, str]]) -> str | None:
    """A Predict over a hand-driven HTTP/2 connection that sends header names as given;
    the grpc-status it ended with (None if reset or lost)."""
    host, port = proxy.address.rsplit(":", 1)
    target = Target(host, int(port), ca=pki.ca.ca.cert_pem, cert=str(pki.alice.cert_path),
                    key=str(pki.alice.key_path), server_name="localhost")
    conn = Conn(target, Stats())
    conn.h2.config.validate_outbound_headers = False  # let capitals through
    conn.h2.config.normalize_outbound_headers = False
    try:
        sid = conn.open_stream(metadata=metadata)
        assert sid is not None
        conn.send(sid, grpc_frame(predict_bytes("half_plus_two", 1)), end_stream=True)
        deadline = time.monotonic() + 10  # a hang guard
        while conn.streams[sid].ended is None and not conn.closed:
            assert time.monotonic() < deadline, "no answer"
            conn.poll(0.2)
        return conn.streams[sid].status
    finally:
        conn.close()


def _token(signing) -> str:
    return signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc-1",
                                         scope="predict"))
