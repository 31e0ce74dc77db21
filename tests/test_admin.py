"""The admin listener over real HTTP: /healthz, /readyz (upstream reachability, cached,
draining) and /metrics (calls by method, model, decision, reason and status; latencies;
in-flight; limit refusals; upstream errors; reloads; certificate expiry)."""

from __future__ import annotations

import concurrent.futures
import pathlib
import socket

import grpc
import pytest
import yaml

from proxy.config import validate_config
from proxy.errors import ConfigError
from proxy.ports import ListenError
from proxy.service import Service
from tests.conftest import base_config
from tests.obs_helpers import (
    METADATA,
    PREDICT,
    get,
    metadata_request,
    plaintext_config,
    predict,
    scrape,
    served,
    token,
    value,
)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class TestHealthEndpoints:
    def test_healthz_and_readyz_with_a_reachable_upstream(self, signing, raw_backend,
                                                          tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            alive = get(service, "/healthz")
            ready = get(service, "/readyz")
        assert (alive.status_code, alive.text) == (200, "ok\n")
        assert (ready.status_code, ready.text) == (200, "ready\n")

    def test_readyz_names_an_unreachable_upstream(self, signing, tmp_path) -> None:
        with served(plaintext_config(signing, _closed_port(), tmp_path)) as service:
            alive = get(service, "/healthz")
            ready = get(service, "/readyz")
        assert alive.status_code == 200  # alive, but not ready
        assert ready.status_code == 503
        assert ready.text == "upstream unreachable: serving\n"

    def test_probes_are_answered_from_the_cache(self, signing, raw_backend, tmp_path) -> None:
        """A burst of probes costs the upstreams one check per cache period."""
        config = plaintext_config(signing, raw_backend.address, tmp_path)
        config["admin"]["readiness_cache_s"] = 60
        with served(config) as service:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: get(service, "/readyz").status_code,
                                        range(40)))
            checks = service.readiness.checks
        assert answers == [200] * 40
        assert checks == 1

    def test_readyz_says_draining_once_stopping_begins(self, signing, raw_backend,
                                                       tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            assert get(service, "/readyz").status_code == 200
            service.readiness.drain()
            ready = get(service, "/readyz")
        assert (ready.status_code, ready.text) == (503, "draining\n")

    def test_unknown_paths_are_404(self, signing, raw_backend, tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            assert get(service, "/debug").status_code == 404


class TestMetrics:
    def test_calls_are_counted_by_method_model_decision_reason_status(
            self, signing, raw_backend, tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            before = scrape(service)
            with grpc.insecure_channel(service.address) as channel:
                call = channel.unary_unary(PREDICT)
                assert call(predict("half_plus_two"), metadata=token(signing), timeout=10)
                assert call(predict("fraud-eu"), metadata=token(signing), timeout=10)
                for refused in (lambda: call(predict("half_plus_two"), timeout=10),
                                lambda: channel.unary_unary("/x.Y/Z")(
                                    b"", metadata=token(signing), timeout=10)):
                    with pytest.raises(grpc.RpcError):
                        refused()
            after = scrape(service)

        def delta(**labels: str) -> float:
            return (value(after, "tfgate_calls_total", **labels)
                    - value(before, "tfgate_calls_total", **labels))

        allowed = {"method": PREDICT, "decision": "allow", "reason": "allowed", "status": "OK"}
        assert delta(model="half_plus_two", **allowed) == 1   # named in the config
        assert delta(model="other", **allowed) == 1           # matched by a glob only
        assert delta(method=PREDICT, model="", decision="deny", reason="no-credentials",
                     status="UNAUTHENTICATED") == 1
        assert delta(method="other", model="", decision="deny", reason="unknown-method",
                     status="UNIMPLEMENTED") == 1              # a caller-chosen path
        assert not any(dict(labels).get("method") == "/x.Y/Z" for _, labels in after)
        assert value(after, "tfgate_calls_in_flight") == 0

    def test_latency_histograms_split_tfgate_and_upstream_time(self, signing, raw_backend,
                                                               tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            before = scrape(service)
            with grpc.insecure_channel(service.address) as channel:
                channel.unary_unary(PREDICT)(predict("half_plus_two"), metadata=token(signing),
                                            timeout=10)
                with pytest.raises(grpc.RpcError):
                    channel.unary_unary(PREDICT)(predict("half_plus_two"), timeout=10)
            after = scrape(service)

        def grew(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert grew("tfgate_proxy_duration_seconds_count", method=PREDICT, decision="allow") == 1
        assert grew("tfgate_proxy_duration_seconds_count", method=PREDICT, decision="deny") == 1
        assert grew("tfgate_upstream_duration_seconds_count", method=PREDICT,
                    upstream="serving") == 1
        assert grew("tfgate_upstream_duration_seconds_sum", method=PREDICT,
                    upstream="serving") > 0
        assert grew("tfgate_proxy_duration_seconds_bucket", method=PREDICT, decision="allow",
                    le="+Inf") == 1

    def test_limit_refusals_and_upstream_errors(self, signing, raw_backend, tmp_path) -> None:
        with served(plaintext_config(signing, raw_backend.address, tmp_path)) as service:
            before = scrape(service)
            with grpc.insecure_channel(service.address) as channel:
                with pytest.raises(grpc.RpcError) as big:
                    channel.unary_unary(PREDICT)(predict("half_plus_two", 10**9),
                                                metadata=token(signing), timeout=10)
                # the raw backend serves Predict only: the upstream answers UNIMPLEMENTED
                with pytest.raises(grpc.RpcError) as failed:
                    channel.unary_unary(METADATA)(metadata_request("half_plus_two"),
                                                  metadata=token(signing), timeout=10)
            after = scrape(service)
        assert big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED
        name = "tfgate_limit_refusals_total"
        assert value(after, name, limit="max_elements") - value(
            before, name, limit="max_elements") == 1
        name = "tfgate_upstream_errors_total"
        assert value(after, name, upstream="serving", status="UNIMPLEMENTED") - value(
            before, name, upstream="serving", status="UNIMPLEMENTED") == 1

    def test_reloads_are_counted_by_result(self, signing, raw_backend, tmp_path) -> None:
        config = plaintext_config(signing, raw_backend.address, tmp_path)
        path = tmp_path / "tfgate.yaml"
        path.write_text(yaml.safe_dump(config))
        with served(config, config_path=path) as service:
            before = scrape(service)
            assert service.reload()
            path.write_text("listen: [not, a, section]\n")
            assert not service.reload()
            after = scrape(service)
        for result in ("ok", "error"):
            assert value(after, "tfgate_reloads_total", result=result) - value(
                before, "tfgate_reloads_total", result=result) == 1

    def test_certificate_seconds_to_expiry(self, pki, signing, raw_backend, tmp_path) -> None:
        from proxy.metrics import earliest_not_after

        config = base_config(pki, signing, raw_backend.address)
        config["admin"] = {"enabled": True, "address": "127.0.0.1:0"}
        with served(config) as service:
            scraped = scrape(service)
        left = value(scraped, "tfgate_certificate_expiry_seconds", certificate="listen")
        expected = earliest_not_after(pki.server.cert_path)
        assert expected is not None
        import time
        assert 0 < left <= expected - time.time() + 60
        assert value(scraped, "tfgate_certificate_expiry_seconds",
                     certificate="listen.client_ca") > 0


class TestConfig:
    def _config(self, signing, tmp_path: pathlib.Path, **admin):
        return plaintext_config(signing, "127.0.0.1:1", tmp_path, admin=admin)

    def test_disabled_by_default(self, signing, tmp_path) -> None:
        config = self._config(signing, tmp_path)
        del config["admin"]
        service = Service(validate_config(config))
        assert service.admin is None and len(service.fronts) == 1

    def test_a_non_loopback_address_must_be_allowed_explicitly(self, signing, tmp_path) -> None:
        with pytest.raises(ConfigError) as refused:
            validate_config(self._config(signing, tmp_path, enabled=True,
                                         address="0.0.0.0:9901"))
        assert refused.value.path == "admin.address"
        assert "allow_non_loopback" in refused.value.problem
        cfg = validate_config(self._config(signing, tmp_path, enabled=True,
                                           address="0.0.0.0:9901", allow_non_loopback=True))
        assert cfg.admin.address == "0.0.0.0:9901"

    def test_unix_sockets_are_refused(self, signing, tmp_path) -> None:
        with pytest.raises(ConfigError) as refused:
            validate_config(self._config(signing, tmp_path, address="unix:/tmp/admin.sock"))
        assert refused.value.path == "admin.address"

    def test_a_taken_port_fails_the_start(self, signing, raw_backend, tmp_path) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            config = plaintext_config(signing, raw_backend.address, tmp_path)
            config["admin"]["address"] = f"127.0.0.1:{holder.getsockname()[1]}"
            service = Service(validate_config(config))
            with pytest.raises(ListenError):
                service.start()
