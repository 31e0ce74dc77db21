"""The gRPC front (grpc.aio): every call walks admission, then forward, on one event loop.

Every method is served by a client-streaming handler, so tfgate runs as soon as a call's
HEADERS arrive and before any body is read: `admission.start` authenticates, routes,
authorizes the method and takes the caller's concurrency slot from the headers alone, and
only then is the first message read (within `listen.receive_timeout_s`). A caller that
fails there never gets a read posted, so gRPC never opens the stream's flow-control window
for its body. No call holds a thread; an idle stream costs a few KB.

Each call takes the runtime's current State once, at its start. `_Boundary` is the one
place where a Reject becomes a gRPC status (the code from `errors.STATUS`) and anything
unexpected becomes INTERNAL (the call is then never forwarded); every call leaves it
through `boundary.CallScope`, shared with the REST front: freeing what it holds, counting
its outcome (metrics.py), writing its audit event and leaving its State. The listener's
own bounds (docs/hostile-networks.md) are in `bounds.py`. `grpc.health.v1.Health` is
answered by tfgate itself (health.py), before admission: no credentials, no rule.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio

from proxy import admission, forward, health, oplog
from proxy.admission import Request
from proxy.boundary import CallScope
from proxy.bounds import Bounds, grpc_options
from proxy.config import Config
from proxy.errors import Code, Reason, Reject, malformed
from proxy.families import Kind, Method
from proxy.loop import LoopThread
from proxy.ports import ListenError
from proxy.readiness import Readiness
from proxy.runtime import Runtime
from proxy.state import State

log = oplog.get_logger()

_NO_DEADLINE_S = 1e7  # "no deadline" can show as a remaining time of centuries
GRPC_CODE = {grpc_code.value[0]: grpc_code for grpc_code in grpc.StatusCode}


def grpc_status(code: Code) -> grpc.StatusCode:
    return GRPC_CODE[int(code)]


def request_of(context: grpc.aio.ServicerContext, path: str, *,
               certificates: bool = True) -> Request:
    """What the transport knows when a call starts: metadata, certificate, deadline.
    `certificates`: whether the listener asks for client certificates at all; when it
    does not (plaintext, `client_auth: none`) no peer can have presented one, and the
    call's auth context (a dict gRPC builds on each call) is not asked for."""
    pems = context.auth_context().get("x509_pem_cert") if certificates else None
    remaining = context.time_remaining()
    return Request(path, tuple(context.invocation_metadata() or ()),
                   next(iter(pems), None) if pems else None,
                   remaining if remaining is not None and remaining < _NO_DEADLINE_S else None,
                   local=True)


