"""StreamingEnqueue through tfgate (no TensorFlow): a real gRPC upstream, real mTLS.

A TF client holds one StreamingEnqueue stream per worker for its whole life and sends
its next messages before the answers to earlier ones. Through tfgate the stream stays
open however long it idles, every message is inspected before it is forwarded (the
first refused one ends the stream, and never arrives), a function registered in one
message may be called by the next before the server answered, and cancellation goes
both ways."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from tests import distributed_requests as rq
from tests.conftest import AUDIENCE, ISSUER, TEAM_A, TEAM_B
from tfgate_dev.devpki import mint_claims

EAGER = "/tensorflow.eager.EagerService/"
STREAM = EAGER + "StreamingEnqueue"
ANSWER = b"\x0a\x00"  # an EnqueueResponse with one empty queue_response
P = rq.Protos("ours")


class EagerBackend:
    """Answers every unary eager call with an empty message; on StreamingEnqueue it
    records each message and answers it, except that with `hold_first` it answers the
    first message only after the second has arrived (as a busy worker may), and a
    message holding op "Fail" ends the stream with INVALID_ARGUMENT (as TF does when
    an op fails). A CreateContext for an id in `existing` fails with ALREADY_EXISTS, as
    for a context the worker holds but tfgate no longer remembers (a restart)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.existing: set[bytes] = set()
        self.cancelled = threading.Event()
        self.hold_first = False
        self.server = grpc.server(ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.eager.EagerService",
            {"CreateContext": grpc.unary_unary_rpc_method_handler(self._create),
             "Enqueue": grpc.unary_unary_rpc_method_handler(self._unary),
             "StreamingEnqueue": grpc.stream_stream_rpc_method_handler(self._stream)})])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def _create(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request in self.existing:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "context already exists")
        return b""

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.received.append(request)
        return ANSWER

    def _stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(self.cancelled.set)
        held = 0
        for message in requests:
            self.received.append(message)
            if b"Fail" in message:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "op Fail failed on the worker")
            if self.hold_first and len(self.received) == 1:
                held += 1
                continue
            for _ in range(held + 1):
                yield ANSWER
            held = 0

    def stop(self) -> None:
        self.server.stop(0).wait(10)


@pytest.fixture
def eager() -> Iterator[EagerBackend]:
    backend = EagerBackend()
    yield backend
    backend.stop()


def config(pki: Any, upstream: str) -> dict[str, Any]:
    return {
        "listen": {"address": "127.0.0.1:0", "receive_timeout_s": 1, "tls": {
            "cert": str(pki.server.cert_path), "key": str(pki.server.key_path),
            "client_ca": str(pki.ca.ca.cert_path)}},
        "upstreams": {"worker": {"address": upstream, "kind": "cluster"}},
        "policy": {"rules": [{
            "name": "clients", "principals": {"spiffe": [TEAM_A, TEAM_B]},
            "methods": ["CreateContext", "StreamingEnqueue"],
            "ops": {"allow": ["Const", "Mul", "AddV2", "Fail"]}}]},
        "audit": {"output": "stderr"},
    }


class Stream:
    """One client stream whose messages the test sends one at a time."""

    def __init__(self, channel: grpc.Channel, metadata: tuple = ()) -> None:
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self.call = channel.stream_stream(STREAM)(iter(self._outbox.get, None), timeout=30,
                                                  metadata=metadata)

    def send(self, message: bytes) -> None:
        self._outbox.put(message)

    def answer(self) -> bytes:
        return next(self.call)

    def close(self) -> None:
        self._outbox.put(None)


def opened(pki: Any, make_proxy: Any, eager: EagerBackend) -> tuple[grpc.Channel, Stream]:
    """Alice's channel through a fresh tfgate, her context 7 created, a stream open."""
    proxy = make_proxy(config(pki, eager.address))
    channel = pki.channel(proxy.address, pki.alice)
    channel.unary_unary(EAGER + "CreateContext")(rq.create_context(7), timeout=10)
    channel.address = proxy.address  # type: ignore[attr-defined]
    return channel, Stream(channel)


