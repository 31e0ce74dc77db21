"""The attack client (tests/h2attack.py) against plain grpc servers on loopback: each test
shows an attack really happening (or really being refused) on a real grpcio server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import h2attack as attack
import pytest

SERVICE, METHOD = "tensorflow.serving.PredictionService", "Predict"
HANG_GUARD_S = 20.0


class Recorder:
    """What the server's handlers saw: how many ran, and the messages they read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.messages: list[bytes] = []

    def enter(self) -> None:
        with self.lock:
            self.calls += 1


@contextlib.contextmanager
def grpc_server(handler: grpc.RpcMethodHandler, *, threads: int = 4, options=(),
                credentials: grpc.ServerCredentials | None = None,
                maximum_concurrent_rpcs: int | None = None) -> Iterator[int]:
    generic = grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler})
    server = grpc.server(ThreadPoolExecutor(threads), handlers=[generic],
                         maximum_concurrent_rpcs=maximum_concurrent_rpcs,
                         options=[("grpc.so_reuseport", 0), *options])
    address = "127.0.0.1:0"
    port = (server.add_secure_port(address, credentials) if credentials
            else server.add_insecure_port(address))
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait(HANG_GUARD_S)


def unary_echo(seen: Recorder) -> grpc.RpcMethodHandler:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.enter()
        return b"ok"
    return grpc.unary_unary_rpc_method_handler(echo)


def stream_reader(seen: Recorder, check: Callable[[grpc.ServicerContext], None] | None = None,
                  ) -> grpc.RpcMethodHandler:
    """A stream_unary handler: runs at HEADERS time, may refuse before reading."""
    def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        seen.enter()
        if check:
            check(context)
        for message in requests:
            with seen.lock:
                seen.messages.append(message)
        return b"ok"
    return grpc.stream_unary_rpc_method_handler(handle)


def never_reads(seen: Recorder) -> grpc.RpcMethodHandler:
    def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        seen.enter()
        gone = threading.Event()
        context.add_callback(gone.set)
        gone.wait(HANG_GUARD_S)
        return b""
    return grpc.stream_unary_rpc_method_handler(handle)


def honest_call(port: int, timeout: float = 1.0) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(attack.PREDICT)(b"x", timeout=timeout)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def wait_until(predicate: Callable[[], bool], timeout: float = HANG_GUARD_S) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def local(port: int) -> attack.Target:
    return attack.Target("127.0.0.1", port)


def test_half_open_streams_take_every_thread_of_a_sync_unary_server():
    seen = Recorder()
    with grpc_server(unary_echo(seen), threads=4) as port:
        assert honest_call(port) is grpc.StatusCode.OK
        with attack.half_open(local(port), 8, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats["streams_opened"] == 8)
            # Four threads wait for bodies that never come: the honest call waits too.
            assert honest_call(port, timeout=1.0) is grpc.StatusCode.DEADLINE_EXCEEDED
            assert run.open_count() == 8  # the server answered none of them
        assert wait_until(lambda: honest_call(port) is grpc.StatusCode.OK)
    assert seen.calls == 2  # the handler itself only ever ran for the honest calls


def test_maximum_concurrent_rpcs_refuses_with_resource_exhausted_while_threads_are_held():
    seen = Recorder()
    with grpc_server(unary_echo(seen), threads=4, maximum_concurrent_rpcs=4) as port:
        with attack.half_open(local(port), 8, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats.grpc_status.get("8") == 4)
            assert honest_call(port) is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert run.open_count() == 4


def test_a_stream_handler_refuses_half_open_streams_at_headers_time():
    seen = Recorder()

    def require_token(context: grpc.ServicerContext) -> None:
        if ("authorization", "Bearer good") not in context.invocation_metadata():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")

    with grpc_server(stream_reader(seen, require_token), threads=4) as port:
        with attack.half_open(local(port), 16, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats.grpc_status.get("16") == 16)
        assert run.open_count() == 0
        assert seen.messages == []


def test_slow_body_delivers_its_message_byte_by_byte():
    seen = Recorder()
    with grpc_server(stream_reader(seen), threads=4) as port:
        with attack.slow_body(local(port), 2, message_size=12, chunk=3, interval=0.02,
                              duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats.grpc_status.get("0") == 2)
    assert seen.messages == [b"\x00" * 12] * 2
    assert run.stats["body_bytes_sent"] == 2 * (5 + 12)


