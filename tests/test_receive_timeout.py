"""`listen.receive_timeout_s`: a unary call whose request message has not arrived that
long after its headers is refused with DEADLINE_EXCEEDED (`request-timeout`) and never
forwarded; a client that gives up first is not a timed-out call; and calls that send
their message are untouched by the timer. A real listener (mTLS) in front of
tests/rawbackend.py, with clients that send headers and then hold the body."""

from __future__ import annotations

import copy
import json
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.conftest import base_config
from tests.rawbackend import PREDICT
from tests.serveproc import wait_until
from tests.test_e2e_forwarding import predict_bytes


def _config(pki, signing, raw_backend, tmp_path: pathlib.Path, seconds: float) -> dict:
    config = copy.deepcopy(base_config(pki, signing, raw_backend.address))
    config["listen"]["receive_timeout_s"] = seconds
    config["audit"]["output"] = str(tmp_path / "audit.log")
    return config


def _held_body(release: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing until released (then ends)."""
    release.wait(30)
    yield from ()


def _events(tmp_path: pathlib.Path, count: int) -> list[dict[str, Any]]:
    """The audit events once `count` are written (each is written as its call ends)."""
    path = tmp_path / "audit.log"
    for _ in range(500):
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"{count} audit events expected, found {len(lines)}")


def test_a_body_that_does_not_come_is_refused_and_never_forwarded(
        pki, signing, raw_backend, make_proxy, tmp_path: pathlib.Path) -> None:
    server = make_proxy(_config(pki, signing, raw_backend, tmp_path, 0.3))
    release = threading.Event()
    channel = pki.channel(server.address, pki.alice)
    try:
        with pytest.raises(grpc.RpcError) as info:
            channel.stream_unary(PREDICT)(_held_body(release), timeout=20)
    finally:
        release.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == ("request message not received within 0.3 s "
                                    "(listen.receive_timeout_s)")
    (event,) = _events(tmp_path, 1)
    assert (event["reason"], event["status"], event["decision"]) == (
        "request-timeout", "DEADLINE_EXCEEDED", "deny")
    # The same channel's next call, with its message, is served (nothing of the timer
    # is left over for it), and only that one reached the upstream.
    answer = channel.unary_unary(PREDICT)(predict_bytes("half_plus_two", 1), timeout=20)
    assert answer is not None
    assert len(raw_backend.received) == 1
    channel.close()


def test_a_client_that_leaves_first_is_not_timed_out(
        pki, signing, raw_backend, make_proxy, tmp_path: pathlib.Path) -> None:
    """gRPC hands the waiting handler end-of-stream when the client resets the stream,
    so the call is refused as one that ended before its request message."""
    server = make_proxy(_config(pki, signing, raw_backend, tmp_path, 20))
    release = threading.Event()
    channel = pki.channel(server.address, pki.alice)
    try:
        future = channel.stream_unary(PREDICT).future(_held_body(release), timeout=30)
        # tfgate has the headers and waits for the body (a fixed sleep could cancel
        # before the call reached tfgate on a loaded machine: then nothing is audited)
        wait_until(lambda: server.runtime.in_flight() == 1, "the call to reach tfgate")
        future.cancel()
        (event,) = _events(tmp_path, 1)
    finally:
        release.set()
        channel.close()
    assert (event["reason"], event["detail"]) == (
        "malformed-request", "the call ended before its request message")
    assert raw_backend.received == []


def test_a_message_sent_in_time_is_forwarded(
        pki, signing, raw_backend, make_proxy, tmp_path: pathlib.Path) -> None:
    """A body that comes after a pause shorter than the bound is served as usual."""
    server = make_proxy(_config(pki, signing, raw_backend, tmp_path, 5))

    def late_body() -> Iterator[bytes]:
        time.sleep(0.2)
        yield predict_bytes("half_plus_two", 1)

    with pki.channel(server.address, pki.alice) as channel:
        channel.stream_unary(PREDICT)(late_body(), timeout=20)
    (event,) = _events(tmp_path, 1)
    assert (event["reason"], event["status"]) == ("allowed", "OK")
    assert len(raw_backend.received) == 1