class Gateway(grpc.GenericRpcHandler):
    def __init__(self, runtime: Runtime, bounds: Bounds,
                 health_service: health.HealthService | None = None) -> None:
        self.runtime = runtime
        self.bounds = bounds
        self.health = health_service
        # Only paths some config knows are cached: unknown paths must not grow memory.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        path: str = details.method
        handler = self._handlers.get(path)
        if handler is None and self.health is not None and path in health.PATHS:
            return self.health.handlers[path]
        if handler is None:
            method = self.runtime.state.methods.methods.get(path)
            if method is None:
                return self._refusal(path)
            handler = self._handlers[path] = self._handler(method.kind, path)
        return handler

    def _handler(self, kind: Kind, path: str) -> grpc.RpcMethodHandler:
        """Client-streaming handlers for every kind: they run at HEADERS time. Streamed
        responses are written with `context.write` (grpc.aio's reader/writer API)."""
        if kind is Kind.UNARY_UNARY:
            async def unary(_: Any, context: grpc.aio.ServicerContext) -> bytes | None:
                return await self._unary(path, context)
            return grpc.stream_unary_rpc_method_handler(unary)
        if kind is Kind.STREAM_UNARY:
            async def client_stream(_: Any, context: grpc.aio.ServicerContext) -> bytes | None:
                return await self._client_stream(path, context)
            return grpc.stream_unary_rpc_method_handler(client_stream)
        if kind is Kind.UNARY_STREAM:
            async def server_stream(_: Any, context: grpc.aio.ServicerContext) -> None:
                await self._server_stream(path, context)
            return grpc.stream_stream_rpc_method_handler(server_stream)

        async def bidi_stream(_: Any, context: grpc.aio.ServicerContext) -> None:
            await self._bidi_stream(path, context)
        return grpc.stream_stream_rpc_method_handler(bidi_stream)

    def _refusal(self, path: str) -> grpc.RpcMethodHandler:
        """Unknown paths are still authenticated (so the audit names the caller), then
        refused by admission's route stage. Not cached: unknown paths are unbounded."""
        async def refuse(_: Any, context: grpc.aio.ServicerContext) -> None:
            async with _Boundary(self, context, path) as b:
                b.start()
        return grpc.stream_unary_rpc_method_handler(refuse)

    # -- one coroutine per call kind --------------------------------------------------

    async def _unary(self, path: str, context: grpc.aio.ServicerContext) -> bytes | None:
        async with _Boundary(self, context, path) as b:
            method, admitted, upstream, message = await b.admit_unary()
            response = await forward.unary(context, upstream, method, message,
                                           admitted.metadata, admitted.timeout)
            if method.respond is not None and b.call.facts is not None:
                response = admission.respond(b.state, b.call, method, b.call.facts, response)
            b.sent(response)
            return response
        return None  # refused: the boundary has set the status

    async def _server_stream(self, path: str, context: grpc.aio.ServicerContext) -> None:
        async with _Boundary(self, context, path) as b:
            method, admitted, upstream, message = await b.admit_unary()
            async for response in forward.server_stream(
                    context, upstream, method, message, admitted.metadata, admitted.timeout):
                b.sent(response)
                await context.write(response)

    async def _client_stream(self, path: str, context: grpc.aio.ServicerContext) -> bytes | None:
        async with _Boundary(self, context, path) as b:
            method, admitted, upstream = b.admit_stream()
            response = await forward.client_stream(
                context, upstream, method, b.next_message, b.checker(method),
                admitted.metadata, admitted.timeout)
            b.sent(response)
            return response
        return None

    async def _bidi_stream(self, path: str, context: grpc.aio.ServicerContext) -> None:
        async with _Boundary(self, context, path) as b:
            method, admitted, upstream = b.admit_stream()
            async for response in forward.bidi_stream(
                    context, upstream, method, b.next_message, b.checker(method),
                    admitted.metadata, admitted.timeout):
                b.sent(response)
                await context.write(response)


class _Boundary(CallScope):
    """One gRPC call, from its headers to its status: admission with the listener's
    bounds, and the one place where a Reject becomes a gRPC status (the transport-neutral
    rest of a call's end is `CallScope`'s)."""

    def __init__(self, gateway: Gateway, context: grpc.aio.ServicerContext, path: str) -> None:
        super().__init__(gateway.runtime, gateway.bounds, path, context.peer())
        self.context = context
        self.exchange = admission.Exchange()  # cluster methods: requests awaiting answers
        self.request: Request | None = None

    async def __aenter__(self) -> _Boundary:
        return self

    def start(self) -> Method:
        """The headers: the peer's share, then admission's start stage."""
        self.enter_peer()
        self.request = request_of(self.context, self.call.method,
                                  certificates=self.runtime.client_auth == "require")
        return admission.start(self.state, self.call, self.request, self.lease)

    async def admit_unary(self) -> tuple[Method, admission.Admitted, forward.Upstream, bytes]:
        method = self.start()
        message = await self._read(self.bounds.receive_timeout_s)
        if message is None:
            raise malformed("the call ended before its request message")
        facts = admission.inspect(self.state, self.call, method, message, self.exchange)
        admitted = admission.admit(self.state, self.call, method, facts, self._req())
        self.call.forwarded_at = time.monotonic()
        return method, admitted, self.state.upstreams[admitted.upstream], message

    def admit_stream(self) -> tuple[Method, admission.Admitted, forward.Upstream]:
        method = self.start()
        admitted = admission.admit(self.state, self.call, method, admission.NO_FACTS,
                                   self._req())
        self.call.forwarded_at = time.monotonic()
        return method, admitted, self.state.upstreams[admitted.upstream]

    def _req(self) -> Request:
        assert self.request is not None
        return self.request

    async def next_message(self) -> bytes | None:
        """A client stream's next message; the previous one has been written upstream.
        No timeout: a TF client's stream may idle for as long as the client lives."""
        self.release_held()
        return await self._read(None)

    def checker(self, method: Method) -> forward.Check:
        """Each streamed message is judged by the config current when it arrives, for the
        caller its credentials show now: a stream may outlive many reloads and tokens (TF's
        StreamingEnqueue lives as long as its client), and a reload that revokes its
        caller, or the end of its token's life, must reach it."""
        def check(message: bytes) -> None:
            state = self.runtime.state
            found = method if state is self.state else state.methods.lookup(method.path)
            admission.recheck(state, self.call, self._req())
            admission.inspect(state, self.call, found, message, self.exchange)
        return check

    async def _read(self, timeout: float | None) -> bytes | None:
        try:
            async with asyncio.timeout(timeout):
                message = await self.context.read()
        except TimeoutError:
            raise Reject(Reason.REQUEST_TIMEOUT, f"request message not received within "
                         f"{timeout:g} s (listen.receive_timeout_s)") from None
        if message is grpc.aio.EOF:
            return None
        self.hold_bytes(len(message))
        self.call.bytes_in += len(message)
        self.call.messages_in += 1
        return message

    def sent(self, response: bytes) -> None:
        """A response on its way to the client; the upstream sent it with OK so far."""
        self.call.bytes_out += len(response)
        self.call.messages_out += 1
        admission.answered(self.state, self.exchange, response)

    async def __aexit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        refusal: Reject | None = None
        try:
            admission.ended(self.state, self.exchange)
            if not isinstance(exc, grpc.aio.AbortError):  # else: already answered
                refusal = self.outcome(exc)
        finally:
            self.finish()
        if refusal is not None:
            trailers = refusal.trailers if isinstance(refusal, forward.UpstreamFailed) else ()
            await self.context.abort(grpc_status(refusal.code), refusal.message, trailers)
        return False