def test_the_stream_stays_open_and_every_message_is_inspected(pki, make_proxy, eager) -> None:
    """Idle longer than a unary call may take to arrive, then more messages; the first
    refused message ends the stream with PERMISSION_DENIED and never reaches the
    worker, while those before it did."""
    channel, stream = opened(pki, make_proxy, eager)
    first, second = rq.enqueue(7, rq.op_item("Mul")), rq.enqueue(7, rq.op_item("AddV2"))
    stream.send(first)
    assert stream.answer() == ANSWER
    time.sleep(1.5)  # past listen.receive_timeout_s, which bounds unary requests only
    stream.send(second)
    assert stream.answer() == ANSWER
    stream.send(rq.enqueue(7, rq.op_item("Const"), rq.op_item("ReadFile")))
    with pytest.raises(grpc.RpcError) as info:
        stream.answer()
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert 'op "ReadFile" at queue[1].operation' in info.value.details()
    assert eager.received == [first, second]
    channel.close()


def test_a_function_may_be_called_before_its_registration_is_answered(
        pki, make_proxy, eager) -> None:
    """TF registers a function and calls it by name in the next message without waiting;
    the worker here answers the registration only after the call has arrived. The
    function's name is in no allowlist: it passes as the caller's own function."""
    eager.hold_first = True
    channel, stream = opened(pki, make_proxy, eager)
    square = P.function("__inference_square_9", P.node("m", "Mul"))
    stream.send(rq.enqueue(7, rq.register_item(square)))
    stream.send(rq.enqueue(7, rq.op_item("__inference_square_9", is_function=True)))
    assert [stream.answer(), stream.answer()] == [ANSWER, ANSWER]
    assert len(eager.received) == 2
    channel.close()


def test_another_principal_cannot_stream_into_the_context(pki, make_proxy, eager) -> None:
    channel, stream = opened(pki, make_proxy, eager)
    stream.send(rq.enqueue(7, rq.op_item("Mul")))
    assert stream.answer() == ANSWER
    intruder = Stream(pki.channel(channel.address, pki.bob))  # type: ignore[attr-defined]
    intruder.send(rq.enqueue(7, rq.op_item("Mul")))
    with pytest.raises(grpc.RpcError) as info:
        intruder.answer()
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(eager.received) == 1
    channel.close()


def test_a_client_that_goes_away_cancels_the_upstream_stream(pki, make_proxy, eager) -> None:
    channel, stream = opened(pki, make_proxy, eager)
    stream.send(rq.enqueue(7, rq.op_item("Mul")))
    assert stream.answer() == ANSWER
    stream.call.cancel()
    assert eager.cancelled.wait(10)
    channel.close()


def test_an_upstream_error_ends_the_client_stream_with_its_status(pki, make_proxy, eager) -> None:
    channel, stream = opened(pki, make_proxy, eager)
    stream.send(rq.enqueue(7, rq.op_item("Mul")))
    assert stream.answer() == ANSWER
    stream.send(rq.enqueue(7, rq.op_item("Fail")))
    with pytest.raises(grpc.RpcError) as info:
        stream.answer()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "op Fail failed on the worker"
    channel.close()


def test_a_create_the_server_refused_claims_nothing(pki, make_proxy, eager) -> None:
    """Context 42 lives on the worker, created before tfgate (re)started, so tfgate has
    no owner for it. Bob's CreateContext for it passes tfgate and the worker refuses it;
    that must not make Bob its owner: his stream into 42 is refused and never arrives."""
    eager.existing.add(rq.create_context(42))
    proxy = make_proxy(config(pki, eager.address))
    bob = pki.channel(proxy.address, pki.bob)
    with pytest.raises(grpc.RpcError) as info:
        bob.unary_unary(EAGER + "CreateContext")(rq.create_context(42), timeout=10)
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
    intruder = Stream(bob)
    intruder.send(rq.enqueue(42, rq.op_item("Mul")))
    with pytest.raises(grpc.RpcError) as info:
        intruder.answer()
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "was not created through tfgate by this caller" in info.value.details()
    assert eager.received == []
    bob.close()


