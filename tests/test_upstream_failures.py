"""An upstream that hangs, resets, answers too much or dies mid-call: the client gets the
right status within its deadline, tfgate frees what the call held, and the next call is
served. (No TensorFlow: tests/rawbackend.py and plain sockets stand in for ModelServer.)"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.conftest import base_config
from tests.rawbackend import PREDICT, RawBackend
from tests.test_e2e_forwarding import predict_bytes

REQUEST = predict_bytes("half_plus_two", 1)


def _call(pki, proxy, timeout: float = 5.0, metadata=()) -> bytes:
    return pki.channel(proxy.address, pki.alice).unary_unary(PREDICT)(
        REQUEST, timeout=timeout, metadata=metadata)


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


class _Resetter:
    """A TCP listener that accepts and closes every connection at once (a reset)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class TestUpstreamFailures:
    def test_hanging_upstream_ends_at_the_client_deadline(self, pki, signing, make_proxy,
                                                          raw_backend):
        """A stuck upstream call ends DEADLINE_EXCEEDED at the client's deadline (tfgate
        passes the deadline on); the proxy serves the next call, and its slot is free."""
        proxy = make_proxy(base_config(pki, signing, raw_backend.address))
        started = time.monotonic()
        code = _code(lambda: _call(pki, proxy, timeout=1.0, metadata=[("x-block", "1")]))
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 8  # hang guard, not a timing claim
        raw_backend.release.set()
        assert _call(pki, proxy).startswith(b"echo:")
        assert proxy.runtime.shared.limits.snapshot()[0] == 0

    def test_resetting_upstream_is_unavailable(self, pki, signing, make_proxy):
        """An upstream that resets every connection: UNAVAILABLE, with no internal
        address in the details; the refusal is audited as upstream-unavailable."""
        resetter = _Resetter()
        try:
            proxy = make_proxy(base_config(pki, signing, resetter.address))
            with pytest.raises(grpc.RpcError) as info:
                _call(pki, proxy)
        finally:
            resetter.close()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert resetter.address.split(":")[1] not in (info.value.details() or "")
        assert proxy.runtime.shared.outcomes.snapshot() == {"upstream-unavailable": 1}

    def test_response_over_the_size_limit(self, pki, signing, make_proxy, raw_backend):
        """A response above upstreams.<name>.max_message_bytes is refused by tfgate's
        channel: RESOURCE_EXHAUSTED reaches the client, and the proxy goes on."""
        config = base_config(pki, signing, raw_backend.address)
        config["upstreams"]["serving"]["max_message_bytes"] = len(REQUEST) + 2
        proxy = make_proxy(config)
        assert _code(lambda: _call(pki, proxy)) is grpc.StatusCode.RESOURCE_EXHAUSTED
        config["upstreams"]["serving"]["max_message_bytes"] = 1 << 20
        assert _call(pki, make_proxy(config)).startswith(b"echo:")

    def test_upstream_killed_mid_call(self, pki, signing, make_proxy):
        """The upstream process dies while a call is in flight: the client gets
        UNAVAILABLE (or CANCELLED) promptly, and once an upstream is back on the same
        address the next call is served."""
        backend = RawBackend()
        proxy = make_proxy(base_config(pki, signing, backend.address))
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_code, lambda: _call(pki, proxy, timeout=20,
                                                       metadata=[("x-block", "1")]))
            assert backend.entered.wait(5)
            backend.server.stop(0)
            assert pending.result(15) in (grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.CANCELLED)
        revived = RawBackend(backend.address)
        try:
            deadline = time.monotonic() + 15
            while _code(lambda: _call(pki, proxy, timeout=2)) is not grpc.StatusCode.OK:
                assert time.monotonic() < deadline, "proxy did not reconnect"
                time.sleep(0.2)
        finally:
            revived.stop()
        assert proxy.runtime.shared.limits.snapshot()[0] == 0

    def test_client_cancel_frees_everything(self, pki, signing, make_proxy, raw_backend):
        """A client that cancels mid-call cancels the upstream call, and tfgate's
        concurrency slot, peer count and buffered bytes are all given back."""
        proxy = make_proxy(base_config(pki, signing, raw_backend.address))
        future = pki.channel(proxy.address, pki.alice).unary_unary(PREDICT).future(
            REQUEST, timeout=20, metadata=[("x-block", "1")])
        assert raw_backend.entered.wait(5)
        future.cancel()
        assert raw_backend.cancelled.wait(10), "upstream call was not cancelled"
        deadline = time.monotonic() + 5
        bounds = proxy.gateway.bounds
        while (bounds.calls, bounds.buffered) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (bounds.calls, bounds.buffered, bounds.per_peer) == (0, 0, {})
        assert proxy.runtime.shared.limits.snapshot() == (0, {})
        assert proxy.runtime.shared.outcomes.snapshot() == {"cancelled": 1}
