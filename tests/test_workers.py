"""`tfgate serve --workers`: how many processes, which cores, and the supervisor's
lifecycle (one real two-worker run: shared port, restart after a crash, clean stop);
limits that hold for the whole instance whichever worker a connection lands on (the
worker of each connection is read from the workers' sockets); one tfgate per port."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

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


def _config(tmp_path: pathlib.Path, address: str, *, key: Any = None, upstream: str = "127.0.0.1:1",
            limits: dict[str, Any] | None = None) -> pathlib.Path:
    from tfgate_dev.devpki import SigningKey, write_jwks
    jwks = write_jwks(tmp_path / "jwks.json", [key or SigningKey.generate("k")])
    path = tmp_path / "tfgate.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"address": address, "plaintext": True},
        "upstreams": {"m": {"address": upstream}},
        "authn": {"jwt": {"issuers": [{"issuer": "i", "audiences": ["a"],
                                       "algorithms": ["ES256"], "jwks_file": str(jwks)}]}},
        "policy": {"rules": [{"principals": {"sub": ["x"]}, "methods": ["Predict"],
                              "models": ["*"]}]},
        "audit": {"output": str(tmp_path / "audit.log")},
        "limits": limits or {},
    }))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_lock_files_left() -> Iterator[None]:
    """Remove the per-port lock files the supervisors of a test made (ports.py keeps
    them on purpose; a test's random ports would leave one per run)."""
    from proxy import ports

    before = set(ports.lock_dir().glob("tfgate-127.0.0.1-*.lock"))
    yield
    for made in set(ports.lock_dir().glob("tfgate-127.0.0.1-*.lock")) - before:
        made.unlink(missing_ok=True)


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
    assert "worker exited" in (log := proc.stderr.read()) and "status=-9" in log, log


# -- limits hold for the whole instance, whichever worker a connection lands on ----------

PREDICT = "/tensorflow.serving.PredictionService/Predict"
PREDICT_M = b"\n\x03\n\x01m"   # PredictRequest{model_spec{name: "m"}}


def _serve(config: pathlib.Path, tmp_path: pathlib.Path, *extra: str) -> subprocess.Popen:
    """`tfgate serve` in a subprocess, returned once it serves."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
                             "--ready-file", str(ready), *extra],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"tfgate did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def signing() -> Any:
    from tfgate_dev.devpki import SigningKey
    return SigningKey.generate("k")


def _token(signing: Any) -> tuple[tuple[str, str], ...]:
    from tfgate_dev.devpki import mint_claims
    claims = mint_claims(issuer="i", audience="a", subject="x")
    return (("authorization", f"Bearer {signing.token(claims)}"),)


def _channel(address: str) -> grpc.Channel:
    """A channel with its own connection (gRPC shares connections between channels with
    the same target unless told not to), so the kernel picks a worker for each."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _worker_of(supervisor: int, port: int) -> dict[int, int]:
    """Client port -> pid of the worker holding that connection to `port`."""
    import psutil

    owners = {}
    for worker in psutil.Process(supervisor).children():
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.raddr:
                owners[conn.raddr.port] = worker.pid
    return owners


def _audit(tmp_path: pathlib.Path, calls: int) -> list[dict[str, Any]]:
    """The audit events, once `calls` have been written (workers append to one file)."""
    import json

    path, deadline = tmp_path / "audit.log", time.monotonic() + 30
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= calls or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def _peer_port(event: dict[str, Any]) -> int:
    return int(event["peer"].rpartition(":")[2])


@contextlib.contextmanager
def _channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    try:
        yield opened
    finally:
        for channel in opened:
            channel.close()


def test_a_rate_holds_across_workers(tmp_path: pathlib.Path, signing: Any) -> None:
    """burst 2 for one principal: exactly 2 calls pass in all, though both workers serve
    several of them (per-worker buckets would let 4 through). The rate refills one token
    per 1000 s, so no timing can add a token during the test."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = _config(tmp_path, address, key=signing, limits={"rate": {"rate": 0.001, "burst": 2}})
    proc = _serve(config, tmp_path, "--workers", "2")
    try:
        served: dict[int, int] = {}
        with _channels() as opened:
            for _ in range(80):
                opened.append(channel := _channel(address))
                with pytest.raises(grpc.RpcError):   # refused, or the upstream is down
                    channel.unary_unary(PREDICT)(PREDICT_M, metadata=_token(signing), timeout=10)
                served.update(_worker_of(proc.pid, port))
                per_worker = [list(served.values()).count(pid) for pid in set(served.values())]
                if len(per_worker) == 2 and min(per_worker) >= 3:
                    break
            events = _audit(tmp_path, len(opened))
        assert len(per_worker) == 2 and min(per_worker) >= 3, "connections all went to one worker"
        assert len(events) == len(opened)
        assert {served[_peer_port(e)] for e in events} == set(served.values())
        passed = [e for e in events if e["reason"] != "rate-limited"]
        assert len(passed) == 2, [e["reason"] for e in events]
        assert all(e["principal"] and "x" in e["principal"] for e in events)
    finally:
        _stop(proc)


class _SilentUpstream:
    """A TCP listener that accepts and never answers: a forwarded call stays in flight."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_concurrency_per_principal_holds_across_workers(tmp_path: pathlib.Path,
                                                        signing: Any) -> None:
    """per_principal 1: while one call is in flight on one worker, calls of the same
    principal are refused on both workers; once it ends, the next is admitted."""
    upstream = _SilentUpstream()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = _config(tmp_path, address, key=signing, upstream=upstream.address,
                     limits={"concurrency": {"per_principal": 1}})
    proc = _serve(config, tmp_path, "--workers", "2")
    try:
        with _channels() as opened:
            opened.append(first := _channel(address))
            held = first.unary_unary(PREDICT).future(PREDICT_M, metadata=_token(signing),
                                                     timeout=60)
            deadline = time.monotonic() + 30
            while not upstream.accepted:   # forwarded: admitted, and holding its slot
                assert time.monotonic() < deadline and not held.done()
                time.sleep(0.05)
            holder = set(_worker_of(proc.pid, port).values())
            assert len(holder) == 1
            others: set[int] = set()
            for _ in range(60):
                opened.append(channel := _channel(address))
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary(PREDICT)(PREDICT_M, metadata=_token(signing), timeout=10)
                assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "calls in flight for this principal" in (err.value.details() or "")
                others = set(_worker_of(proc.pid, port).values()) - holder
                if others and len(opened) >= 4:
                    break
            assert others, "no connection reached the other worker"
            held.cancel()
            _audit(tmp_path, len(opened))   # the held call has ended and left its slot
            opened.append(channel := _channel(address))
            with pytest.raises(grpc.RpcError) as err:   # admitted: it waits on the upstream
                channel.unary_unary(PREDICT)(PREDICT_M, metadata=_token(signing), timeout=2)
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        _stop(proc)
        upstream.close()


