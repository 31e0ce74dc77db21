"""The gateway: one generic gRPC handler that walks every call through the pipeline.

    authenticate → route → inspect → authorize → limits → forward → audit

Each stage either returns or raises `Reject`; this module is the single boundary that
turns a Reject into a gRPC status, and any unexpected exception into INTERNAL (the call
is then never forwarded). Handlers take raw bytes in and out (no (de)serializers), one
cached handler per known method. A call reads `self.state` once, at its start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from proxy import forward, routing
from proxy.call import Call, Facts
from proxy.config import Config
from proxy.errors import Reason, Reject
from proxy.forward import Metadata, RequestGuard, Upstream
from proxy.limits import Lease
from proxy.routing import Kind, Method
from proxy.state import State, build_state
from proxy.tls import server_credentials

log = logging.getLogger("tfgate")

_NO_DEADLINE_S = 1e7  # gRPC reports "no deadline" as a remaining time of centuries
_NO_FACTS = Facts()


@dataclass(frozen=True)
class Admitted:
    """A call that passed every check: where it goes and with what metadata."""

    upstream: Upstream
    metadata: Metadata
    timeout: float | None


class Gateway(grpc.GenericRpcHandler):
    def __init__(self, state: State) -> None:
        self.state = state
        self._handlers = {path: self._handler(m) for path, m in routing.METHODS.items()}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = self._handlers.get(details.method)  # type: ignore[arg-type]
        if handler is None:  # not cached: unknown paths must not grow memory
            path = details.method

            def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                return self._refuse_unknown(path, context)

            handler = grpc.stream_stream_rpc_method_handler(refuse)
        return handler

    def _handler(self, method: Method) -> grpc.RpcMethodHandler:
        def unary_unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            return self._unary(method, request, context)

        def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            return self._server_stream(method, request, context)

        def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            return self._client_stream(method, requests, context)

        def stream_stream(requests: Iterator[bytes],
                          context: grpc.ServicerContext) -> Iterator[bytes]:
            return self._bidi_stream(method, requests, context)

        fn = locals()[method.kind.value]
        return getattr(grpc, f"{method.kind.value}_rpc_method_handler")(fn)

    # -- the pipeline --------------------------------------------------------------

    def _admit(self, state: State, call: Call, method: Method,
               context: grpc.ServicerContext, first: bytes | None, lease: Lease) -> Admitted:
        """Every check before forwarding. `first` is None for client-streaming calls,
        whose messages are each inspected as they arrive (see `_check_message`). A
        concurrency slot taken by the limit stage goes into `lease`, which the handler
        releases in its `finally`."""
        metadata = context.invocation_metadata()
        call.principal = state.authenticator.authenticate(context.auth_context(), metadata)
        # Method first: a caller no rule lets call this method never costs a parse.
        self._authorize(state, call, method, _NO_FACTS)
        facts = _NO_FACTS
        if first is not None:
            facts = call.facts = method.inspect(first)
            self._authorize(state, call, method, facts)
        state.limits.admit(call.principal, facts, lease)
        upstream = state.router.upstream_for(facts)
        call.upstream = upstream.name
        remaining = context.time_remaining()
        timeout = state.limits.timeout(remaining if remaining < _NO_DEADLINE_S else None,
                                       unary=method.kind is Kind.UNARY_UNARY)
        return Admitted(upstream, state.metadata.upstream_metadata(
            metadata, call.principal.display()), timeout)

    @staticmethod
    def _authorize(state: State, call: Call, method: Method, facts: Facts) -> None:
        decision = state.policy.decide(call.principal, method.path, facts.targets)  # type: ignore[arg-type]
        call.rule = decision.rule
        if not decision.allowed:
            raise Reject(grpc.StatusCode.PERMISSION_DENIED, decision.reason, decision.message)

    def _check_message(self, state: State, call: Call,
                       method: Method) -> Callable[[bytes], None]:
        def check(message: bytes) -> None:
            call.bytes_in += len(message)
            call.messages_in += 1
            facts = method.inspect(message)
            self._authorize(state, call, method, facts)
            state.limits.check(facts)
        return check

    # -- one function per call kind -------------------------------------------------

    def _unary(self, method: Method, request: bytes, context: grpc.ServicerContext) -> bytes:
        with _Boundary(self.state, context, Call(method.path, context.peer(),
                                                 bytes_in=len(request), messages_in=1)) as b:
            admitted = self._admit(b.state, b.call, method, context, request, b.lease)
            response = forward.forward_unary(context, admitted.upstream, method, request,
                                             admitted.metadata, admitted.timeout)
            b.call.bytes_out, b.call.messages_out = len(response), 1
            return response
        return None  # the client went away; nothing to answer

    def _server_stream(self, method: Method, request: bytes,
                       context: grpc.ServicerContext) -> Iterator[bytes]:
        with _Boundary(self.state, context, Call(method.path, context.peer(),
                                                 bytes_in=len(request), messages_in=1)) as b:
            admitted = self._admit(b.state, b.call, method, context, request, b.lease)
            yield from self._count(b.call, forward.forward_stream(
                context, admitted.upstream, method, request, admitted.metadata,
                admitted.timeout))

    def _client_stream(self, method: Method, requests: Iterator[bytes],
                       context: grpc.ServicerContext) -> bytes:
        with _Boundary(self.state, context, Call(method.path, context.peer())) as b:
            admitted = self._admit(b.state, b.call, method, context, None, b.lease)
            guard = RequestGuard(requests, self._check_message(b.state, b.call, method))
            response = forward.forward_client_stream(
                context, admitted.upstream, method, guard, admitted.metadata, admitted.timeout)
            b.call.bytes_out, b.call.messages_out = len(response), 1
            return response
        return None

    def _bidi_stream(self, method: Method, requests: Iterator[bytes],
                     context: grpc.ServicerContext) -> Iterator[bytes]:
        with _Boundary(self.state, context, Call(method.path, context.peer())) as b:
            admitted = self._admit(b.state, b.call, method, context, None, b.lease)
            guard = RequestGuard(requests, self._check_message(b.state, b.call, method))
            yield from self._count(b.call, forward.forward_stream(
                context, admitted.upstream, method, guard, admitted.metadata, admitted.timeout))

    def _refuse_unknown(self, path: str, context: grpc.ServicerContext) -> Iterator[bytes]:
        with _Boundary(self.state, context, Call(path, context.peer())) as b:
            b.call.principal = b.state.authenticator.authenticate(
                context.auth_context(), context.invocation_metadata())
            routing.lookup(path)  # raises: known methods have their own handlers
        yield from ()

    @staticmethod
    def _count(call: Call, responses: Iterator[bytes]) -> Iterator[bytes]:
        for response in responses:
            call.bytes_out += len(response)
            call.messages_out += 1
            yield response


class _Boundary:
    """The status boundary around one call: the one place where a Reject becomes a
    status and anything unexpected becomes INTERNAL. Every call leaves it by freeing its
    concurrency slot, counting its outcome and writing its audit event."""

    def __init__(self, state: State, context: grpc.ServicerContext, call: Call) -> None:
        self.state = state  # read once: a reload never changes a call's config
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
            self.state.limits.outcomes.add(self.call.reason.value)
            self.state.audit.emit(self.call)


def _fail(call: Call, context: grpc.ServicerContext, exc: BaseException) -> bool:
    """Record the outcome and abort the call (raises); True only when the client is
    already gone and there is no one left to answer."""
    if isinstance(exc, GeneratorExit):
        call.code, call.reason = grpc.StatusCode.CANCELLED, Reason.CANCELLED
        return False
    if isinstance(exc, Reject):
        reject = exc
    elif not context.is_active():
        call.code, call.reason, call.detail = (grpc.StatusCode.CANCELLED, Reason.CANCELLED,
                                               "client went away")
        return True
    else:
        log.error("internal error in %s", call.method, exc_info=exc)
        reject = Reject(grpc.StatusCode.INTERNAL, Reason.INTERNAL_ERROR, "internal error",
                        detail=f"{type(exc).__name__}: {exc}")
    call.code, call.reason, call.detail = reject.code, reject.reason, reject.detail
    context.abort(reject.code, reject.message)
    return False  # not reached: abort raises


class RunningServer:
    """A started tfgate listener; `address` is what it actually bound."""

    def __init__(self, cfg: Config, state: State | None = None, *,
                 reuse_port: bool = False) -> None:
        self.gateway = Gateway(state or build_state(cfg))
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
        if listen.tls is None:
            port = self._server.add_insecure_port(listen.address)
        else:
            port = self._server.add_secure_port(listen.address, server_credentials(listen.tls))
        if port == 0 and not listen.address.startswith("unix:"):
            raise OSError(f"cannot listen on {listen.address}")
        host = listen.address.rpartition(":")[0]
        self.address = listen.address if listen.address.startswith("unix:") else f"{host}:{port}"
        self.port = port

    def start(self) -> RunningServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()
        self.gateway.state.close()

    def wait(self) -> None:
        self._server.wait_for_termination()