def test_a_reload_that_revokes_the_caller_reaches_an_open_stream(pki, make_proxy, eager) -> None:
    """The stream opened under a config granting Alice; a reload drops her from the rule.
    Her next message on the same stream is judged by the new config and refused."""
    from proxy.config import validate_config
    from proxy.state import build_state

    proxy = make_proxy(config(pki, eager.address))
    channel = pki.channel(proxy.address, pki.alice)
    channel.unary_unary(EAGER + "CreateContext")(rq.create_context(7), timeout=10)
    stream = Stream(channel)
    first = rq.enqueue(7, rq.op_item("Mul"))
    stream.send(first)
    assert stream.answer() == ANSWER
    revoked = config(pki, eager.address)
    revoked["policy"]["rules"][0]["principals"] = {"spiffe": [TEAM_B]}
    proxy.runtime.swap(build_state(validate_config(revoked), proxy.runtime.shared))
    stream.send(rq.enqueue(7, rq.op_item("Mul")))
    with pytest.raises(grpc.RpcError) as info:
        stream.answer()
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert eager.received == [first]
    channel.close()


def token_config(pki: Any, signing: Any, upstream: str) -> dict[str, Any]:
    """The clients' rule also requires a token from ISSUER (no leeway on its times)."""
    cfg = config(pki, upstream)
    cfg["authn"] = {"jwt": {"leeway_s": 0, "issuers": [{
        "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["ES256"],
        "jwks_file": str(signing.jwks)}]}}
    cfg["policy"]["rules"][0]["require"] = ["token"]
    return cfg


def opened_with_token(pki: Any, signing: Any, proxy: Any, ttl: int) -> tuple[Any, Stream, bytes]:
    """Alice, with a token that lives `ttl` seconds, streams; her first message passed."""
    token = signing.key.token(mint_claims(issuer=ISSUER, audience=AUDIENCE, subject="alice",
                                          ttl=ttl))
    metadata = (("authorization", f"Bearer {token}"),)
    channel = pki.channel(proxy.address, pki.alice)
    channel.unary_unary(EAGER + "CreateContext")(rq.create_context(7), timeout=10,
                                                 metadata=metadata)
    stream = Stream(channel, metadata)
    first = rq.enqueue(7, rq.op_item("Mul"))
    stream.send(first)
    assert stream.answer() == ANSWER
    return channel, stream, first


def refused_unauthenticated(stream: Stream) -> str:
    stream.send(rq.enqueue(7, rq.op_item("Mul")))
    with pytest.raises(grpc.RpcError) as info:
        stream.answer()
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return info.value.details()


def test_a_token_that_expires_ends_the_open_stream(pki, signing, make_proxy, eager) -> None:
    """The stream outlives the token it opened with: the next message after the
    token's expiry is refused, and never arrives."""
    proxy = make_proxy(token_config(pki, signing, eager.address))
    opened_at = time.time()
    channel, stream, first = opened_with_token(pki, signing, proxy, ttl=5)
    time.sleep(max(0.0, int(opened_at) + 7 - time.time()))  # past exp (iat may be +1)
    assert "expired" in refused_unauthenticated(stream)
    assert eager.received == [first]
    channel.close()


def test_a_reload_that_drops_the_issuer_reaches_an_open_stream(
        pki, signing, make_proxy, eager) -> None:
    """A reload that no longer trusts the token's issuer: the caller's next message is
    verified by the new config, which accepts no token at all, and refused."""
    from proxy.config import validate_config
    from proxy.state import build_state

    proxy = make_proxy(token_config(pki, signing, eager.address))
    channel, stream, first = opened_with_token(pki, signing, proxy, ttl=600)
    proxy.runtime.swap(build_state(validate_config(config(pki, eager.address)),
                                   proxy.runtime.shared))
    assert "tokens are not accepted" in refused_unauthenticated(stream)
    assert eager.received == [first]
    channel.close()
