"""Forward: send the exact request bytes upstream and relay the answer unchanged (grpc.aio).

Channels are long-lived and shared by all calls of a config; each is created on first use
inside the event loop that serves the calls. Requests and responses are raw bytes (no
serializers), so what the client sent, and tfgate inspected, is what the upstream
receives. Which client metadata goes along is `metadata.py`'s decision. The client's
deadline becomes the upstream call's timeout; when the client's call ends early, the
upstream call is cancelled with it. Upstream status, details, initial and trailing
metadata come back as they were, except that UNAVAILABLE details (which name internal
addresses) stay in the audit record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from proxy import config
from proxy.errors import Code, Reason, Reject
from proxy.families import Method
from proxy.metadata import Metadata, relayable

# Checks one client-streamed message before it may go upstream; raises Reject.
Check = Callable[[bytes], None]
# Reads the client's next message (or None at its end), within the receive bounds.
Read = Callable[[], Awaitable[bytes | None]]


class UpstreamFailed(Reject):
    """The upstream answered with an error status; `trailers` go back to the client."""

    def __init__(self, reason: Reason, message: str, detail: str,
                 code: Code | None, trailers: Metadata) -> None:
        super().__init__(reason, message, detail, upstream_code=code)
        self.trailers = trailers


def _credentials(cfg: config.UpstreamTLS) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=cfg.ca.read_bytes(),
        private_key=cfg.key.read_bytes() if cfg.key else None,
        certificate_chain=cfg.cert.read_bytes() if cfg.cert else None)


class Upstream:
    """One upstream: a shared aio channel (made on first use) and a cached multicallable
    per method. Building one reads its TLS files, so a bad file is a config error."""

    def __init__(self, name: str, cfg: config.Upstream) -> None:
        self.name = name
        self._address = cfg.address
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.primary_user_agent", "tfgate"),
            ("grpc.enable_retries", 0),
        ]
        self._credentials = _credentials(cfg.tls) if cfg.tls else None
        if cfg.tls and cfg.tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", cfg.tls.server_name))
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callables: dict[str, Any] = {}

    def callable(self, method: Method) -> Any:
        found = self._callables.get(method.path)
        if found is None:
            found = getattr(self._open(), method.kind.value)(method.path)
            self._callables[method.path] = found
        return found

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._loop = asyncio.get_running_loop()
            self._channel = (
                grpc.aio.insecure_channel(self._address, options=self._options)
                if self._credentials is None else
                grpc.aio.secure_channel(self._address, self._credentials, options=self._options))
        return self._channel

    async def reachable(self, timeout: float) -> bool:
        """Whether the channel calls use is connected, or connects within `timeout`
        (readiness.py); costs no call on the upstream."""
        channel = self._open()
        if channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return True
        try:
            async with asyncio.timeout(timeout):
                await channel.channel_ready()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close the channel from any thread; calls still on it are cancelled."""
        channel, loop, self._channel = self._channel, self._loop, None
        if channel is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(channel.close())
        else:
            asyncio.run_coroutine_threadsafe(channel.close(), loop)


async def _failed(call: Any, err: grpc.aio.AioRpcError) -> UpstreamFailed:
    code, details = err.code(), err.details() or ""
    trailers = relayable(err.trailing_metadata())
    if code is grpc.StatusCode.UNAVAILABLE:
        return UpstreamFailed(Reason.UPSTREAM_UNAVAILABLE, "upstream unavailable",
                              f"upstream: {details}", None, trailers)
    return UpstreamFailed(Reason.UPSTREAM_STATUS, details, f"upstream: {details}",
                          Code(code.value[0]), trailers)


async def _relay_initial(context: grpc.aio.ServicerContext, call: Any) -> None:
    """Send the upstream's initial metadata, if it sent any (an explicit empty send would
    cost a HEADERS frame of its own on every call)."""
    initial = relayable(await call.initial_metadata())
    if initial:
        await context.send_initial_metadata(initial)


async def _relay_trailing(context: grpc.aio.ServicerContext, call: Any) -> None:
    trailing = relayable(await call.trailing_metadata())
    if trailing:
        context.set_trailing_metadata(trailing)


async def unary(context: grpc.aio.ServicerContext, upstream: Upstream, method: Method,
                request: bytes, metadata: Metadata, timeout: float | None) -> bytes:
    call = upstream.callable(method)(request, timeout=timeout, metadata=metadata)
    try:
        response: bytes = await call
    except grpc.aio.AioRpcError as err:
        raise await _failed(call, err) from None
    finally:
        call.cancel()  # no-op once done; frees the upstream stream if the client left
    await _relay_initial(context, call)
    await _relay_trailing(context, call)
    return response


async def server_stream(context: grpc.aio.ServicerContext, upstream: Upstream, method: Method,
                        request: bytes, metadata: Metadata,
                        timeout: float | None) -> AsyncIterator[bytes]:
    """Unary request, streamed responses: yield each as it arrives."""
    call = upstream.callable(method)(request, timeout=timeout, metadata=metadata)
    try:
        first = True
        async for response in call:
            if first:
                await _relay_initial(context, call)
                first = False
            yield response
        await _relay_trailing(context, call)
    except grpc.aio.AioRpcError as err:
        raise await _failed(call, err) from None
    finally:
        call.cancel()


async def client_stream(context: grpc.aio.ServicerContext, upstream: Upstream, method: Method,
                        read: Read, check: Check, metadata: Metadata,
                        timeout: float | None) -> bytes:
    """Streamed requests, one response: each message is checked before it is written."""
    call = upstream.callable(method)(timeout=timeout, metadata=metadata)
    pump = asyncio.ensure_future(_pump(call, read, check))
    try:
        response: bytes = await call
        await pump
    except grpc.aio.AioRpcError as err:
        raise _pump_error(pump) or await _failed(call, err) from None
    except asyncio.CancelledError:
        raise _pump_error(pump) or asyncio.CancelledError() from None
    finally:
        pump.cancel()
        call.cancel()
    await _relay_initial(context, call)
    await _relay_trailing(context, call)
    return response


async def bidi_stream(context: grpc.aio.ServicerContext, upstream: Upstream, method: Method,
                      read: Read, check: Check, metadata: Metadata,
                      timeout: float | None) -> AsyncIterator[bytes]:
    """Both sides stream: requests are pumped (checked, then written) while responses are
    relayed. A refused request cancels the upstream call; its Reject ends the call."""
    call = upstream.callable(method)(timeout=timeout, metadata=metadata)
    pump = asyncio.ensure_future(_pump(call, read, check))
    try:
        first = True
        async for response in call:
            if first:
                await _relay_initial(context, call)
                first = False
            yield response
        await pump
        await _relay_trailing(context, call)
    except grpc.aio.AioRpcError as err:
        raise _pump_error(pump) or await _failed(call, err) from None
    except asyncio.CancelledError:
        raise _pump_error(pump) or asyncio.CancelledError() from None
    finally:
        pump.cancel()
        call.cancel()


async def _pump(call: Any, read: Read, check: Check) -> None:
    """Client → upstream: read, check, write, until the client half-closes. A refusal
    (or a read that breaks a receive bound), and any other failure here (then INTERNAL),
    cancels the upstream call and is re-raised by the caller from this task's result:
    left running, the upstream call would wait for the next message until the deadline."""
    try:
        while (message := await read()) is not None:
            check(message)
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return  # the upstream ended the call; its status is what the caller reports
    except Exception:
        call.cancel()
        raise


def _pump_error(pump: asyncio.Future[None]) -> BaseException | None:
    if pump.done() and not pump.cancelled():
        return pump.exception()
    return None
