"""Forwarding over real sockets without TensorFlow: routing across upstreams, unix
sockets, upstream TLS, audit events, cancellation, and all four gRPC call kinds."""

from __future__ import annotations

import json

import grpc
import pytest

from proxy.call import Facts
from proxy.errors import malformed
from proxy.families import Access, Kind, Method, family
from proxy.families.serving import SERVING
from proxy.pb import serving_pb2
from proxy.routing import MethodTable
from tests.conftest import AUDIENCE, ISSUER, base_config
from tests.rawbackend import BIDI, CLIENT_STREAM, PREDICT, RawBackend
from tfgate_dev.devpki import mint_claims


def predict_bytes(model: str, version: int | None = None) -> bytes:
    request = serving_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request.SerializeToString()


def token_metadata(signing, **claims):
    base = mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="svc", scope="predict")
    return [("authorization", "Bearer " + signing.key.token({**base, **claims}))]


class TestRouting:
    def test_models_are_routed_to_their_upstream(self, pki, signing, make_proxy):
        """Model-name globs choose the upstream; others go to the default."""
        a, b = RawBackend(), RawBackend()
        try:
            config = base_config(pki, signing, a.address)
            config["upstreams"]["team-b"] = {"address": b.address}
            config["default_upstream"] = "serving"
            config["routes"] = [{"models": ["other_*"], "upstream": "team-b"}]
            config["policy"]["rules"][0]["models"] = ["*"]
            proxy = make_proxy(config)
            call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
            assert call(predict_bytes("other_model"), timeout=5).startswith(b"echo:")
            call(predict_bytes("half_plus_two"), timeout=5)
            assert [r for _, r in b.received] == [predict_bytes("other_model")]
            assert [r for _, r in a.received] == [predict_bytes("half_plus_two")]
        finally:
            a.stop()
            b.stop()


