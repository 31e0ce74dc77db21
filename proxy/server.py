"""The gRPC front: one generic handler that walks every call through admission and forward.

Each call takes the runtime's current State once, at its start (a reload never changes
a call's config), runs `admission` (authenticate → route → authorize → inspect →
authorize → limits), then `forward`. `_Boundary` is the one place where a Reject becomes
a gRPC status (the code from `errors.STATUS`) and any unexpected exception becomes
INTERNAL (the call is then never forwarded); every call leaves it by freeing its
concurrency slot, counting its outcome and writing its audit event. Handlers take raw
bytes in and out (no (de)serializers), one cached handler per known method path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from proxy import admission, forward
from proxy.admission import Request
from proxy.call import Call
from proxy.config import Config
from proxy.errors import Code, Reason, Reject
from proxy.families import Kind, Method
from proxy.forward import RequestGuard
from proxy.limits import Lease
from proxy.runtime import Runtime
from proxy.state import State

log = logging.getLogger("tfgate")

_NO_DEADLINE_S = 1e7  # gRPC reports "no deadline" as a remaining time of centuries
GRPC_CODE = {grpc_code.value[0]: grpc_code for grpc_code in grpc.StatusCode}


def grpc_status(code: Code) -> grpc.StatusCode:
    return GRPC_CODE[int(code)]


def request_of(context: grpc.ServicerContext, path: str) -> Request:
    """What the transport knows when a call starts: metadata, certificate, deadline."""
    pems = context.auth_context().get("x509_pem_cert")
    remaining = context.time_remaining()
    return Request(path, tuple(context.invocation_metadata()), pems[0] if pems else None,
                   remaining if remaining < _NO_DEADLINE_S else None)


class Gateway(grpc.GenericRpcHandler):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Only paths some config knows are cached: unknown paths must not grow memory.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        path: str = details.method
        handler = self._handlers.get(path)
        if handler is None:
            method = self.runtime.state.methods.methods.get(path)
            if method is None:
                return self._refuse(path)
            handler = self._handlers[path] = self._handler(method.kind, path)
        return handler

    def _handler(self, kind: Kind, path: str) -> grpc.RpcMethodHandler:
        def unary_unary(request: bytes, context: grpc.ServicerContext) -> bytes | None:
            return self._unary(path, request, context)

        def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            return self._server_stream(path, request, context)

        def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes | None:
            return self._client_stream(path, requests, context)

        def stream_stream(requests: Iterator[bytes],
                          context: grpc.ServicerContext) -> Iterator[bytes]:
            return self._bidi_stream(path, requests, context)

        fn = locals()[kind.value]
        return getattr(grpc, f"{kind.value}_rpc_method_handler")(fn)

    def _refuse(self, path: str) -> grpc.RpcMethodHandler:
        """Unknown paths are still authenticated (so the audit names the caller), then
        refused by `admission.start`'s route stage."""
        def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            with _Boundary(self.runtime, context, Call(path, context.peer())) as b:
                admission.start(b.state, b.call, request_of(context, path), b.lease)
            yield from ()
        return grpc.stream_stream_rpc_method_handler(refuse)

    # -- one function per call kind -------------------------------------------------

    def _admit(self, b: _Boundary, path: str, first: bytes | None) -> tuple[
            Method, admission.Admitted, forward.Upstream]:
        request = request_of(b.context, path)
        method = admission.start(b.state, b.call, request, b.lease)
        facts = admission.NO_FACTS
        if first is not None:
            facts = admission.inspect(b.state, b.call, method, first)
        admitted = admission.admit(b.state, b.call, method, facts, request)
        return method, admitted, b.state.upstreams[admitted.upstream]

    def _check(self, b: _Boundary, method: Method) -> Callable[[bytes], None]:
        def check(message: bytes) -> None:
            b.call.bytes_in += len(message)
            b.call.messages_in += 1
            admission.inspect(b.state, b.call, method, message)
        return check

    def _unary(self, path: str, request: bytes, context: grpc.ServicerContext) -> bytes | None:
        with _Boundary(self.runtime, context, Call(path, context.peer(),
                                                   bytes_in=len(request), messages_in=1)) as b:
            method, admitted, upstream = self._admit(b, path, request)
            response = forward.forward_unary(context, upstream, method, request,
                                             admitted.metadata, admitted.timeout)
            b.call.bytes_out, b.call.messages_out = len(response), 1
            return response
        return None  # the client went away; nothing to answer

    def _server_stream(self, path: str, request: bytes,
                       context: grpc.ServicerContext) -> Iterator[bytes]:
        with _Boundary(self.runtime, context, Call(path, context.peer(),
                                                   bytes_in=len(request), messages_in=1)) as b:
            method, admitted, upstream = self._admit(b, path, request)
            yield from self._count(b.call, forward.forward_stream(
                context, upstream, method, request, admitted.metadata, admitted.timeout))

    def _client_stream(self, path: str, requests: Iterator[bytes],
                       context: grpc.ServicerContext) -> bytes | None:
        with _Boundary(self.runtime, context, Call(path, context.peer())) as b:
            method, admitted, upstream = self._admit(b, path, None)
            guard = RequestGuard(requests, self._check(b, method))
            response = forward.forward_client_stream(
                context, upstream, method, guard, admitted.metadata, admitted.timeout)
            b.call.bytes_out, b.call.messages_out = len(response), 1
            return response
        return None

    def _bidi_stream(self, path: str, requests: Iterator[bytes],
                     context: grpc.ServicerContext) -> Iterator[bytes]:
        with _Boundary(self.runtime, context, Call(path, context.peer())) as b:
            method, admitted, upstream = self._admit(b, path, None)
            guard = RequestGuard(requests, self._check(b, method))
            yield from self._count(b.call, forward.forward_stream(
                context, upstream, method, guard, admitted.metadata, admitted.timeout))

    @staticmethod
    def _count(call: Call, responses: Iterator[bytes]) -> Iterator[bytes]:
        for response in responses:
            call.bytes_out += len(response)
            call.messages_out += 1
            yield response


