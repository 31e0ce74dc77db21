"""Hot reload under a running `tfgate serve` (real processes, files and TLS handshakes):
certificates rotated on disk are served on the next handshake with no failed call, a
client CA bundle is rotated, an invalid config is refused (the old one stays enforced),
the policy changes under load with no failed call, a Kubernetes-style `..data` symlink
swap is picked up, a call in flight finishes under the config it started with, and
`--workers 2` reloads every worker on a file change and on SIGHUP."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509

from tests.rawbackend import RawBackend
from tests.serveproc import (
    CallLoop,
    KubeSite,
    Site,
    fresh_channel,
    predict,
    served_certificate,
    serving,
    wait_until,
)
from tests.test_e2e_forwarding import predict_bytes
from tests.test_workers import (
    _free_port,
    _no_lock_files_left,  # noqa: F401 - autouse: lock files go
    _worker_of,
)
from tfgate_dev.devpki import DevPKI, Issued

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@pytest.fixture
def backend() -> Iterator[RawBackend]:
    server = RawBackend()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path, backend) -> Site:
    made = Site(tmp_path, backend.address)
    made.write_config(made.config())
    return made


def _serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert_pem).serial_number


def _denied(address: str, site: Site, model: str) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        predict(address, site.credentials(), model)
    return err.value.code()


class TestCertificateRotation:
    def test_new_server_certificate_on_the_next_handshake_no_failed_call(self, site) -> None:
        """Replace server.pem and server.key under the running process (each file
        atomically, one after the other, as a deploy tool would): new handshakes get the
        new certificate while a client loop, a new connection per call, never fails."""
        with serving(site.config_path) as server:
            old = served_certificate(server.address, site)
            assert old.serial_number == _serial(site.server)
            rotated = site.ca.server(name="rotated", file_stem="issued-rotated")
            with CallLoop(server.address, site.credentials()) as loop:
                site.write_tls(rotated)
                served = wait_until(
                    lambda: (cert := served_certificate(server.address, site)).serial_number
                    == _serial(rotated) and cert, "the rotated certificate")
                loop.wait_calls(5)  # new handshakes after the rotation, all fine
            assert loop.failures == [] and loop.calls >= 8
            assert served.subject.rfc4514_string().startswith("CN=rotated")
            assert server.named("reload", outcome="ok")

    def test_client_ca_bundle_rotation(self, site) -> None:
        """A client certificate from a new CA is refused until the CA bundle names that
        CA too; then both CAs' clients connect, without a restart."""
        new_ca = DevPKI.create(site.root / "ca2", common_name="next CA")
        carol = new_ca.client("carol", spiffe_id="spiffe://tfgate.test/ops/alice")
        with serving(site.config_path) as server:
            with pytest.raises(grpc.RpcError) as err:
                predict(server.address, site.credentials(carol))
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE  # handshake refused
            server.reload_and_wait(lambda: site.publish(
                {"ca.pem": site.ca.ca.cert_pem + new_ca.ca.cert_pem}), outcome="ok")
            assert predict(server.address, site.credentials(carol)).startswith(b"echo:")
            assert predict(server.address, site.credentials()).startswith(b"echo:")


    def test_upstream_client_certificate_rotation(self, tmp_path) -> None:
        """The client certificate tfgate presents to an mTLS upstream is replaced on
        disk: after the reload, calls reach the upstream with the new one."""
        site = Site(tmp_path, "pending")
        upstream = _PeerRecordingBackend(site)
        try:
            site.upstream = upstream.address.replace("127.0.0.1", "localhost")
            first = site.ca.client("tfgate-proxy-1", file_stem="issued-proxy-1")
            site.publish({"proxy.pem": first.cert_pem, "proxy.key": first.key_pem})
            doc = site.config()
            doc["upstreams"]["backend"]["tls"] = {
                "ca": str(site.files / "ca.pem"), "cert": str(site.files / "proxy.pem"),
                "key": str(site.files / "proxy.key")}
            site.write_config(doc)
            with serving(site.config_path) as server:
                assert predict(server.address, site.credentials()).startswith(b"echo:")
                second = site.ca.client("tfgate-proxy-2", file_stem="issued-proxy-2")
                server.reload_and_wait(lambda: site.publish(
                    {"proxy.pem": second.cert_pem, "proxy.key": second.key_pem}), outcome="ok")
                assert predict(server.address, site.credentials()).startswith(b"echo:")
            assert upstream.peers == ["tfgate-proxy-1", "tfgate-proxy-2"]
        finally:
            upstream.stop()


