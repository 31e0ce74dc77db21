"""tfgate's own grpc.health.v1.Health, checked with the standard client
(grpcio-health-checking): answered without credentials or a rule, before admission,
never forwarded or audited, reflecting upstream readiness; kubelet-like probes."""

from __future__ import annotations

import socket

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proxy import health
from tests import h2attack as attack
from tests.conftest import base_config
from tests.obs_helpers import plaintext_config, served

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _check(address: str, service: str = "", **kwargs) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10,
                          **kwargs).status


def _config(signing, upstream: str, tmp_path, **admin):
    config = plaintext_config(signing, upstream, tmp_path)
    config["admin"].update(admin)
    return config


class TestCheck:
    def test_serving_without_credentials_or_a_rule(self, signing, raw_backend, tmp_path) -> None:
        """No rule names Health, and the probe sends no token: tfgate answers itself."""
        config = _config(signing, raw_backend.address, tmp_path)
        assert not any("Health" in m for r in config["policy"]["rules"] for m in r["methods"])
        with served(config) as service:
            status = _check(service.address)
        assert status == SERVING
        assert raw_backend.received == []  # nothing forwarded
        assert (tmp_path / "audit.log").read_text() == ""  # and not audited

    def test_not_serving_when_the_upstream_is_unreachable(self, signing, tmp_path) -> None:
        with served(_config(signing, _closed_port(), tmp_path, readiness_timeout_s=0.2)) as s:
            assert _check(s.address) == NOT_SERVING

    def test_not_serving_while_draining(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            assert _check(service.address) == SERVING
            service.readiness.drain()
            assert _check(service.address) == NOT_SERVING

    def test_credentials_are_not_read(self, signing, raw_backend, tmp_path) -> None:
        """A broken token does not matter: health never authenticates."""
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            status = _check(service.address, metadata=(("authorization", "Bearer nonsense"),))
        assert status == SERVING

    def test_unknown_service_is_not_found(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            with pytest.raises(grpc.RpcError) as err:
                _check(service.address, service="tensorflow.serving.PredictionService")
        assert err.value.code() is grpc.StatusCode.NOT_FOUND

    def test_a_malformed_request_is_invalid_argument(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            with grpc.insecure_channel(service.address) as channel:
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary(health.CHECK)(b"\x0a\x05ab", timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    def test_mtls_listener_needs_a_ca_certificate_but_no_rule(self, pki, signing, raw_backend,
                                                              tmp_path) -> None:
        """On an mTLS listener the handshake is the listener's: a certificate from the CA
        suffices (the client's SPIFFE ID has no rule for Health); without one, no call."""
        config = base_config(pki, signing, raw_backend.address)
        with served(config) as service:
            stranger = pki.ca.client("prober", spiffe_id="spiffe://tfgate.test/monitoring/x")
            with pki.channel(service.address, stranger) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
            with pki.channel(service.address) as channel:
                with pytest.raises(grpc.RpcError) as err:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    def test_token_only_tls_listener_needs_nothing(self, pki, signing, raw_backend,
                                                   tmp_path) -> None:
        """`client_auth: none` (token callers): a probe with neither token nor certificate."""
        config = plaintext_config(signing, raw_backend.address, tmp_path)
        config["listen"] = {"address": "127.0.0.1:0", "tls": {
            "cert": str(pki.server.cert_path), "key": str(pki.server.key_path),
            "client_auth": "none"}}
        with served(config) as service:
            with pki.channel(service.address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING


class TestUnauthenticatedBodies:
    def test_health_requests_being_received_are_capped(self, signing, raw_backend, tmp_path,
                                                       monkeypatch) -> None:
        """Health is read before any credential, and a pending read lets gRPC take in the
        whole declared message (up to listen.max_message_bytes). So only MAX_READS health
        requests are received at once; the others are refused from their headers and
        never get more than the 64 KiB window of an unread stream in."""
        monkeypatch.setattr(health, "MAX_READS", 2)
        declared, window = 1 << 20, 64 * 1024
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            target = attack.Target("127.0.0.1", int(service.address.rpartition(":")[2]))
            with attack.partial_message(target, 6, declared=declared, path=health.CHECK,
                                        duration=60) as run:
                assert _wait(lambda: run.stats.grpc_status.get("8") == 4)
                assert _wait(lambda: run.max_accepted() == declared + 4)
                accepted = run.stats["body_bytes_sent"]
        assert accepted <= 2 * (declared + 4) + 4 * window


def _wait(predicate, timeout: float = 30) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


class TestWatch:
    def test_watch_follows_the_upstream_going_away(self, signing, tmp_path) -> None:
        from tests.rawbackend import RawBackend

        backend = RawBackend()
        try:
            config = _config(signing, backend.address, tmp_path, readiness_cache_s=0,
                             readiness_timeout_s=0.2)
            with served(config) as service:
                with grpc.insecure_channel(service.address) as channel:
                    stream = health_pb2_grpc.HealthStub(channel).Watch(
                        health_pb2.HealthCheckRequest(), timeout=60)
                    assert next(stream).status == SERVING
                    backend.stop()
                    assert next(stream).status == NOT_SERVING  # only changes are written
                    stream.cancel()
        finally:
            backend.stop()

    def test_watch_of_an_unknown_service(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            with grpc.insecure_channel(service.address) as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service="nope"), timeout=30)
                assert next(stream).status == SERVICE_UNKNOWN
                stream.cancel()

    def test_watches_are_capped_per_process(self, signing, raw_backend, tmp_path,
                                            monkeypatch) -> None:
        monkeypatch.setattr(health, "MAX_WATCHES", 1)
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            with grpc.insecure_channel(service.address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                first = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                assert next(first).status == SERVING
                second = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                with pytest.raises(grpc.RpcError) as err:
                    next(second)
                first.cancel()
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


class TestKubeletLikeProbes:
    """What a kubelet does: a fresh connection per probe, no credentials, a short timeout;
    a gRPC probe (plaintext, service "") and HTTP probes of /healthz and /readyz."""

    def test_grpc_probe(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            answers = []
            for _ in range(3):
                with grpc.insecure_channel(service.address,
                                           options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    answers.append(health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=False).status)
        assert answers == [SERVING] * 3

    def test_http_probes(self, signing, raw_backend, tmp_path) -> None:
        with served(_config(signing, raw_backend.address, tmp_path)) as service:
            assert service.admin is not None
            answers = []
            for path in ("/healthz", "/readyz", "/readyz"):
                with httpx.Client(headers={"User-Agent": "kube-probe/1.31"}) as client:
                    answers.append(client.get(f"http://{service.admin.address}{path}",
                                              timeout=1).status_code)
        assert answers == [200, 200, 200]