# -- one tfgate per port --------------------------------------------------------------

def _second(config: pathlib.Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--config", str(config),
                           *extra], capture_output=True, text=True, timeout=60)


def _assert_refused(result: subprocess.CompletedProcess[str], address: str) -> None:
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"tfgate: cannot listen on {address}: address already in use")


def test_a_second_tfgate_on_a_port_in_use_exits_1(tmp_path: pathlib.Path) -> None:
    """A running `--workers 2` instance keeps its port: a second one, with workers or
    without, fails with one line; so does a second one next to a single-process tfgate."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = _config(tmp_path, address)
    first = _serve(config, tmp_path, "--workers", "2")
    try:
        _assert_refused(_second(config, "--workers", "2"), address)
        _assert_refused(_second(config, "--workers", "1"), address)
    finally:
        _stop(first)
    assert first.returncode == 0
    first = _serve(config, tmp_path, "--workers", "1")
    try:
        _assert_refused(_second(config, "--workers", "2"), address)
    finally:
        _stop(first)


def test_a_port_held_by_another_program_is_refused(tmp_path: pathlib.Path) -> None:
    """Even a SO_REUSEPORT socket of the same user, which the workers could have shared."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        config = _config(tmp_path, address)
        _assert_refused(_second(config, "--workers", "2"), address)
        _assert_refused(_second(config, "--workers", "1"), address)