class _PeerRecordingBackend(RawBackend):
    """An mTLS upstream (trusting the site's CA) that records each caller's CN."""

    def __init__(self, site: Site) -> None:
        self.peers: list[str] = []
        cert = site.ca.server(file_stem="issued-upstream")
        super().__init__(credentials=grpc.ssl_server_credentials(
            [(cert.key_pem, cert.cert_pem)], root_certificates=site.ca.ca.cert_pem,
            require_client_auth=True))

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.peers.append(context.auth_context()["x509_common_name"][0].decode())
        return super()._unary(request, context)


class TestPolicyReload:
    def test_invalid_config_is_refused_and_the_old_policy_enforced(self, site) -> None:
        """An unknown method in the new policy: one error line naming the key, no
        traceback, and the old policy still decides (m allowed, n denied)."""
        with serving(site.config_path) as server:
            bad = site.config(["m", "n"])
            bad["policy"]["rules"][0]["methods"] = ["Predict", "NoSuchMethod"]
            refused = server.reload_and_wait(lambda: site.write_config(bad))
            assert refused["outcome"] == "refused" and refused["level"] == "error"
            assert refused["key"] == "policy.rules[0].methods[1]"
            assert predict(server.address, site.credentials(), "m").startswith(b"echo:")
            assert _denied(server.address, site, "n") is grpc.StatusCode.PERMISSION_DENIED
            refused = server.reload_and_wait(lambda: site.write_config("policy: [\n"))
            assert refused["outcome"] == "refused" and "not valid YAML" in refused["error"]
            assert _denied(server.address, site, "n") is grpc.StatusCode.PERMISSION_DENIED
            server.reload_and_wait(lambda: site.write_config(site.config(["m", "n"])),
                                   outcome="ok")
            assert predict(server.address, site.credentials(), "n").startswith(b"echo:")
        assert "Traceback" not in server.stderr()

    def test_a_server_key_that_does_not_match_is_refused(self, site) -> None:
        """A certificate replaced without its key: refused, naming listen.tls.key; the
        old certificate is still served and calls still pass."""
        with serving(site.config_path) as server:
            other = site.ca.server(name="other", file_stem="issued-other")
            refused = server.reload_and_wait(
                lambda: site.publish({"server.pem": other.cert_pem}), outcome="refused")
            assert refused["key"] == "listen.tls.key"
            served = served_certificate(server.address, site)
            assert served.serial_number == _serial(site.server)
            assert predict(server.address, site.credentials()).startswith(b"echo:")

    def test_policy_changes_under_load_with_no_failed_call(self, site) -> None:
        """Three policy changes while a loop calls model m (allowed by each): every
        reload is ok, no call fails, and the last policy is the one in force."""
        with serving(site.config_path) as server:
            with CallLoop(server.address, site.credentials()) as loop:
                for i in range(3):
                    server.reload_and_wait(
                        lambda i=i: site.write_config(site.config(["m", f"n{i}"])),
                        outcome="ok")
                    loop.wait_calls(3)
            assert loop.failures == []
            assert predict(server.address, site.credentials(), "n2").startswith(b"echo:")
            assert _denied(server.address, site, "n0") is grpc.StatusCode.PERMISSION_DENIED
            assert len(server.named("reload")) == 3  # one line per reload

    def test_in_flight_call_finishes_under_the_config_it_started_with(self, site,
                                                                      backend) -> None:
        """A call admitted under a policy granting m completes after a reload to a policy
        that no longer grants it; a new call is refused."""
        with serving(site.config_path) as server:
            channel = fresh_channel(server.address, site.credentials())
            held = channel.unary_unary(PREDICT).future(predict_bytes("m"), timeout=30,
                                                       metadata=[("x-block", "1")])
            assert backend.entered.wait(30)
            server.reload_and_wait(lambda: site.write_config(site.config(["other"])),
                                   outcome="ok")
            assert _denied(server.address, site, "m") is grpc.StatusCode.PERMISSION_DENIED
            backend.release.set()
            assert held.result(30).startswith(b"echo:")
            channel.close()

    def test_sighup_reloads_without_the_watcher(self, tmp_path, backend) -> None:
        """With `server.watch_interval_s: null` a file change does nothing until SIGHUP."""
        site = Site(tmp_path, backend.address)
        site.write_config(site.config(watch=None))
        with serving(site.config_path) as server:
            site.write_config(site.config(["m", "n"], watch=None))
            assert _denied(server.address, site, "n") is grpc.StatusCode.PERMISSION_DENIED
            reloaded = server.reload_and_wait(lambda: server.signal(signal.SIGHUP))
            assert reloaded["outcome"] == "ok" and reloaded["trigger"] == "signal"
            assert predict(server.address, site.credentials(), "n").startswith(b"echo:")

    def test_restart_only_keys_are_named(self, site) -> None:
        """A reload that changes the listen address and a gRPC option applies the rest
        (the policy) and names the two keys that wait for a restart."""
        with serving(site.config_path) as server:
            doc = site.config(["m", "n"], address="127.0.0.1:1")
            doc["listen"]["max_connections"] = 7
            line = server.reload_and_wait(lambda: site.write_config(doc), outcome="ok")
            assert line["level"] == "warning"
            assert line["restart_only"] == ["listen.address", "listen.max_connections"]
            assert predict(server.address, site.credentials(), "n").startswith(b"echo:")


