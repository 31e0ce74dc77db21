"""Forward: send the exact request bytes upstream and relay the answer unchanged.

Channels are long-lived and shared by all calls of a config. Requests and responses are
raw bytes (no serializers), so what the client sent is what the upstream receives.
Which client metadata goes along is `metadata.py`'s decision. The client's deadline
becomes the upstream call's timeout, and a client cancellation cancels the upstream call.
Upstream status, details, initial and trailing metadata come back as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from proxy import config
from proxy.errors import Code, Reason, Reject
from proxy.families import Method
from proxy.metadata import Metadata, relayable


def _channel(cfg: config.Upstream) -> grpc.Channel:
    options = [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.primary_user_agent", "tfgate"),
        ("grpc.enable_retries", 0),
    ]
    target = cfg.address
    if cfg.tls is None:
        return grpc.insecure_channel(target, options=options)
    tls = cfg.tls
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(target, creds, options=options)


class Upstream:
    """One upstream: a shared channel and one cached multicallable per method."""

    def __init__(self, name: str, cfg: config.Upstream) -> None:
        self.name = name
        self._channel = _channel(cfg)
        self._callables: dict[str, Any] = {}

    def callable(self, method: Method) -> Any:
        found = self._callables.get(method.path)
        if found is None:
            found = getattr(self._channel, method.kind.value)(method.path)
            self._callables[method.path] = found
        return found

    def close(self) -> None:
        self._channel.close()


def _relay_error(context: grpc.ServicerContext, err: grpc.RpcError) -> Reject:
    call: grpc.Call = err
    context.set_trailing_metadata(relayable(call.trailing_metadata()))
    code, details = call.code(), call.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        # Connection errors name internal addresses: they stay in the audit record.
        return Reject(Reason.UPSTREAM_UNAVAILABLE, "upstream unavailable",
                      detail=f"upstream: {details}")
    return Reject(Reason.UPSTREAM_STATUS, details, detail=f"upstream: {details}",
                  upstream_code=Code(code.value[0]))


def _cancel_with_client(context: grpc.ServicerContext, upstream_call: grpc.Future) -> None:
    """Cancel the upstream call when the client's call ends early. add_callback refuses
    (returns False) when the client has already gone, so cancel at once then."""
    if not context.add_callback(upstream_call.cancel):
        upstream_call.cancel()


def _relay_initial(context: grpc.ServicerContext, upstream_call: grpc.Call) -> None:
    """Send the upstream's initial metadata, if it sent any. When it sent none, gRPC
    sends empty headers with the first response anyway; an explicit empty send would
    cost a batch of its own (and a separate HEADERS write) on every call."""
    initial = relayable(upstream_call.initial_metadata())
    if initial:
        context.send_initial_metadata(initial)


def _finish(context: grpc.ServicerContext, upstream_call: grpc.Call) -> None:
    trailing = relayable(upstream_call.trailing_metadata())
    if trailing:
        context.set_trailing_metadata(trailing)


class RequestGuard:
    """Checks each client-streamed message before it may go upstream.

    The generator runs on gRPC's request-consuming thread. On a refused message it
    cancels the upstream call (the message itself is never sent) and keeps the Reject
    for the handler to report.
    """

    def __init__(self, requests: Iterator[bytes], check: Callable[[bytes], None]) -> None:
        self._requests = requests
        self._check = check
        self._ready = threading.Event()
        self._upstream: grpc.Call | None = None
        self.rejected: Reject | None = None

    def attach(self, upstream_call: grpc.Call) -> None:
        self._upstream = upstream_call
        self._ready.set()

    def __iter__(self) -> Iterator[bytes]:
        for message in self._requests:
            try:
                self._check(message)
            except Reject as reject:
                self.rejected = reject
                self._ready.wait()
                self._upstream.cancel()  # type: ignore[union-attr]
                return
            yield message


def forward_unary(context: grpc.ServicerContext, upstream: Upstream, method: Method,
                  request: bytes, metadata: Metadata, timeout: float | None) -> bytes:
    future = upstream.callable(method).future(request, timeout=timeout, metadata=metadata)
    _cancel_with_client(context, future)
    try:
        response = future.result()
    except grpc.RpcError as err:
        raise _relay_error(context, err) from None
    _relay_initial(context, future)
    _finish(context, future)
    return response


def forward_stream(context: grpc.ServicerContext, upstream: Upstream, method: Method,
                   request: bytes | RequestGuard, metadata: Metadata,
                   timeout: float | None) -> Iterator[bytes]:
    """Server- or bidi-streaming: yield each upstream response as it arrives."""
    responses = upstream.callable(method)(
        iter(request) if isinstance(request, RequestGuard) else request,
        timeout=timeout, metadata=metadata)
    if isinstance(request, RequestGuard):
        request.attach(responses)
    _cancel_with_client(context, responses)
    sent_initial = False
    try:
        for response in responses:
            if not sent_initial:
                _relay_initial(context, responses)
                sent_initial = True
            yield response
    except grpc.RpcError as err:
        if isinstance(request, RequestGuard) and request.rejected is not None:
            raise request.rejected from None
        raise _relay_error(context, err) from None
    _finish(context, responses)


def forward_client_stream(context: grpc.ServicerContext, upstream: Upstream, method: Method,
                          requests: RequestGuard, metadata: Metadata,
                          timeout: float | None) -> bytes:
    future = upstream.callable(method).future(iter(requests), timeout=timeout, metadata=metadata)
    requests.attach(future)
    _cancel_with_client(context, future)
    try:
        response = future.result()
    except (grpc.RpcError, grpc.FutureCancelledError) as err:
        if requests.rejected is not None:
            raise requests.rejected from None
        if isinstance(err, grpc.FutureCancelledError):
            raise  # the client went away; the server boundary records CANCELLED
        raise _relay_error(context, err) from None
    _relay_initial(context, future)
    _finish(context, future)
    return response
