"""Graceful shutdown of a real `tfgate serve`: SIGTERM stops accepting, lets the calls in
flight finish and exits 0, with one start, one drain and one stop line; a second signal
exits at once; a SIGTERM while a reload is stuck reading its config still drains."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.rawbackend import PREDICT, RawBackend
from tests.serveproc import Site, fresh_channel, predict, serving, wait_until
from tests.test_e2e_forwarding import predict_bytes


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


def _hold_calls(address: str, site: Site, backend: RawBackend, count: int) -> list:
    """`count` calls admitted and waiting in the backend (until `backend.release`)."""
    held = []
    for _ in range(count):
        channel = fresh_channel(address, site.credentials())
        held.append((channel, channel.unary_unary(PREDICT).future(
            predict_bytes("m"), timeout=60, metadata=[("x-block", "1")])))
    wait_until(lambda: len(backend.received) >= count, f"{count} calls in the backend")
    return held


def _results(held: list) -> list[bytes]:
    try:
        return [future.result(30) for _, future in held]
    finally:
        for channel, _ in held:
            channel.close()


def test_sigterm_drains_calls_in_flight_and_exits_0(site, backend) -> None:
    with serving(site.config_path) as server:
        held = _hold_calls(server.address, site, backend, 2)
        server.signal(signal.SIGTERM)
        drain = server.wait_for("drain")[0]
        assert drain["in_flight"] == 2 and drain["grace_s"] == 30
        with pytest.raises(grpc.RpcError) as err:  # no longer accepting
            predict(server.address, site.credentials())
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert server.proc.poll() is None  # still draining: the two calls hold it
        backend.release.set()
        assert [r[:5] for r in _results(held)] == [b"echo:", b"echo:"]
        assert server.wait() == 0
    assert [len(server.named(name)) for name in ("start", "drain", "stop")] == [1, 1, 1]
    assert server.named("stop")[0]["exit_code"] == 0
    assert "Traceback" not in server.stderr()


def test_a_second_signal_exits_at_once(site, backend) -> None:
    """grace_s is 30, a call is held: the second SIGTERM ends the process without
    waiting for it (exit 1), with one forced stop line."""
    with serving(site.config_path) as server:
        held = _hold_calls(server.address, site, backend, 1)
        server.signal(signal.SIGTERM)
        server.wait_for("drain")
        server.signal(signal.SIGINT)
        assert server.wait(20) == 1  # hang guard: far below the 30 s grace
        with pytest.raises(grpc.RpcError):
            _results(held)
    (stop,) = server.named("stop")
    assert stop["forced"] is True and stop["signal"] == "SIGINT"


def test_sigterm_while_a_reload_is_in_progress(site, backend) -> None:
    """The config file becomes a FIFO nobody writes: the SIGHUP reload blocks reading
    it. SIGTERM still drains the call in flight and exits 0; the stuck reload never
    swaps anything in (no reload line)."""
    with serving(site.config_path) as server:
        held = _hold_calls(server.address, site, backend, 1)
        fifo = site.files / "fifo"
        os.mkfifo(fifo)
        os.replace(fifo, site.config_path)
        server.signal(signal.SIGHUP)
        time.sleep(0.5)  # not an assertion: lets the reload reach the FIFO first
        server.signal(signal.SIGTERM)
        server.wait_for("drain")
        backend.release.set()
        assert _results(held)[0].startswith(b"echo:")
        assert server.wait() == 0
    assert server.named("reload") == [] and len(server.named("stop")) == 1


def test_workers_drain_together_and_a_second_signal_ends_them(tmp_path, backend) -> None:
    """`--workers 2`: SIGTERM to the supervisor makes every worker drain (a line from
    each and from the supervisor); the idle worker stops; a second SIGTERM is forwarded
    and ends the other at once, though it holds a call and grace_s is 30."""
    from tests.test_workers import _free_port

    site = Site(tmp_path, backend.address)
    site.write_config(site.config(address=f"127.0.0.1:{_free_port()}"))
    with serving(site.config_path, "--workers", "2") as server:
        held = _hold_calls(server.address, site, backend, 1)
        server.signal(signal.SIGTERM)
        drains = server.wait_for("drain", 3)
        assert sorted(d.get("worker", -1) for d in drains) == [-1, 0, 1]
        (holder,) = [d["worker"] for d in drains if d.get("in_flight")]
        server.wait_for("stop", worker=1 - holder)  # the idle worker has drained: exit 0
        server.signal(signal.SIGTERM)
        assert server.wait(20) == 1
        with pytest.raises(grpc.RpcError):
            _results(held)
    assert [s["worker"] for s in server.named("stop", forced=True)] == [holder]
    assert server.named("stop", worker=1 - holder)[0]["exit_code"] == 0
    assert [s.get("worker") for s in server.named("stop", exit_code=1)] == [holder, None]
    assert "Traceback" not in server.stderr()