def test_kubernetes_symlink_swap_is_picked_up(tmp_path, backend) -> None:
    """Config and certificates mounted as Kubernetes does (`name -> ..data/name`): one
    `..data` swap changes the policy and the certificate together; both take effect."""
    site = KubeSite(tmp_path, backend.address)
    site.write_config(site.config())
    with serving(site.config_path) as server:
        assert _denied(server.address, site, "n") is grpc.StatusCode.PERMISSION_DENIED
        rotated = site.ca.server(name="rotated", file_stem="issued-rotated")
        line = server.reload_and_wait(lambda: site.publish({
            "server.pem": rotated.cert_pem, "server.key": rotated.key_pem,
            site.config_path.name: site.config_text(site.config(["m", "n"]))}))
        assert line["outcome"] == "ok", line
        assert predict(server.address, site.credentials(), "n").startswith(b"echo:")
        served = served_certificate(server.address, site)
        assert served.serial_number == _serial(rotated)
        assert len(server.named("reload")) == 1  # one swap, one reload


def test_both_workers_reload(tmp_path, backend) -> None:
    """`--workers 2`: a file change reloads each worker (one line each), and so does a
    SIGHUP to the supervisor; calls on connections held by either worker see the new
    policy."""
    import psutil

    site = Site(tmp_path, backend.address)
    port = _free_port()
    site.write_config(site.config(address=f"127.0.0.1:{port}"))
    with serving(site.config_path, "--workers", "2") as server:
        workers = {p.pid for p in psutil.Process(server.proc.pid).children()}
        assert len(workers) == 2
        site.write_config(site.config(["m", "n"], address=f"127.0.0.1:{port}"))
        lines = server.wait_for("reload", 2, outcome="ok", trigger="watch")
        assert {line["worker"] for line in lines} == {0, 1}
        _calls_reach_both_workers(server, site, port, workers, "n")
        server.signal(signal.SIGHUP)
        lines = server.wait_for("reload", 2, outcome="ok", trigger="signal")
        assert {line["worker"] for line in lines} == {0, 1}


def _calls_reach_both_workers(server, site, port: int, workers: set[int], model: str) -> None:
    """Call `model` on new connections (kept open) until both workers have served one."""
    opened: list[grpc.Channel] = []
    served: dict[int, int] = {}
    try:
        for _ in range(60):
            opened.append(channel := fresh_channel(server.address, site.credentials()))
            response = channel.unary_unary(PREDICT)(predict_bytes(model), timeout=20)
            assert response.startswith(b"echo:")
            served.update(_worker_of(server.proc.pid, port))
            if set(served.values()) == workers:
                return
        raise AssertionError(f"connections reached only {set(served.values())} of {workers}")
    finally:
        for channel in opened:
            channel.close()