class TestTransports:
    def test_unix_socket_listener_and_upstream(self, pki, signing, make_proxy, tmp_path):
        """A plaintext listener on a unix socket forwards to a unix-socket upstream."""
        backend = RawBackend(f"unix:{tmp_path}/up.sock")
        try:
            config = base_config(pki, signing, backend.address)
            config["listen"] = {"address": f"unix:{tmp_path}/tfgate.sock", "plaintext": True}
            config["policy"]["rules"] = [r for r in config["policy"]["rules"]
                                         if r["name"] == "token-callers"]
            proxy = make_proxy(config)
            call = grpc.insecure_channel(proxy.address).unary_unary(PREDICT)
            with pytest.raises(grpc.RpcError) as info:
                call(predict_bytes("half_plus_two"), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            request = predict_bytes("half_plus_two", version=1)
            assert call(request, timeout=5, metadata=token_metadata(signing)) == (
                b"echo:" + request)
        finally:
            backend.stop()

    def test_upstream_tls_with_client_certificate(self, pki, signing, make_proxy):
        """tfgate can reach an mTLS upstream, presenting its own client certificate."""
        upstream_cert = pki.ca.server(file_stem="upstream")
        proxy_cert = pki.ca.client("tfgate-proxy", file_stem="tfgate-proxy")
        creds = grpc.ssl_server_credentials(
            [(upstream_cert.key_pem, upstream_cert.cert_pem)],
            root_certificates=pki.ca.ca.cert_pem, require_client_auth=True)
        backend = RawBackend(credentials=creds)
        try:
            config = base_config(pki, signing, backend.address.replace("127.0.0.1", "localhost"))
            config["upstreams"]["serving"]["tls"] = {
                "ca": str(pki.ca.ca.cert_path), "cert": str(proxy_cert.cert_path),
                "key": str(proxy_cert.key_path)}
            proxy = make_proxy(config)
            call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
            assert call(predict_bytes("half_plus_two"), timeout=5).startswith(b"echo:")
        finally:
            backend.stop()


class TestAudit:
    def test_one_event_per_call_and_no_secrets(self, pki, signing, make_proxy, raw_backend,
                                               tmp_path):
        """Every call, allowed or not, yields exactly one JSON event; the token never appears."""
        log = tmp_path / "audit.jsonl"
        config = base_config(pki, signing, raw_backend.address)
        config["audit"] = {"output": str(log)}
        proxy = make_proxy(config)
        channel = pki.channel(proxy.address, pki.cn_client)
        metadata = token_metadata(signing)
        token = metadata[0][1].split()[1]
        channel.unary_unary(PREDICT)(predict_bytes("half_plus_two", 1), metadata=metadata,
                                     timeout=5)
        for model in ("other_model", "secret_model"):
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(PREDICT)(predict_bytes(model), metadata=metadata, timeout=5)
        proxy.stop(0)
        text = log.read_text()
        events = [json.loads(line) for line in text.splitlines()]
        assert [(e["model"], e["decision"], e["status"]) for e in events] == [
            ("half_plus_two", "allow", "OK"),
            ("other_model", "deny", "PERMISSION_DENIED"),
            ("secret_model", "deny", "PERMISSION_DENIED")]
        assert events[0]["principal"] == f"cn:legacy-client jwt:{ISSUER}#svc"
        assert events[1]["reason"] == "model-not-allowed"
        assert token not in text and token.split(".")[2] not in text


class TestCancellation:
    def test_client_cancel_cancels_upstream(self, pki, signing, make_proxy, raw_backend):
        """Cancelling the client's call cancels the upstream call."""
        proxy = make_proxy(base_config(pki, signing, raw_backend.address))
        call = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        future = call.future(predict_bytes("half_plus_two"), metadata=[("x-block", "1")],
                             timeout=30)
        assert raw_backend.entered.wait(10)
        future.cancel()
        assert raw_backend.cancelled.wait(10), "upstream call was not cancelled"


def _refuse_forbidden(message: bytes) -> Facts:
    if b"forbidden" in message:
        raise malformed("forbidden message")
    if b"crash" in message:  # stands for a bug in an inspector: not a Reject
        raise ValueError("inspector bug")
    return Facts()


# Two test-only streaming methods, so the client-streaming and bidi forwarders can be
# exercised (TF Serving itself has none); each message is inspected on its way. They
# join the serving family as a family of their own, in a table the test builds.
STREAMS = family("serving", (
    Method(CLIENT_STREAM, Access.INFRA, Kind.STREAM_UNARY, _refuse_forbidden),
    Method(BIDI, Access.INFRA, Kind.STREAM_STREAM, _refuse_forbidden),
))


@pytest.fixture
def streaming_methods() -> MethodTable:
    return MethodTable([SERVING, STREAMS])


class TestStreaming:
    def config(self, pki, signing, raw_backend):
        config = base_config(pki, signing, raw_backend.address)
        config["policy"]["rules"].append({"name": "streams", "principals": {"cn": ["legacy-*"]},
                                          "methods": [CLIENT_STREAM, BIDI]})
        return config

    def test_client_stream_and_bidi_forward_every_message(self, pki, signing, make_proxy,
                                                          raw_backend, streaming_methods):
        """Streamed messages arrive upstream in order and responses stream back."""
        proxy = make_proxy(self.config(pki, signing, raw_backend), methods=streaming_methods)
        channel = pki.channel(proxy.address, pki.cn_client)
        assert channel.stream_unary(CLIENT_STREAM)(iter([b"a", b"b"]), timeout=5) == b"a|b"
        replies = list(channel.stream_stream(BIDI)(iter([b"1", b"2", b"3"]), timeout=5))
        assert replies == [b"echo:1", b"echo:2", b"echo:3"]
        assert [m for _, m in raw_backend.received] == [b"a", b"b", b"1", b"2", b"3"]

    @pytest.mark.parametrize("path", [CLIENT_STREAM, BIDI])
    def test_refused_message_never_reaches_upstream(self, pki, signing, make_proxy,
                                                    raw_backend, streaming_methods, path):
        """A message that fails inspection ends the call with its status and is not sent."""
        proxy = make_proxy(self.config(pki, signing, raw_backend), methods=streaming_methods)
        channel = pki.channel(proxy.address, pki.cn_client)
        kind = channel.stream_unary if path == CLIENT_STREAM else channel.stream_stream
        with pytest.raises(grpc.RpcError) as info:
            result = kind(path)(iter([b"ok", b"forbidden", b"after"]), timeout=5)
            list(result) if path == BIDI else None
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sent = [m for _, m in raw_backend.received]
        assert b"forbidden" not in sent and b"after" not in sent

    @pytest.mark.parametrize("path", [CLIENT_STREAM, BIDI])
    def test_inspector_error_ends_the_stream_with_internal(self, pki, signing, make_proxy,
                                                            raw_backend, streaming_methods,
                                                            path):
        """An inspector that fails with something other than a Reject ends the call with
        INTERNAL at once (the upstream call is cancelled), never leaves it hanging until
        the client's deadline; the message it failed on is not forwarded."""
        proxy = make_proxy(self.config(pki, signing, raw_backend), methods=streaming_methods)
        channel = pki.channel(proxy.address, pki.cn_client)
        kind = channel.stream_unary if path == CLIENT_STREAM else channel.stream_stream
        with pytest.raises(grpc.RpcError) as info:
            result = kind(path)(iter([b"ok", b"crash", b"after"]), timeout=10)
            list(result) if path == BIDI else None
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "inspector bug" not in (info.value.details() or "")
        sent = [m for _, m in raw_backend.received]
        assert b"crash" not in sent and b"after" not in sent

    def test_stream_method_refused_without_rule(self, pki, signing, make_proxy, raw_backend,
                                                streaming_methods):
        """Streaming methods obey the policy like unary ones."""
        proxy = make_proxy(self.config(pki, signing, raw_backend), methods=streaming_methods)
        channel = pki.channel(proxy.address, pki.alice)
        with pytest.raises(grpc.RpcError) as info:
            list(channel.stream_stream(BIDI)(iter([b"1"]), timeout=5))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert raw_backend.received == []


class TestMethodCheckedBeforeParse:
    def test_caller_without_the_method_gets_no_parse(self, pki, signing, make_proxy,
                                                      raw_backend):
        """A caller no rule lets call Predict is refused before its body is read, so even
        an unparsable body earns PERMISSION_DENIED, not INVALID_ARGUMENT."""
        proxy = make_proxy(base_config(pki, signing, raw_backend.address))
        call = pki.channel(proxy.address, pki.dns_client).unary_unary(PREDICT)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff not protobuf", timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        allowed = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)
        with pytest.raises(grpc.RpcError) as info:
            allowed(b"\xff\xff not protobuf", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raw_backend.received == []


class TestIdentityForwarding:
    @pytest.mark.parametrize(("cn", "forwarded"), [
        ("John Doe", "cn:John%20Doe"), ("Zoë", "cn:Zo%C3%AB"), ("50% off", "cn:50%25%20off")])
    def test_certificate_to_upstream_metadata(self, pki, signing, make_proxy, raw_backend,
                                              cn, forwarded):
        """The composed path: a certificate CN reaches the upstream rendered exactly once
        (percent-encoded, printable ASCII), and the client's own copy is dropped."""
        config = base_config(pki, signing, raw_backend.address)
        config["policy"]["rules"].append({"name": "cn", "principals": {"cn": [cn]},
                                          "methods": ["Predict"], "models": ["*"]})
        proxy = make_proxy(config)
        client = pki.ca.client(cn, file_stem=f"cn-{len(raw_backend.metadata)}-{abs(hash(cn))}")
        call = pki.channel(proxy.address, client).unary_unary(PREDICT)
        call(predict_bytes("m"), timeout=5, metadata=[("x-tfgate-principal", "forged")])
        (seen,) = raw_backend.metadata
        assert seen["x-tfgate-principal"] == forwarded
