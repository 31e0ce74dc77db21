"""`tfgate serve --workers`: how many processes, which cores, and the supervisor's
lifecycle (one real two-worker run: shared port, restart after a crash, clean stop)."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
import yaml

from proxy import workers
from proxy.cli import main


class TestPlan:
    def test_default_is_one_pinned_worker_per_core(self) -> None:
        assert workers.plan(None, affinity=[2, 0, 1], quota=None) == workers.Plan(3, (0, 1, 2))

    def test_explicit_count_uses_the_first_cores(self) -> None:
        assert workers.plan(2, affinity=[0, 1, 2, 3], quota=None).cpus == (0, 1)

    def test_more_workers_than_cores_are_not_pinned(self) -> None:
        assert workers.plan(4, affinity=[0, 1], quota=None) == workers.Plan(4, (None,) * 4)

    def test_a_cpu_quota_lowers_the_default_and_disables_pinning(self) -> None:
        # 16 visible cores but a 2.5-core quota: 3 workers, not pinned (cores are shared)
        assert workers.plan(None, affinity=range(16), quota=2.5) == workers.Plan(3, (None,) * 3)

    def test_no_pin(self) -> None:
        assert workers.plan(None, pin=False, affinity=[0, 1], quota=None).cpus == (None, None)

    def test_at_least_one(self) -> None:
        with pytest.raises(ValueError):
            workers.plan(0, affinity=[0], quota=None)

    @pytest.mark.parametrize(("text", "cores"), [("max 100000", None), ("200000 100000", 2.0),
                                                 ("50000 100000", 0.5), ("garbage", None)])
    def test_cpu_quota(self, tmp_path: pathlib.Path, text: str, cores: float | None) -> None:
        (tmp_path / "cpu.max").write_text(text + "\n")
        assert workers.cpu_quota(tmp_path / "cpu.max") == cores

    def test_cpu_quota_absent(self, tmp_path: pathlib.Path) -> None:
        assert workers.cpu_quota(tmp_path / "missing") is None


def _config(tmp_path: pathlib.Path, address: str) -> pathlib.Path:
    from tfgate_dev.devpki import SigningKey, write_jwks
    jwks = write_jwks(tmp_path / "jwks.json", [SigningKey.generate("k")])
    path = tmp_path / "tfgate.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"address": address, "plaintext": True},
        "upstreams": {"m": {"address": "127.0.0.1:1"}},
        "authn": {"jwt": {"issuers": [{"issuer": "i", "audiences": ["a"],
                                       "algorithms": ["ES256"], "jwks_file": str(jwks)}]}},
        "policy": {"rules": [{"principals": {"sub": ["x"]}, "methods": ["Predict"],
                              "models": ["*"]}]},
        "audit": {"output": str(tmp_path / "audit.log")},
    }))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_several_workers_need_a_fixed_port(tmp_path: pathlib.Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(_config(tmp_path, "127.0.0.1:0")),
                 "--workers", "2"]) == 2
    assert "needs a fixed TCP port" in capsys.readouterr().err


def test_supervisor_restarts_a_dead_worker_and_stops_cleanly(tmp_path: pathlib.Path) -> None:
    import psutil

    address = f"127.0.0.1:{_free_port()}"
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config",
                             str(_config(tmp_path, address)), "--workers", "2",
                             "--ready-file", str(ready)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.read_text().strip() == address
        first = psutil.Process(proc.pid).children()
        assert len(first) == 2
        # both workers answer on the shared port (the call is refused: no token)
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
                    b"", timeout=10)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        first[0].kill()
        deadline = time.monotonic() + 30
        while True:
            now = psutil.Process(proc.pid).children()
            if len(now) == 2 and first[0].pid not in {p.pid for p in now}:
                break
            assert time.monotonic() < deadline, "worker was not restarted"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in now)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "exited with status -9" in proc.stderr.read()