class _Boundary:
    """The status boundary around one call: the one place where a Reject becomes a
    status and anything unexpected becomes INTERNAL. Every call leaves it by freeing its
    concurrency slot, counting its outcome, writing its audit event and leaving its State."""

    def __init__(self, runtime: Runtime, context: grpc.ServicerContext, call: Call) -> None:
        self.runtime = runtime
        self.state: State = runtime.enter()  # read once: a reload never changes a call's config
        self.context = context
        self.call = call
        self.lease = Lease()

    def __enter__(self) -> _Boundary:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        try:
            return exc is not None and _fail(self.call, self.context, exc)
        finally:
            self.lease.release()
            self.state.shared.outcomes.add(self.call.reason.value)
            if self.state.audit is not None:
                self.state.audit.emit(self.call)
            self.runtime.leave(self.state)


def _fail(call: Call, context: grpc.ServicerContext, exc: BaseException) -> bool:
    """Record the outcome and abort the call (raises); True only when the client is
    already gone and there is no one left to answer."""
    if isinstance(exc, GeneratorExit):
        call.code, call.reason = Code.CANCELLED, Reason.CANCELLED
        return False
    if isinstance(exc, Reject):
        reject = exc
    elif not context.is_active():
        call.code, call.reason, call.detail = Code.CANCELLED, Reason.CANCELLED, "client went away"
        return True
    else:
        log.error("internal error in %s", call.method, exc_info=exc)
        reject = Reject(Reason.INTERNAL_ERROR, "internal error",
                        detail=f"{type(exc).__name__}: {exc}")
    call.code, call.reason, call.detail = reject.code, reject.reason, reject.detail
    context.abort(grpc_status(reject.code), reject.message)
    return False  # not reached: abort raises


class RunningServer:
    """A started tfgate listener; `address` is what it actually bound."""

    def __init__(self, cfg: Config, runtime: Runtime | None = None, *,
                 reuse_port: bool = False) -> None:
        self.runtime = runtime or Runtime.from_config(cfg)
        self.gateway = Gateway(self.runtime)
        self.config = cfg
        threads = cfg.server.threads
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tfgate"),
            handlers=[self.gateway],
            maximum_concurrent_rpcs=threads,
            options=[
                ("grpc.max_receive_message_length", cfg.listen.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # Shared only by tfgate's own workers (proxy/workers.py); otherwise a
                # stale process on the same port would silently take half the calls.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        listen = cfg.listen
        credentials = self.runtime.server_credentials()
        if credentials is None:
            port = self._server.add_insecure_port(listen.address)
        else:
            port = self._server.add_secure_port(listen.address, credentials)
        if port == 0 and not listen.address.startswith("unix:"):
            raise OSError(f"cannot listen on {listen.address}")
        host = listen.address.rpartition(":")[0]
        self.address = listen.address if listen.address.startswith("unix:") else f"{host}:{port}"
        self.port = port

    @property
    def state(self) -> State:
        return self.runtime.state

    def start(self) -> RunningServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()
        self.runtime.close()

    def wait(self) -> None:
        self._server.wait_for_termination()
