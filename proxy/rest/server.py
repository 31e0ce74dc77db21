"""The REST listener (aiohttp, HTTP/1.1): a front of tfgate beside the gRPC one.

It runs on the process's event loop (`loop.py`), serves every request through
`handler.handle` with the runtime's current State, and holds the listener's own bounds,
each enforced before the caller has authenticated (docs/rest.md):

- connections: at most `rest.max_connections`, counted from accept, TLS handshakes in
  progress included; one more is closed as it is accepted, before any handshake;
- TLS handshake within `handshake_timeout_s` (mTLS unless `client_auth: none`);
- request line and each header line within `max_header_bytes`, at most `max_headers`
  lines (aiohttp answers 400 / 431);
- `idle_timeout_s`: a connection with no request in progress is closed; the clock runs
  from accept and from the end of each response, and is not reset while a request's
  headers trickle in, so it also bounds the time to send headers;
- calls in flight (`max_calls`, `max_calls_per_peer`) and body bytes held
  (`max_buffered_bytes`) in `bounds.Bounds`, the body's arrival (`receive_timeout_s`) in
  the handler, the parsing threads and their queue in `pool.py`;
- no lingering: the unread rest of a refused body is never read, the connection closes.

Why aiohttp (bench/rest_http.py): it runs in the caller's asyncio loop next to grpc.aio,
the peer certificate is one call away, the body is a stream, and it bounds header sizes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, cast

from aiohttp import web

from proxy import config
from proxy.bounds import Bounds
from proxy.errors import ConfigError
from proxy.ports import ListenError
from proxy.rest import handler
from proxy.rest.pool import ParsePool
from proxy.runtime import Runtime
from proxy.state import State

log = logging.getLogger("tfgate")


def server_tls(tls: config.ListenTLS) -> ssl.SSLContext:
    """TLS 1.2+, HTTP/1.1; with `client_auth: require`, a client certificate chaining to
    `client_ca` is required in the handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("rest.tls", f"cannot load cert and key: {exc}") from None
    if tls.client_auth == "require" and tls.client_ca is not None:
        try:
            context.load_verify_locations(str(tls.client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("rest.tls.client_ca", f"cannot load: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _no_continue(request: web.Request) -> None:
    """`Expect: 100-continue` is answered by the handler, after the headers passed."""
    return None


class RestServer:
    """The REST front of one process (`service.Front`)."""

    def __init__(self, cfg: config.Config, runtime: Runtime, *, reuse_port: bool = False
                 ) -> None:
        assert cfg.rest is not None
        self.rest = cfg.rest
        self.runtime = runtime
        self.bounds = Bounds(cfg.rest, "rest")
        self.pool = ParsePool(cfg.rest.parse)
        self.address = cfg.rest.address
        self.port = 0
        self._reuse_port = reuse_port
        self._grace = cfg.server.grace_s
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._handshaking = 0  # TLS connections accepted, handshake not yet ended

    def section_of(self, state: State) -> config.Rest:
        """The `rest:` keys a call follows: its State's (a reload changes body caps, JSON
        bounds and the upstream mode), else those the listener started with."""
        return state.config.rest or self.rest

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await handler.handle(self, request)

    async def start(self) -> None:
        rest = self.rest
        tls = server_tls(rest.tls) if rest.tls is not None else None
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=_no_continue)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self._grace,
            keepalive_timeout=rest.idle_timeout_s, max_line_size=rest.max_header_bytes,
            max_field_size=rest.max_header_bytes, max_headers=rest.max_headers,
            lingering_time=0, handler_cancellation=True,
            auto_decompress=False)  # body.py inflates, under its own cap
        await runner.setup()
        self._runner = runner
        try:
            self._server = await self._listen(runner, tls)
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(rest.address, exc.strerror or str(exc)) from None
        if not rest.address.startswith("unix:"):
            self.port = self._server.sockets[0].getsockname()[1]
            self.address = f"{rest.address.rpartition(':')[0]}:{self.port}"

    async def _listen(self, runner: web.AppRunner, tls: ssl.SSLContext | None
                      ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        handlers = runner.server
        assert handlers is not None

        def accept() -> asyncio.BaseProtocol:
            if self.open_connections() >= self.rest.max_connections:
                return _Refuse()
            if tls is None:
                return handlers()
            return self._tls_protocol(loop, handlers(), tls)

        if self.rest.address.startswith("unix:"):
            return await loop.create_unix_server(accept, self.rest.address[len("unix:"):])
        host, _, port = self.rest.address.rpartition(":")
        return await loop.create_server(accept, host.strip("[]"), int(port),
                                        reuse_port=self._reuse_port or None)

    def _tls_protocol(self, loop: asyncio.AbstractEventLoop, app: asyncio.Protocol,
                      tls: ssl.SSLContext) -> asyncio.BaseProtocol:
        """TLS in front of aiohttp's protocol, made here rather than by the loop (which
        would hand us the connection only after the handshake, too late to refuse it).
        The handshake counts as a connection until it ends: when aiohttp takes the
        connection over (then aiohttp counts it), or when the waiter reports a failure."""
        waiter = loop.create_future()
        counted = _Handshake(self, app, loop.call_later(
            self.rest.handshake_timeout_s + 5, waiter.cancel))  # in case nothing ends it
        waiter.add_done_callback(counted.failed)
        return _ssl_protocol(loop)(loop, counted, tls, waiter, server_side=True,
                                   ssl_handshake_timeout=self.rest.handshake_timeout_s)

    def open_connections(self) -> int:
        handlers = self._runner.server if self._runner is not None else None
        return len(handlers.connections) + self._handshaking if handlers else 0

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()  # waits up to server.grace_s for calls in flight
        self.pool.close()


class _Refuse(asyncio.Protocol):
    """A connection past `max_connections`: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class _Handshake(asyncio.Protocol):
    """aiohttp's protocol behind TLS, counted in `_handshaking` until its handshake ends."""

    def __init__(self, front: RestServer, inner: asyncio.Protocol,
                 guard: asyncio.TimerHandle) -> None:
        self._front, self._inner, self._guard = front, inner, guard
        self._counted = True
        front._handshaking += 1

    def _end(self) -> None:
        if self._counted:
            self._counted = False
            self._front._handshaking -= 1
            self._guard.cancel()

    def failed(self, waiter: asyncio.Future[None]) -> None:
        self._end()
        if not waiter.cancelled():
            waiter.exception()  # a failed handshake is not a call: not logged, not audited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._end()  # before aiohttp counts the connection: never counted twice
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _ssl_protocol(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol class of the running loop: uvloop's own under uvloop (its
    transports are its own), asyncio's otherwise. Both take asyncio's arguments."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    import asyncio.sslproto

    return asyncio.sslproto.SSLProtocol