def test_partial_large_message_is_buffered_before_any_handler_runs():
    seen = Recorder()
    declared = 1 << 20
    with grpc_server(unary_echo(seen), threads=4,
                     options=[("grpc.max_receive_message_length", 4 << 20)]) as port:
        with attack.partial_message(local(port), 3, declared=declared,
                                    duration=HANG_GUARD_S) as run:
            # A read is pending for a unary call, so grpc opens the stream window to the
            # declared size: the whole message but one byte is taken in, unauthenticated.
            assert wait_until(lambda: run.max_accepted() == declared + 4)
            assert run.stats["body_bytes_sent"] == 3 * (declared + 4)
    assert seen.calls == 0


@pytest.mark.parametrize(("options", "bounded"), [
    ([], False),
    ([("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)], True),
])
def test_unread_stream_window_depends_on_bdp_probing(options, bounded):
    seen = Recorder()
    with grpc_server(never_reads(seen), threads=4, options=options) as port:
        probe = attack.probe_window(local(port), declared=4 << 20, settle=0.5)
    if bounded:
        assert probe["accepted"] == 16384
    else:  # BDP probing advertises a megabytes-large initial window
        assert probe["accepted"] > 1 << 20


def test_max_concurrent_streams_is_enforced_with_refused_stream():
    seen = Recorder()
    with grpc_server(never_reads(seen), threads=16,
                     options=[("grpc.max_concurrent_streams", 5)]) as port:
        with attack.half_open(local(port), 12, per_connection=12, ignore_limit=True,
                              duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats.reset_codes.get("REFUSED_STREAM") == 7)
            assert run.open_count() == 5


def test_ping_flood_without_data_ends_with_enhance_your_calm():
    with grpc_server(never_reads(Recorder())) as port:
        with attack.ping_flood(local(port), rate=50, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats["connections_lost"] == 1)
    assert run.stats.goaway_codes == {"ENHANCE_YOUR_CALM": 1}
    assert run.stats["ping_acks"] >= 1


def test_rapid_reset_streams_are_opened_and_reset():
    seen = Recorder()
    with grpc_server(unary_echo(seen), threads=4) as port:
        with attack.rapid_reset(local(port), connections=2, rate=400,
                                duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats["streams_reset"] >= 200)
        assert run.stats["streams_reset"] == run.stats["streams_opened"]
        assert honest_call(port) is grpc.StatusCode.OK


def test_connection_flood_meets_max_allowed_incoming_connections():
    with grpc_server(never_reads(Recorder()),
                     options=[("grpc.max_allowed_incoming_connections", 3)]) as port:
        with attack.connection_flood(local(port), 8, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats["connections_lost"] == 5
                              and run.stats["open_now"] == 3)
        assert run.stats["connections"] == 8


def test_tls_with_client_certificate(pki):
    seen = Recorder()
    peers: list[bytes] = []

    def record_peer(context: grpc.ServicerContext) -> None:
        peers.extend(context.auth_context().get("x509_common_name", []))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "seen")

    credentials = grpc.ssl_server_credentials(
        [(pki.server.key_pem, pki.server.cert_pem)], root_certificates=pki.ca.ca.cert_pem,
        require_client_auth=True)
    with grpc_server(stream_reader(seen, record_peer), credentials=credentials) as port:
        with_cert = attack.Target("127.0.0.1", port, ca=pki.ca.ca.cert_pem,
                                  cert=str(pki.alice.cert_path), key=str(pki.alice.key_path),
                                  server_name="localhost")
        with attack.half_open(with_cert, 2, duration=HANG_GUARD_S) as run:
            assert wait_until(lambda: run.stats.grpc_status.get("7") == 2)
        without = attack.Target("127.0.0.1", port, ca=pki.ca.ca.cert_pem,
                                server_name="localhost")
        with attack.half_open(without, 1, duration=2.0) as refused:
            assert wait_until(lambda: refused.stats["connections_lost"]
                              + refused.stats["connect_failures"] >= 1)
    assert peers == [b"alice", b"alice"]
    assert refused.stats.grpc_status == {}