def test_the_port_lock_alone_refuses(tmp_path: pathlib.Path) -> None:
    """Two supervisors racing: the one that does not get the lock stops, port free or not."""
    from proxy import ports

    port = _free_port()
    address = f"127.0.0.1:{port}"
    held = ports.claim(address, "127.0.0.1", port)
    try:
        result = _second(_config(tmp_path, address), "--workers", "2")
    finally:
        held.release()
    _assert_refused(result, address)
    assert "another tfgate serve holds" in result.stderr


def test_instance_dir_is_private_removed_and_orphans_go(tmp_path: pathlib.Path) -> None:
    """The supervisor's shared directory: mode 0700, gone after; one left by a killed
    supervisor (its pid is dead) is removed at the next start, a live one's is kept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f"tfgate-instance-{dead.pid}-abc"
    (orphan / "sub").mkdir(parents=True)
    (orphan / "limits").write_bytes(b"x")
    alive = tmp_path / f"tfgate-instance-{os.getppid()}-def"
    alive.mkdir()
    with workers.instance_dir(tmp_path) as shared:
        assert shared.stat().st_mode & 0o777 == 0o700
        (shared / "limits").write_bytes(b"x")
        assert not orphan.exists() and alive.exists()
    assert not shared.exists()


def test_a_worker_that_cannot_bind_says_so_in_one_line(tmp_path: pathlib.Path) -> None:
    """The bind itself failing (someone took the port after the supervisor's probe): gRPC
    raises RuntimeError; the worker prints tfgate's line (after gRPC's own log line) and
    exits 1, without a traceback."""
    with socket.socket() as other:   # no SO_REUSEPORT: the worker's bind must fail
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        result = _second(_config(tmp_path, address), "--workers", "2", "--worker-index", "0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tfgate: cannot listen on {address}: failed to bind")


# -- metrics: every worker's calls, whichever worker the scrape reaches -----------------

def test_metrics_sum_over_workers_and_leave_with_the_instance(tmp_path: pathlib.Path,
                                                               signing: Any) -> None:
    import httpx

    from tests.obs_helpers import samples, value

    port, admin_port = _free_port(), _free_port()
    path = _config(tmp_path, f"127.0.0.1:{port}", key=signing)
    data = yaml.safe_load(path.read_text())
    data["admin"] = {"enabled": True, "address": f"127.0.0.1:{admin_port}"}
    path.write_text(yaml.safe_dump(data))
    proc = _serve(path, tmp_path, "--workers", "2")
    channels = [_channel(f"127.0.0.1:{port}") for _ in range(12)]
    clients = [httpx.Client(timeout=10) for _ in range(12)]
    try:
        for channel in channels:  # refused (no token), counted by the worker it reached
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(PREDICT)(PREDICT_M, timeout=10)
        assert len(set(_worker_of(proc.pid, port).values())) == 2
        totals = set()
        for client in clients:  # each keeps its connection: to one worker or the other
            scraped = samples(client.get(f"http://127.0.0.1:{admin_port}/metrics").text)
            totals.add(value(scraped, "tfgate_calls_total", method=PREDICT, model="",
                             decision="deny", reason="no-credentials", status="UNAUTHENTICATED"))
        assert len(set(_worker_of(proc.pid, admin_port).values())) == 2
        assert totals == {12.0}
        (directory,) = workers.scratch_parent().glob(f"tfgate-instance-{proc.pid}-*")
        assert list((directory / "metrics").glob("*.db"))
    finally:
        for client in clients:
            client.close()
        for channel in channels:
            channel.close()
        _stop(proc)
    assert proc.returncode == 0
    assert not list(workers.scratch_parent().glob(f"tfgate-instance-{proc.pid}-*"))