class AsyncServer:
    """The aio listener of one process."""

    def __init__(self, cfg: Config, runtime: Runtime, *, reuse_port: bool = False,
                 readiness: Readiness | None = None) -> None:
        self.config = cfg
        self.runtime = runtime
        self.bounds = Bounds(cfg.listen)
        self.readiness = readiness or Readiness(runtime, timeout_s=cfg.admin.readiness_timeout_s,
                                                cache_s=cfg.admin.readiness_cache_s)
        self.gateway = Gateway(runtime, self.bounds,
                               health.HealthService(self.readiness, self.bounds))
        self._reuse_port = reuse_port
        self._server: grpc.aio.Server | None = None
        self.address = cfg.listen.address
        self.port = 0

    async def start(self) -> None:
        listen = self.config.listen
        # No maximum_concurrent_rpcs: grpc.aio would stop accepting calls (queueing them
        # in core) rather than refuse them; Bounds refuses past listen.max_calls instead.
        server = grpc.aio.server(handlers=[self.gateway],
                                 options=grpc_options(listen, reuse_port=self._reuse_port))
        credentials = self.runtime.server_credentials()
        try:
            port = (server.add_insecure_port(listen.address) if credentials is None
                    else server.add_secure_port(listen.address, credentials))
        except RuntimeError:
            port = 0
        if port == 0 and not listen.address.startswith("unix:"):
            raise ListenError(listen.address, "failed to bind")
        await server.start()
        self._server = server
        self.port = port
        if not listen.address.startswith("unix:"):
            self.address = f"{listen.address.rpartition(':')[0]}:{port}"

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


class RunningServer:
    """A started listener, driven from ordinary (non-async) code: the CLI and the tests.
    Its event loop runs in one shared background thread (`loop.py`)."""

    def __init__(self, cfg: Config, runtime: Runtime | None = None, *,
                 reuse_port: bool = False) -> None:
        self._loop = LoopThread.shared()
        self.config = cfg
        self.runtime = runtime or Runtime.from_config(cfg)
        self._server = AsyncServer(cfg, self.runtime, reuse_port=reuse_port)
        try:
            self._loop.run(self._server.start())
        except BaseException:
            self.runtime.close()
            raise
        self.address = self._server.address
        self.port = self._server.port
        self.gateway = self._server.gateway

    @property
    def state(self) -> State:
        return self.runtime.state

    def start(self) -> RunningServer:
        return self  # serving since construction (the port is bound and started)

    def stop(self, grace: float | None = None) -> None:
        self._loop.run(self._server.stop(grace))
        self.runtime.close()

    def wait(self) -> None:
        self._loop.run(self._server.wait())
